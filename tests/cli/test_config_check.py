"""config_check: the one-line reason a config does not compose, with the nearest key, option or config."""

from pathlib import Path

import pytest

from maze_engine.config_check import explain_config_error, primary_configs, suggest


@pytest.mark.parametrize(("config", "overrides", "expected"), [
    ("conf_rollout", ["runner.n_episode=5"],
     "runner.n_episode: no such key in runner; did you mean runner.n_episodes=5?"),
    ("conf_rollout", ["runner=sequential", "runner.rendr=true"],
     "runner.rendr: no such key in runner; did you mean runner.render=true?"),
    ("conf_train", ["algorithm=ppo", "algorithm.batchsize=64"],
     "algorithm.batchsize: no such key in algorithm; did you mean algorithm.batch_size=64?"),
    ("conf_train", ["seedin.env_base_seed=3"], "seedin: no such key; did you mean seeding.env_base_seed=3?"),
    ("conf_train", ["torch_thread=2"], "torch_thread: no such key; did you mean torch_threads=2?"),
    ("conf_train", ["model.policy.networks.0.hidden_unit=[3]"],
     "model.policy.networks.0.hidden_unit: no such key in model.policy.networks.0; did you mean "
     "model.policy.networks.0.hidden_units=[3]?"),
    ("conf_rollout", ["polcy=torch_policy"], "polcy: no such key; did you mean policy=torch_policy?"),
    ("conf_train", ["hydra.run.dri=x"],
     "hydra.run.dri: no such key in hydra.run; did you mean hydra.run.dir=x?"),
    ("conf_train", ["algorithm=ppp"],
     "algorithm=ppp: no such option of algorithm; did you mean algorithm=ppo? (options: a2c, bc, ppo)"),
    ("conf_rollout", ["model=vector_ob"],
     "model=vector_ob: no such option of model; did you mean model=vector_obs? (options: flatten_concat, "
     "vector_obs)"),
    ("conf_rollout", ["runner=zzz"],
     "runner=zzz: no such option of runner; expected one of: dev, local, parallel, sequential"),
    ("conf_trian", [], "-cn conf_trian: no such config; did you mean -cn conf_train? (configs: conf_rollout, "
                       "conf_train, conf_worker)"),
    ("conf_rollout", ["xyzzy=1"],
     "xyzzy: no such key; expected one of: env, input_dir, model, policy, runner, seed, wrappers"),
    ("conf_rollout", ["runner.n_episodes=ten"],
     "runner.n_episodes: Value 'ten' of type 'str' could not be converted to Integer"),
])
def test_explanations(config: str, overrides: list[str], expected: str) -> None:
    assert explain_config_error(config, overrides) == expected


def test_a_config_that_composes_needs_no_explanation() -> None:
    assert explain_config_error("conf_train", ["algorithm=ppo", "algorithm.lr=0.01"]) is None


def test_parse_errors_are_one_line() -> None:
    explanation = explain_config_error("conf_train", ["algorithm.lr=="])
    assert explanation is not None and "\n" not in explanation
    assert explanation.startswith("Error parsing override 'algorithm.lr=='")


def test_own_config_directory(tmp_path: Path) -> None:
    (tmp_path / "my_rollout.yaml").write_text("defaults:\n  - conf_rollout\n  - _self_\nseed: 7\n")
    assert "my_rollout" in primary_configs(str(tmp_path))
    # Hydra reports mistakes inside configs of another directory itself; an unknown name is explained.
    assert explain_config_error("my_rollout", ["runner.n_episode=2"], str(tmp_path)) is None
    assert explain_config_error("my_rolout", [], str(tmp_path)) == (
        "-cn my_rolout: no such config; did you mean -cn my_rollout? (configs: conf_rollout, conf_train, "
        "conf_worker, my_rollout)")


@pytest.mark.parametrize(("name", "candidates", "expected"), [
    ("n_episode", ["n_episodes", "n_processes"], "n_episodes"), ("ppp", ["a2c", "ppo"], "ppo"),
    ("something", ["a2c", "ppo"], None)])
def test_suggest(name: str, candidates: list[str], expected: str | None) -> None:
    assert suggest(name, candidates) == expected
