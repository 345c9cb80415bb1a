"""What a job message may ask, without a broker: the override grammar, the allow-list of groups and keys,
class paths, path confinement, names, redaction, and checks that never raise whatever a message holds."""

from __future__ import annotations

import doctest
import logging
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from job_harness import nested_list, raw_map  # noqa: E402

from maze_engine.config import compose_config  # noqa: E402
from worker.broker.job_transport import JobDelivery  # noqa: E402
from worker.jobs import grammar, redaction  # noqa: E402
from worker.jobs.codec import JobDecodeError, decode_control, decode_job, describe, new_job  # noqa: E402
from worker.jobs.control import JobControl  # noqa: E402
from worker.jobs.grammar import OverrideSyntaxError, parse_override, render_override  # noqa: E402
from worker.jobs.guard import GROUPS, JobGuard, JobRefused, group_options  # noqa: E402
from worker.jobs.intake import Accepted, JobIntake, Rejected  # noqa: E402
from worker.jobs.records import JobRecords  # noqa: E402
from worker.jobs.redaction import redact  # noqa: E402
from worker.jobs.rules import ValueRules  # noqa: E402

# -- the grammar -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "key", "value"), [
    ("runner.n_episodes=10", "runner.n_episodes", 10),
    ("runner=sequential", "runner", "sequential"),
    ("env.name=CartPole-v1", "env.name", "CartPole-v1"),
    ("env.name=ALE/Pong-v5", "env.name", "ALE/Pong-v5"),
    ("algorithm.lr=1e-3", "algorithm.lr", 0.001),
    ("algorithm.device=cuda:0", "algorithm.device", "cuda:0"),
    ("seed=null", "seed", None),
    ("runner.record_trajectory=false", "runner.record_trajectory", False),
    ("input_dir=", "input_dir", ""),
    ("input_dir=jobs/train-1/output", "input_dir", "jobs/train-1/output"),
    ("input_dir='with space'", "input_dir", "with space"),
    ('input_dir="double"', "input_dir", "double"),
    ("model.policy.networks.0.hidden_units=[64, 64]", "model.policy.networks.0.hidden_units", [64, 64]),
    ("x=[]", "x", []),
    ("x=['a,b', c]", "x", ["a,b", "c"]),
    ("env._target_=os.makedirs", "env._target_", "os.makedirs"),  # grammatical; the guard refuses it
])
def test_the_grammar_accepts_plain_key_value(text: str, key: str, value: Any) -> None:
    override = parse_override(text)
    assert (override.text, override.key, override.value) == (text, key, value)


@pytest.mark.parametrize(("text", "fragment"), [
    ("+env.foo=1", "'+'"),
    ("++hydra.run.dir=/tmp", "'+'"),
    ("~env.name", "'+', '++' and '~'"),
    ("env.name", "no '='"),
    ("policy@model=random_policy", "@package"),
    ("runner.n_episodes=${oc.env:HOME}", "interpolations are refused"),
    ("runner.n_episodes='${oc.env:HOME}'", "interpolations are refused"),
    ('x="$HOME"', "interpolations are refused"),
    ("x=${x}", "interpolations are refused"),
    ("x=a,b", "flat list"),
    ("x=choice(1,2)", "flat list"),
    ("x=range(1,5)", "flat list"),
    ("x=glob(*)", "flat list"),
    ("x=int(3)", "flat list"),
    ("x={a:1}", "flat list"),
    ("x=[[1]]", "flat list"),
    ("x=[{a:1}]", "flat list"),
    ("x=a b", "flat list"),
    ("x='a\\'b'", "flat list"),
    ("x=a\nb", "flat list"),
    ("x='tab\there'", "flat list"),
    ("x=*", "flat list"),
    ("x=~/secrets", "flat list"),
    ("x.=1", "dotted key"),
    (".x=1", "dotted key"),
    ("x y=1", "dotted key"),
    ("x..y=1", "dotted key"),
    ("x/y=1", "dotted key"),
    ("=1", "dotted key"),
])
def test_the_grammar_refuses_anything_else(text: str, fragment: str) -> None:
    with pytest.raises(OverrideSyntaxError) as info:
        parse_override(text)
    assert fragment in str(info.value)


def test_the_grammar_doctest_runs() -> None:
    for module in (grammar, redaction):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(("value", "text"), [
    ("/a/b", "k=/a/b"), ("/a b/c", "k='/a b/c'"), ("10", "k='10'"), ("null", "k='null'")])
def test_rendered_overrides_read_back_as_the_same_string(value: str, text: str) -> None:
    assert render_override("k", value) == text
    assert parse_override(text).value == value
    with pytest.raises(OverrideSyntaxError):
        render_override("k", "/a/${x}")


# -- the guard ---------------------------------------------------------------------------------------------

@pytest.fixture
def guard(tmp_path: Path) -> JobGuard:
    return JobGuard(tmp_path / "root")


@pytest.mark.parametrize(("kind", "overrides"), [
    ("rollout", ["runner=sequential", "runner.max_episode_steps=20", "runner.n_episodes=3"]),
    ("rollout", ["env=gym_env", "env.name=CartPole-v1", "seed=7", "wrappers=vector_obs"]),
    ("rollout", ["env._target_=maze_engine.make_gym_maze_env"]),
    ("rollout", ["policy=published_policy", "policy.name=cartpole", "policy.version=2"]),
    ("rollout", ["policy=torch_policy", "input_dir=", "model=vector_obs"]),
    ("rollout", ["runner=parallel", "runner.n_processes=2"]),
    ("train", ["algorithm=ppo", "algorithm.n_epochs=2", "algorithm.device=cuda:0", "runner=dev"]),
    ("train", ["model=flatten_concat", "model.policy.networks.0.hidden_units=[32, 32]",
               "model.policy.networks.0.non_lin=relu", "critic=template_step_state"]),
    ("train", ["model.policy.networks.0.non_lin=torch.nn.ELU", "seeding.env_base_seed=null", "silent=true"]),
])
def test_the_guard_accepts_what_the_config_tree_offers(guard: JobGuard, kind: str,
                                                       overrides: list[str]) -> None:
    job = new_job("ok", kind, overrides)
    assert guard.vet(job) == job


@pytest.mark.parametrize(("kind", "overrides", "field", "fragment"), [
    ("rollout", ["env._target_=os.makedirs", "env.name=/tmp/x"], "overrides[0]", "jobs.allowed_targets"),
    ("rollout", ["env._target_=builtins.exec"], "overrides[0]", "jobs.allowed_targets"),
    ("rollout", ["env._target_=maze_engine.rollout.launch.Path"], "overrides[0]", "pathlib's"),
    ("rollout", ["env._target_=maze_engine.core.factory._plain_config"], "overrides[0]", "allowed_targets"),
    ("rollout", ["env._target_=maze_engine.no_such_thing"], "overrides[0]", "importable"),
    ("rollout", ["env._target_=maze_engine_evil.x"], "overrides[0]", "allowed_targets"),
    ("rollout", ["runner._target_=subprocess.Popen"], "overrides[0]", "allowed_targets"),
    ("rollout", ["runner.n_episodes=${oc.env:SOME_SECRET}"], "overrides[0]", "interpolations"),
    ("rollout", ["policy=torch_policy", "input_dir=../../.."], "overrides[1]", "inside the artifact root"),
    ("rollout", ["policy=torch_policy", "input_dir=/etc"], "overrides[1]", "inside the artifact root"),
    ("rollout", ["policy=torch_policy", "input_dir=jobs/../../x"], "overrides[1]", "'..'"),
    ("rollout", ["policy=torch_policy", "policy.input_dir=/"], "overrides[1]", "inside the artifact root"),
    ("rollout", ["policy=published_policy", "policy.artifact_root=/tmp"], "overrides[1]", "artifact root"),
    ("rollout", ["policy=published_policy", "policy.name=../x"], "overrides[1]", "a name"),
    ("rollout", ["env.name=os:Foo-v0"], "overrides[0]", "module:"),
    ("rollout", ["env.name=/etc/passwd"], "overrides[0]", "a name"),
    ("rollout", ["hydra.run.dir=/tmp"], "overrides[0]", "hydra.*"),
    ("rollout", ["hydra.job.env_set.X=1"], "overrides[0]", "hydra.*"),
    ("rollout", ["+env.kwargs=1"], "overrides[0]", "'+'"),
    ("rollout", ["runner.foo=1"], "overrides[0]", "expected a key of runner"),
    ("rollout", ["nope=1"], "overrides[0]", "expected a key of the conf_rollout config"),
    ("rollout", ["runner=nonexistent"], "overrides[0]", "sequential"),
    ("rollout", ["policy=../../etc/x"], "overrides[0]", "config group policy"),
    ("rollout", ["critic=template_state"], "overrides[0]", "group of the conf_rollout config"),
    ("rollout", ["runner.deterministic=[1]"], "overrides[0]", "single value"),
    ("rollout", ["runner=sequential", "runner.n_episodes=[os.system]"], "overrides[1]", "single value"),
    ("train", ["model.policy=x"], "overrides[0]", "section"),
    ("train", ["model.policy.networks=[os.system]"], "overrides[0]", "class path"),
    ("train", ["model.policy.networks.0.hidden_units=5"], "overrides[0]", "list"),
    ("train", ["model.policy.networks.0.non_lin=os.system"], "overrides[0]", "activation"),
    ("train", ["model.policy.networks.0._target_=torch.nn.Linear"], "overrides[0]", "allowed_targets"),
    ("train", ["algorithm._target_=os.system"], "overrides[0]", "allowed_targets"),
    ("train", ["input_dir=~/x"], "overrides[0]", "flat list"),
])
def test_the_guard_refuses_naming_the_override(guard: JobGuard, kind: str, overrides: list[str], field: str,
                                               fragment: str) -> None:
    with pytest.raises(JobRefused) as info:
        guard.vet(new_job("hostile", kind, overrides))
    assert info.value.field == field
    assert info.value.message.startswith(f"{field}: ")
    assert fragment in info.value.message, info.value.message


@pytest.mark.parametrize("config", ["conf_worker", "conf_nope"])
def test_only_the_job_configs_may_be_composed(guard: JobGuard, config: str) -> None:
    with pytest.raises(JobRefused) as info:
        guard.vet(new_job("j", "rollout", config=config))
    assert info.value.field == "config" and "conf_rollout" in info.value.message


def test_relative_paths_are_made_absolute_inside_the_root(guard: JobGuard, tmp_path: Path) -> None:
    job = guard.vet(new_job("j", "rollout", ["policy=torch_policy", "input_dir=jobs/train-1/output"]))
    root = (tmp_path / "root").resolve()
    assert job.overrides == ("policy=torch_policy", f"input_dir={root}/jobs/train-1/output")
    assert guard.vet(job) == job, "vetting is idempotent (chunk jobs are vetted again)"


def test_a_symbolic_link_out_of_the_root_is_refused(guard: JobGuard, tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "escape").symlink_to(tmp_path)
    with pytest.raises(JobRefused) as info:
        guard.vet(new_job("j", "rollout", ["policy=torch_policy", "input_dir=escape/x"]))
    assert info.value.field == "overrides[1]"


def test_every_option_of_the_tree_passes_the_composed_checks(guard: JobGuard) -> None:
    checked = 0
    for config in ("conf_train", "conf_rollout"):
        for group in GROUPS:
            for option in group_options(group):
                try:
                    composed = compose_config(config, [f"{group}={option}"])
                except Exception:  # noqa: BLE001 - e.g. critic= on the rollout config, which has no critic
                    continue
                guard.check_composed(composed)
                checked += 1
    assert checked >= 20


@pytest.mark.parametrize(("config", "fragment"), [
    ({"env": {"_target_": "os.makedirs", "name": "x"}}, "env._target_"),
    ({"model": {"policy": {"networks": [{"_target_": "maze_engine.FlattenConcatPolicyNet",
                                         "non_lin": "os.system"}]}}}, "model.policy.networks[0].non_lin"),
    ({"wrappers": {"os.system": {}}}, "wrappers"),
    ({"wrappers": ["subprocess.Popen"]}, "wrappers: item 0"),
    ({"input_dir": "/etc"}, "input_dir"),
    ({"env": {"name": "os:Env-v0"}}, "env.name"),
])
def test_the_composed_config_is_checked_too(guard: JobGuard, config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(JobRefused) as info:
        guard.check_composed(config)
    assert info.value.field == "config" and fragment in info.value.message, info.value.message
    guard.check_composed({"policy": {"artifact_root": "${oc.env:ANYWHERE}"}})  # from the tree: left alone


def test_operators_extend_the_allowed_targets(tmp_path: Path) -> None:
    rules = ValueRules(tmp_path, ("maze_engine.", "worker.", "json."))
    assert rules.target_problem("json.loads") is None
    assert rules.target_problem("json") is not None, "a module is no class or function"
    assert rules.target_problem("jsonx.loads") is not None
    assert ValueRules(tmp_path, ("maze_engine.",)).target_problem("worker.jobs.records.read_json") is not None


# -- never raising, never leaking ----------------------------------------------------------------------------

def test_describe_is_bounded_for_a_list_nested_a_thousand_deep() -> None:
    nested = msgpack.unpackb(nested_list(1000))
    with pytest.raises(RecursionError):
        repr(nested)
    text = describe(nested)
    assert text.startswith("list [[[") and len(text) < 100
    with pytest.raises(JobDecodeError) as info:
        decode_job(raw_map(v=msgpack.packb(1), job_id=msgpack.packb("deep"), kind=nested_list(1000)))
    assert info.value.field == "kind" and info.value.job_id == "deep"
    with pytest.raises(JobDecodeError) as info:
        decode_control(raw_map(v=msgpack.packb(1), command=nested_list(1000)))
    assert info.value.field == "command"


def _delivery(body: bytes) -> JobDelivery:
    return JobDelivery(tag=1, body=body, queue="maze.jobs.rollout", reply_to="reply", correlation_id="c",
                       headers={}, redelivered=False, properties=None)


@pytest.mark.parametrize("body", [
    raw_map(v=msgpack.packb(1), job_id=msgpack.packb("deep"), kind=nested_list(1000)),
    raw_map(v=msgpack.packb(1), job_id=msgpack.packb("deep"), kind=msgpack.packb("rollout"),
         overrides=b"\x91" + nested_list(999)),
    raw_map(v=msgpack.packb(1), job_id=msgpack.packb("deep"), kind=msgpack.packb("rollout"),
         chunk_of=raw_map(parent=nested_list(1000))),
    raw_map(v=msgpack.packb(1), job_id=nested_list(1000)),
    b"\xc1" * 100,
])
def test_the_intake_turns_any_message_into_a_decision(tmp_path: Path, body: bytes) -> None:
    decision = JobIntake(JobRecords(tmp_path)).check(_delivery(body), 3)
    assert isinstance(decision, Rejected) and decision.dead_reason == "bad_job"


def test_the_intake_rejects_when_a_check_breaks_unexpectedly(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    class Broken(JobGuard):
        def vet(self, job: Any) -> Any:
            raise RecursionError("maximum recursion depth exceeded")

    intake = JobIntake(JobRecords(tmp_path), Broken(tmp_path))
    body = msgpack.packb({"v": 1, "job_id": "j", "kind": "rollout"})
    with caplog.at_level(logging.ERROR):
        decision = intake.check(_delivery(body), 3)
    assert isinstance(decision, Rejected) and (decision.dead_reason, decision.field) == ("bad_job", "job")
    assert decision.result is not None and decision.result.error is not None
    assert decision.result.error.code == "bad_job" and "RecursionError" in decision.result.error.message
    accepted = JobIntake(JobRecords(tmp_path)).check(_delivery(body), 3)
    assert isinstance(accepted, Accepted)


def test_control_messages_never_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stopped: list[str] = []
    control = JobControl(JobRecords(tmp_path), stopped.append)
    bodies = [raw_map(v=msgpack.packb(1), command=msgpack.packb("cancel"), job_id=msgpack.packb("j"),
                   reason=nested_list(1000)),
              raw_map(v=msgpack.packb(1), command=nested_list(1000)), b"\xc1",
              msgpack.packb({"v": 1, "command": "cancel", "job_id": "../x"}),
              msgpack.packb({"v": 1, "command": "cancel", "job_id": "ok", "reason": "done"})]
    with caplog.at_level(logging.WARNING):
        control.handle(bodies)
    assert stopped == ["ok"]
    assert JobRecords(tmp_path).cancellation("ok") is not None
    assert len([r for r in caplog.records if "control message" in r.getMessage()]) == 4


def test_redaction_masks_url_passwords_and_secret_environment_values() -> None:
    environ = {"MAZE_AMQP_URL": "amqp://u:pw@h/", "DB_PASSWORD": "hunter22", "HOME": "/root",
               "API_TOKEN": "x"}
    text = "amqp://u:pw@h/ failed; password hunter22; home /root; token x; other amqps://a:b@c:5671/v"
    assert redact(text, environ) == "**** failed; password ****; home /root; token x; other amqps://a:****@c:5671/v"
