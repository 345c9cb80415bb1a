"""record_minari datasets carry the acting policy's log-probability of each sampled action, so off-policy
evaluation can use them: recomputed from the recorded observations, the log-probabilities match, and the
behaviour policy evaluated on its own episodes gets their mean return. Deterministic rollouts have none."""

from pathlib import Path

import minari
import numpy as np
import pytest
import torch

from maze_engine import GymMazeEnv, ProbabilisticPolicyComposer, SequentialRolloutRunner
from maze_engine.evaluation import (
    MissingPropensitiesError,
    TorchCandidate,
    evaluate_off_policy,
    logged_episodes_from_minari,
)
from maze_engine.policies.torch_policy import TorchPolicy
from maze_engine.rollout.runner import MINARI_DIR

CARTPOLE = {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}


@pytest.fixture
def cartpole_policy() -> TorchPolicy:
    """An untrained CartPole policy: a small MLP whose actions are far from deterministic."""
    torch.manual_seed(0)
    env = GymMazeEnv("CartPole-v1")
    composer = ProbabilisticPolicyComposer(
        env.action_spaces_dict, env.observation_spaces_dict,
        networks=[{"_target_": "maze_engine.FlattenConcatPolicyNet", "hidden_units": [16],
                   "non_lin": "torch.nn.Tanh"}])
    env.close()
    return composer.policy


def record(policy: TorchPolicy, output_dir: Path, dataset_id: str, deterministic: bool = False) -> Path:
    runner = SequentialRolloutRunner(n_episodes=4, max_episode_steps=30, seed=5, silent=True,
                                     deterministic=deterministic, record_minari=dataset_id)
    runner.run(CARTPOLE, policy, output_dir=output_dir)
    return output_dir / MINARI_DIR / dataset_id / "data"


def test_recorded_log_probs_are_the_policy_s_and_ope_of_the_behaviour_policy_is_the_logged_return(
        cartpole_policy: TorchPolicy, tmp_path: Path) -> None:
    path = record(cartpole_policy, tmp_path, "cartpole/logged-v0")
    episodes = list(minari.MinariDataset(path).iterate_episodes())
    assert len(episodes) == 4
    candidate = TorchCandidate(cartpole_policy)
    for episode in episodes:
        steps = len(episode)
        log_probs = episode.infos["log_prob"]
        assert log_probs.shape == (steps + 1,) and np.isnan(log_probs[-1])
        assert np.isfinite(log_probs[:steps]).all() and (log_probs[:steps] < 0).all()
        recomputed = candidate.log_probs({"observation": episode.observations["observation"][:steps]},
                                         episode.actions)
        np.testing.assert_allclose(log_probs[:steps], recomputed, rtol=1e-5, atol=1e-6)

    result = evaluate_off_policy(logged_episodes_from_minari(path), cartpole_policy, methods=("wis",),
                                 bootstrap=20)
    returns = [float(episode.rewards.sum()) for episode in episodes]
    assert result.behaviour_return == pytest.approx(np.mean(returns))
    # The candidate is the behaviour policy: every importance weight is 1.
    assert result.estimates["wis"].value == pytest.approx(np.mean(returns), rel=1e-5)
    assert result.estimates["wis"].ess == pytest.approx(4.0, rel=1e-5)


def test_a_deterministic_rollout_has_no_propensities_and_ope_refuses_it(cartpole_policy: TorchPolicy,
                                                                         tmp_path: Path) -> None:
    path = record(cartpole_policy, tmp_path, "cartpole/argmax-v0", deterministic=True)
    dataset = minari.MinariDataset(path)
    assert all(np.isnan(episode.infos["log_prob"]).all() for episode in dataset.iterate_episodes())
    assert "no propensities" in dataset.storage.metadata["description"]
    with pytest.raises(MissingPropensitiesError, match=r"behaviour log-probabilities: .* steps .* have none"):
        evaluate_off_policy(logged_episodes_from_minari(path), cartpole_policy, methods=("wis",),
                            bootstrap=20)
