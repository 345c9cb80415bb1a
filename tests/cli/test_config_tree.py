"""Every config in the tree composes with Hydra's compose API and resolves: each primary config as it is, and
each option of each group inside a primary config that uses the group (appended to conf_rollout otherwise).
"""

import importlib.resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from maze_engine.config import compose_config

CONF = Path(str(importlib.resources.files("maze_engine.conf")))
PRIMARY = sorted(path.stem for path in CONF.glob("*.yaml"))


def _groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for path in sorted(CONF.rglob("*.yaml")):
        if path.parent != CONF:
            groups.setdefault(path.parent.relative_to(CONF).as_posix(), []).append(path.stem)
    return groups


GROUPS = _groups()


def _default_groups(primary: str) -> set[str]:
    """Groups the defaults list of ``primary`` selects (``- env: gym_env``, ``- override hydra/help: x``)."""
    data = yaml.safe_load((CONF / f"{primary}.yaml").read_text(encoding="utf-8")) or {}
    names = set()
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            for key in entry:
                names.add(key.split()[-1].split("@")[0])
    return names


def _override_for(group: str, option: str) -> tuple[str, str]:
    for primary in PRIMARY:
        if group in _default_groups(primary):
            return primary, f"{group}={option}"
    return "conf_rollout", f"+{group}={option}"


def _resolve(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def test_the_tree_has_the_documented_configs() -> None:
    assert {"conf_rollout", "conf_train"} <= set(PRIMARY)
    assert {"sequential", "parallel"} <= set(GROUPS["runner"])
    assert {"random_policy", "torch_policy"} <= set(GROUPS["policy"])
    assert {"no_wrappers", "vector_obs"} <= set(GROUPS["wrappers"])
    assert "gym_env" in GROUPS["env"]


@pytest.mark.parametrize("primary", PRIMARY)
def test_primary_config_composes(primary: str) -> None:
    config = _resolve(compose_config(primary))
    assert config, f"{primary} composed to an empty config"


@pytest.mark.parametrize(("group", "option"), [(group, option) for group, options in GROUPS.items()
                                               for option in options])
def test_group_option_composes(group: str, option: str) -> None:
    primary, override = _override_for(group, option)
    _resolve(compose_config(primary, overrides=[override]))


def test_rollout_defaults_match_the_documentation() -> None:
    config = _resolve(compose_config("conf_rollout"))
    assert config["runner"]["_target_"].endswith("ParallelRolloutRunner")
    assert {key: config["runner"][key] for key in ("n_processes", "n_episodes", "max_episode_steps",
                                                   "record_trajectory", "record_event_logs")} == {
        "n_processes": 5, "n_episodes": 50, "max_episode_steps": None, "record_trajectory": True,
        "record_event_logs": True}
    assert config["env"] == {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}
    assert config["policy"] == {"_target_": "maze_engine.RandomPolicy"}
    assert config["wrappers"] == {}
    assert config["input_dir"] == "" and config["seed"] is None


def test_training_defaults_match_the_documentation() -> None:
    config = _resolve(compose_config("conf_train"))
    assert (config["torch_threads"], config["checkpoint_every_epochs"], config["resume"]) == (1, 1, None)
    assert config["algorithm"]["n_epochs"] == 20 and config["runner"]["n_envs"] == 8
    assert config["model"]["policy"]["networks"][0]["hidden_units"] == [64, 64]


@pytest.mark.parametrize(("resume", "run_dir", "subdir"), [
    (None, "outputs/", ".hydra"), ("/runs/a", "/runs/a", None)])
def test_a_resumed_training_runs_in_its_own_directory(resume: str | None, run_dir: str,
                                                      subdir: str | None) -> None:
    overrides = [f"resume={resume}"] if resume else []
    hydra = compose_config("conf_train", overrides, with_hydra=True).hydra
    assert str(hydra.run.dir).startswith(run_dir) and hydra.output_subdir == subdir


def test_torch_policy_reads_the_top_level_input_dir() -> None:
    config = _resolve(compose_config(overrides=["policy=torch_policy", "input_dir=/runs/a"]))
    assert config["policy"]["input_dir"] == "/runs/a"


@pytest.mark.parametrize("override", ["runner.n_episodes=ten", "runner.n_episode=3", "runner=paralel",
                                      "env.nme=CartPole-v1"])
def test_schemas_reject_mistakes_while_composing(override: str) -> None:
    from hydra.errors import HydraException

    with pytest.raises(HydraException):
        compose_config(overrides=[override])


def test_compose_leaves_a_running_hydra_alone() -> None:
    from hydra.core.global_hydra import GlobalHydra

    was_initialized = GlobalHydra.instance().is_initialized()
    compose_config()
    assert GlobalHydra.instance().is_initialized() == was_initialized
