"""Run directory: save/load round trip, Hydra target use, and clear errors for bad or unsafe files."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from gymnasium import spaces

from maze_engine import GymMazeEnv, TorchPolicy, instantiate, load_torch_policy
from maze_engine.core.errors import ConfigError, SpaceMismatchError
from maze_engine.perception.composers.model import build_model_composers
from maze_engine.policies.torch_io import save_torch_policy

MODEL_CONFIG = {
    "distribution_mapper_config": [],
    "policy": {"_target_": "maze_engine.ProbabilisticPolicyComposer",
               "networks": [{"_target_": "maze_engine.FlattenConcatPolicyNet", "non_lin": "torch.nn.Tanh",
                             "hidden_units": [16, 16]}],
               "substeps_with_separate_agent_nets": []},
    "critic": {"_target_": "maze_engine.SharedStateCriticComposer",
               "networks": [{"_target_": "maze_engine.FlattenConcatStateValueNet", "hidden_units": [16]}],
               "stack_observations": False},
}


@pytest.fixture
def env() -> GymMazeEnv:
    return GymMazeEnv("CartPole-v1")


@pytest.fixture
def run_dir(tmp_path: Path, env: GymMazeEnv) -> Path:
    torch.manual_seed(0)
    policy_composer, critic_composer = build_model_composers(MODEL_CONFIG, env)
    assert critic_composer is not None
    save_torch_policy(tmp_path, policy_composer.policy, MODEL_CONFIG, env.observation_spaces_dict,
                      env.action_spaces_dict, critic=critic_composer.critic, agent_counts_dict={0: 1})
    torch.save(policy_composer.policy.state_dict(), tmp_path / "original_policy.pt")
    return tmp_path


def _observations(env: GymMazeEnv, count: int) -> list[dict]:
    env.observation_space.seed(3)
    return [env.observation_space.sample() for _ in range(count)]


def test_round_trip_gives_identical_actions(run_dir: Path, env: GymMazeEnv) -> None:
    assert {path.name for path in run_dir.iterdir()} >= {"state_dict.pt", "spaces.json", "model.yaml"}
    torch.manual_seed(123)  # a different init: only the loaded weights can make the actions agree
    policy_composer, _ = build_model_composers(MODEL_CONFIG, env)
    original = policy_composer.policy
    original.load_state_dict(torch.load(run_dir / "original_policy.pt", weights_only=True))
    loaded = load_torch_policy(run_dir, env.action_spaces_dict, env.observation_spaces_dict)
    assert isinstance(loaded, TorchPolicy) and not loaded.networks.training
    observations = _observations(env, 50)
    assert [a["action"] for a in loaded.compute_actions(observations, deterministic=True)] == \
        [a["action"] for a in original.compute_actions(observations, deterministic=True)]
    original.seed(5)
    loaded.seed(5)
    assert [a["action"] for a in loaded.compute_actions(observations)] == \
        [a["action"] for a in original.compute_actions(observations)]
    state = torch.load(run_dir / "state_dict.pt", weights_only=True)
    assert set(state) == {"policy", "critic"}


def test_loads_as_a_hydra_target_with_env_context(run_dir: Path, env: GymMazeEnv) -> None:
    config = {"_target_": "maze_engine.load_torch_policy", "input_dir": str(run_dir)}
    policy = instantiate(config, TorchPolicy, action_spaces_dict=env.action_spaces_dict,
                         observation_spaces_dict=env.observation_spaces_dict, env=env)
    observation = env.reset()
    assert env.action_space.contains(policy.compute_action(observation, deterministic=True))


def test_spaces_that_differ_from_the_trained_ones_are_named(run_dir: Path) -> None:
    other = GymMazeEnv("MountainCar-v0")
    with pytest.raises(SpaceMismatchError, match=r"spaces.json: action_spaces_dict\[0\].*Discrete.*n.:2"):
        load_torch_policy(run_dir, other.action_spaces_dict, None)
    with pytest.raises(SpaceMismatchError, match=r"spaces.json: observation_spaces_dict\[0\]"):
        load_torch_policy(run_dir, None, other.observation_spaces_dict)
    with pytest.raises(SpaceMismatchError, match="step keys"):
        load_torch_policy(run_dir, {1: other.action_space}, None)


def test_weights_only_loading_rejects_pickled_objects(run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.mkdir, (str(marker),))

    torch.save({"policy": Payload()}, run_dir / "state_dict.pt")
    with pytest.raises(ConfigError, match=r"state_dict.pt: expected a weights-only state dict"):
        load_torch_policy(run_dir)
    assert not marker.exists()


@pytest.mark.parametrize(("file_name", "content", "message"), [
    ("state_dict.pt", b"\x00garbage", "state_dict.pt: expected a weights-only state dict"),
    ("spaces.json", b"{not json", "spaces.json: expected a JSON document"),
    ("spaces.json", b'{"observation_spaces_dict": []}', "spaces.json: missing the key 'action_spaces_dict'"),
    ("model.yaml", b"policy: [unclosed", "model.yaml: expected a YAML model config"),
    ("model.yaml", b"networks: []", "model.yaml: expected a mapping with a 'policy' entry"),
])
def test_corrupt_files_are_named(run_dir: Path, file_name: str, content: bytes, message: str) -> None:
    (run_dir / file_name).write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_torch_policy(run_dir)


@pytest.mark.parametrize("file_name", ["state_dict.pt", "spaces.json", "model.yaml"])
def test_missing_files_are_named(run_dir: Path, file_name: str) -> None:
    (run_dir / file_name).unlink()
    with pytest.raises(ConfigError, match=f"{file_name}: file not found"):
        load_torch_policy(run_dir)


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="input_dir: .* is not a directory"):
        load_torch_policy(tmp_path / "nope")


def test_weights_that_do_not_fit_the_model_config(run_dir: Path) -> None:
    config = yaml.safe_load((run_dir / "model.yaml").read_text())
    config["policy"]["networks"][0]["hidden_units"] = [32, 32]
    (run_dir / "model.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="state_dict.pt: the saved weights do not fit"):
        load_torch_policy(run_dir)


def test_model_built_from_objects_needs_model_config_at_load(tmp_path: Path, env: GymMazeEnv) -> None:
    policy_composer, _ = build_model_composers(MODEL_CONFIG, env)
    with_objects = {**MODEL_CONFIG, "policy": policy_composer}
    save_torch_policy(tmp_path, policy_composer.policy, with_objects, env.observation_spaces_dict,
                      env.action_spaces_dict)
    assert not (tmp_path / "model.yaml").exists()
    with pytest.raises(ConfigError, match="model.yaml: file not found"):
        load_torch_policy(tmp_path)
    loaded = load_torch_policy(tmp_path, model_config=MODEL_CONFIG)
    observation = env.reset()
    assert loaded.compute_action(observation, deterministic=True) == \
        policy_composer.policy.compute_action(observation, deterministic=True)


def test_spaces_json_keeps_int_and_string_step_keys(tmp_path: Path, env: GymMazeEnv) -> None:
    from maze_engine.core.space_codec import read_spaces_json, write_spaces_json

    observation_spaces = {0: env.observation_space,
                          "place": spaces.Dict({"grid": spaces.MultiBinary([2, 2])})}
    bounds = np.array([0, -1], dtype=np.float32), np.array([np.inf, 1], dtype=np.float32)
    action_spaces = {0: env.action_space, "place": spaces.Dict({"where": spaces.Box(*bounds)})}
    write_spaces_json(tmp_path / "spaces.json", observation_spaces, action_spaces, {0: 1, "place": 3})
    json.loads((tmp_path / "spaces.json").read_text())  # strict JSON, no NaN/Infinity literals
    assert "Infinity" not in (tmp_path / "spaces.json").read_text()
    observations, actions, counts = read_spaces_json(tmp_path / "spaces.json")
    assert observations == observation_spaces and actions == action_spaces
    assert list(actions) == [0, "place"] and counts == {0: 1, "place": 3}
