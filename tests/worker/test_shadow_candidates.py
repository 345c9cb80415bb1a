"""Shadow candidates: a published version acting beside the served one on the same states, never answering.

Without a broker: the release state's shadow and its bad input, the episode table with a shadow (replies as
without it, agreement, failures isolated) and the live off-policy estimate against the true return of a
stochastic candidate. Against the real broker: ``maze-worker policies shadow`` on a serving worker, its
metrics and ``policies status``.
"""

import math
import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parent))
from policy_harness import NAME, metric, policy_config, save_run, serving  # noqa: E402
from worker_harness import CARTPOLE, Producer, state, wait_until  # noqa: E402

from worker.episodes.recording import Recording  # noqa: E402
from worker.episodes.shadow_candidate import Shadowing  # noqa: E402
from worker.episodes.spaces import ServedSpaces  # noqa: E402
from worker.episodes.table import EpisodeTable  # noqa: E402
from worker.experience.buffer import Chunk  # noqa: E402
from worker.experience.recorder import Recorder  # noqa: E402
from worker.policies_cli import policies_command, status_of  # noqa: E402
from worker.policy_store import releases  # noqa: E402
from worker.policy_store.store import publish_policy  # noqa: E402
from worker.policy_store.versioned import VersionedFactory, published_source  # noqa: E402
from worker.serving.candidate_figures import CandidateFigures, live_estimate  # noqa: E402
from worker.serving.factory import build_factory  # noqa: E402
from worker.settings import EpisodeSettings, ExperienceSettings  # noqa: E402
from worker.wire.protocol import StateMessage  # noqa: E402


def biased_run(run_dir: Path, right_logit: float) -> Path:
    """A CartPole policy pushing right with probability sigmoid(``right_logit``), whatever it sees."""
    save_run(run_dir)
    weights = torch.load(run_dir / "state_dict.pt", weights_only=True)
    weights["policy"]["0.heads.action.weight"].zero_()
    weights["policy"]["0.heads.action.bias"].copy_(torch.tensor([0.0, right_logit]))
    torch.save(weights, run_dir / "state_dict.pt")
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("shadow-runs")
    return {"right": biased_run(base / "right", 40.0), "left": biased_run(base / "left", -40.0),
            "coin": biased_run(base / "coin", 0.0), "keen": biased_run(base / "keen", 2.0)}


def published(root: Path, runs: dict[str, Path], *kinds: str) -> Path:
    for kind in kinds:
        publish_policy(root, NAME, runs[kind])
    return root


# ------------------------------------------------------------------------------------ the release state

def test_bad_shadow_changes_name_the_culprit_and_change_nothing(tmp_path: Path,
                                                                runs: dict[str, Path]) -> None:
    root = published(tmp_path, runs, "right", "left", "right", "left")
    with pytest.raises(releases.ReleaseError, match=r"^name: no policy 'nothing'"):
        releases.start_shadow(root, "nothing", 1)
    with pytest.raises(releases.ReleaseError, match=r"^version: 'cartpole' has no published version 9"):
        releases.start_shadow(root, NAME, 9)
    with pytest.raises(releases.ReleaseError, match=r"^version: 4 is the stable version"):
        releases.start_shadow(root, NAME, 4)  # without a release state the latest serves
    with pytest.raises(releases.ReleaseError, match=r"no version runs in shadow"):
        releases.stop_shadow(root, NAME)
    assert releases.read_release(root, NAME) is None
    state = releases.start_shadow(root, NAME, 2)
    assert (state.stable, state.canary, state.shadow) == (4, None, 2)  # what served still serves
    before = releases.release_path(root, NAME).read_bytes()
    with pytest.raises(releases.ReleaseError, match=r"version 2 already runs in shadow; stop it first"):
        releases.start_shadow(root, NAME, 3)
    releases.release_canary(root, NAME, 1, 0.2)
    with pytest.raises(releases.ReleaseError, match=r"^version: 1 runs as the canary"):
        releases.start_shadow(root, NAME, 1)
    releases.rollback(root, NAME)
    assert releases.read_release(root, NAME).shadow == 2  # type: ignore[union-attr]
    assert releases.release_path(root, NAME).read_bytes() != before  # (the canary came and went)
    state = releases.release_canary(root, NAME, 2, 0.1)  # the shadow moves on to act as the canary
    assert (state.canary, state.shadow) == (2, None)
    releases.rollback(root, NAME)
    state = releases.start_shadow(root, NAME, 3)
    state = releases.promote(root, NAME, 3)  # promoting the shadow version ends the shadow
    assert (state.stable, state.canary, state.shadow) == (3, None, None)
    assert policies_command(["shadow", NAME, "--artifact-root", str(root)]) == 2  # neither VERSION nor --stop
    assert policies_command(["shadow", NAME, "2", "--stop", "--artifact-root", str(root)]) == 2


# ---------------------------------------------------------------------------------- the episode table

def sources(root: Path) -> VersionedFactory:
    return published_source(policy_config(root), CARTPOLE, None, build_factory)


def table_with(served: Any, shadow: Any, figures: CandidateFigures,
               deterministic: bool = False) -> EpisodeTable:
    table = EpisodeTable(served, EpisodeSettings(max_open=10_000), deterministic,
                         shadowing=Shadowing(deterministic, figures.count, figures.finished))
    table.sources.serve(served, None, 0.0, shadow)
    return table


def play(table: EpisodeTable, episodes: list[str], steps: int) -> list[list[dict[str, Any]]]:
    """Step ``episodes`` together for ``steps`` decisions and a done state; the reward is 1 when the previous
    action pushed right. Returns each episode's replies."""
    replies: list[list[dict[str, Any]]] = [[] for _ in episodes]
    for seq in range(steps + 1):
        messages = [StateMessage(1, episode, seq, state(0.1), None if seq == 0 else
                                 float(replies[number][-1]["action"] == 1), seq == steps)
                    for number, episode in enumerate(episodes)]
        for number, answer in enumerate(table.handle(messages)):
            replies[number].append(msgpack.unpackb(answer.body))
    return replies


def sample(figures: CandidateFigures, name: str, version: int) -> float | None:
    return figures.registry.get_sample_value(f"maze_worker_candidate_{name}",
                                             {"policy_version": str(version)})


def all_served(replies: list[list[dict[str, Any]]], version: int) -> bool:
    return all(reply["error"] is None and reply["policy_version"] == version
               for episode in replies for reply in episode)


def test_the_shadow_acts_on_every_state_and_never_answers(tmp_path: Path, runs: dict[str, Path]) -> None:
    root = published(tmp_path, runs, "right", "left", "right")
    served = sources(root).at_version(1)
    figures = CandidateFigures(CollectorRegistry())
    table = table_with(served, served.at_version(2), figures, deterministic=True)
    replies = play(table, [f"e-{number}" for number in range(8)], steps=3)
    assert all_served(replies, 1)
    assert all(reply["action"] == 1 for episode in replies for reply in episode[:-1])  # the served policy's
    assert sample(figures, "decisions_total", 2) == 8 * 3
    assert sample(figures, "agreement", 2) == 0.0  # the shadow pushes left every time
    assert table.shadowing.running == 0 and table.sources.shadow is not None  # closed episodes let go
    agreeing = CandidateFigures(CollectorRegistry())
    play(table_with(served, served.at_version(3), agreeing, deterministic=True), ["f-1", "f-2"], steps=4)
    assert sample(agreeing, "agreement", 3) == 1.0
    assert sample(agreeing, "episodes", 3) is None  # deterministic serving: no propensities, no estimate


class ExplodingPolicy:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("the shadow's policy is broken")


class BrokenShadow:
    """A shadow source whose deployments build but whose policy fails on every call (or whose factory
    fails, with ``on_create``)."""

    policy_version = 9

    def __init__(self, real: VersionedFactory, on_create: bool = False) -> None:
        self.real, self.on_create, self.policy = real, on_create, ExplodingPolicy()

    def create(self) -> Any:
        if self.on_create:
            raise OSError("the shadow's factory is broken")
        return self.real.create()


@pytest.mark.parametrize("on_create", [False, True])
def test_a_failing_shadow_costs_the_episode_nothing(tmp_path: Path, runs: dict[str, Path],
                                                    on_create: bool) -> None:
    root = published(tmp_path, runs, "right")
    served = sources(root)
    figures = CandidateFigures(CollectorRegistry())
    table = table_with(served, BrokenShadow(served, on_create), figures, deterministic=True)
    replies = play(table, ["g-1", "g-2", "g-3"], steps=4)
    assert all_served(replies, 1)
    assert sample(figures, "errors_total", 9) == 3  # once per episode: a failed shadow is dropped
    assert table.shadowing.running == 0 and len(table) == 0


def test_the_live_estimate_finds_a_stochastic_candidates_return(tmp_path: Path,
                                                                runs: dict[str, Path]) -> None:
    """Served: a coin (right with probability 0.5); shadow: right with probability sigmoid(2) = 0.881. The
    reward is 1 per right push, so over 5 decisions the shadow would earn 4.40, the served coin earns 2.5."""
    torch.manual_seed(0)
    root = published(tmp_path, runs, "coin", "keen")
    served = sources(root).at_version(1)
    figures = CandidateFigures(CollectorRegistry())
    table = table_with(served, served.at_version(2), figures)
    for batch in range(4):
        play(table, [f"h-{batch}-{number}" for number in range(100)], steps=5)
    figures.refresh(now=math.inf)
    truth = 5 / (1 + math.exp(-2.0))
    estimate = sample(figures, "estimated_return", 2)
    served_return = sample(figures, "served_return", 2)
    assert sample(figures, "episodes", 2) == 400
    assert estimate is not None and abs(estimate - truth) < 0.1 * truth, (estimate, truth)
    assert served_return is not None and abs(served_return - 2.5) < 0.3
    # E[w^2] per decision is 0.5 * (1.762^2 + 0.238^2) = 1.58, so the ESS is near 400 / 1.58^5 = 40.
    assert 20 < sample(figures, "ess", 2) < 80  # type: ignore[operator]
    assert 0.5 < sample(figures, "weight_mean", 2) < 1.5  # type: ignore[operator]


def test_recorded_episodes_keep_the_shadows_side_of_each_step(tmp_path: Path, runs: dict[str, Path]) -> None:
    root = published(tmp_path, runs, "coin", "keen")
    served = sources(root).at_version(1)
    chunks: list[Chunk] = []
    figures = CandidateFigures(CollectorRegistry())
    table = EpisodeTable(served, EpisodeSettings(), recording=Recording(
        ServedSpaces.of(served), Recorder(ExperienceSettings(record=True, sample=1.0), chunks.append)),
        shadowing=Shadowing(False, figures.count, figures.finished))
    table.sources.serve(served, None, 0.0, served.at_version(2))
    replies = play(table, ["r-1", "r-2"], steps=6)
    keen = math.log(1 / (1 + math.exp(-2.0)))
    for chunk, episode_replies in zip(chunks, replies, strict=True):
        record = chunk.record("w", NAME, "act", 0.0)
        assert record.shadow_version == 2 and record.columns is not None
        served_actions = [reply["action"] for reply in episode_replies[:-1]]
        expected = [keen if action == 1 else math.log(1 - math.exp(keen)) for action in served_actions]
        assert record.columns["shadow_log_prob"] == pytest.approx(expected, abs=1e-5)
        assert record.columns["log_prob"] == pytest.approx([math.log(0.5)] * 6, abs=1e-5)
        assert set(record.columns["shadow_action"]["action"].tolist()) <= {0, 1}


def test_an_endless_episode_leaves_the_estimate_and_keeps_no_lists(tmp_path: Path, runs: dict[str, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.episodes import shadow_candidate

    monkeypatch.setattr(shadow_candidate, "MAX_WEIGHED_STEPS", 5)
    root = published(tmp_path, runs, "coin", "keen")
    served = sources(root).at_version(1)
    figures = CandidateFigures(CollectorRegistry())
    table = table_with(served, served.at_version(2), figures)
    play(table, ["long"], steps=4)  # within the limit: estimated
    table.handle([StateMessage(1, "longer", seq, state(0.1), None if seq == 0 else 1.0, False)
                  for seq in range(12)])
    held = table._open["longer"].shadow  # noqa: SLF001
    assert held is not None and not held.weighable and held.log_ratios == [] and held.rewards == []
    assert held.decisions == 12
    figures.refresh(now=math.inf)
    assert sample(figures, "episodes", 2) == 1


def test_the_weight_mean_exposes_a_candidate_the_served_policy_never_imitates() -> None:
    """Self-normalized weights of equally unlikely episodes give back the served return; the mean weight
    says so."""
    episodes = [(np.full(4, -40.0), np.ones(4)) for _ in range(50)]
    figures = live_estimate(episodes)
    assert figures.estimated_return == pytest.approx(4.0) and figures.ess == pytest.approx(50.0)
    assert figures.weight_mean < 1e-60


# ----------------------------------------------------------------------------------------- the real broker

@pytest.mark.integration
def test_policies_shadow_on_a_serving_worker(amqp_url: str, prefix: str, tmp_path: Path,
                                             runs: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = published(tmp_path, runs, "left", "right")  # 2 (right) serves
    producer = Producer(amqp_url, prefix)
    try:
        with serving(amqp_url, prefix, root) as service:
            cli = ["--artifact-root", str(root), "--url", amqp_url, "--prefix", prefix]
            assert policies_command(["shadow", NAME, "1", *cli]) == 0
            wait_until(lambda: metric(service, "maze_worker_shadow_version") == 1, "the shadow not loaded")
            assert policies_command(["shadow", NAME, "2", *cli]) == 2  # the stable version
            assert "is the stable version" in capsys.readouterr().err
            for number in range(6):
                episode = f"s-{number}"
                for seq in range(4):
                    reply = producer.call(episode, seq, state(0.1), reward=None if seq == 0 else 1.0,
                                          done=seq == 3, timeout=60)
                    assert reply["error"] is None and reply["policy_version"] == 2, reply
                    if seq < 3:
                        assert reply["action"] == 1
            assert metric(service, "maze_worker_candidate_decisions_total", policy_version="1") == 18
            assert metric(service, "maze_worker_candidate_agreement", policy_version="1") == 0.0
            port = service._metrics_server.port if service._metrics_server else None  # noqa: SLF001
            report = status_of(str(root), NAME, [f"http://127.0.0.1:{port}/metrics"] if port else [])
            assert report["versions"]["shadow"]["version"] == 1
            if port:
                assert report["versions"]["shadow"]["live"]["agreement"] == 0.0
            assert policies_command(["shadow", NAME, "--stop", *cli]) == 0
            wait_until(lambda: metric(service, "maze_worker_shadow_version") == 0, "the shadow not stopped")
            producer.call("t-1", 0, state(0.1), timeout=60)
            producer.call("t-1", 1, state(0.1), reward=1.0, done=True, timeout=60)
            assert metric(service, "maze_worker_candidate_decisions_total", policy_version="1") == 18
    finally:
        producer.close()
    capsys.readouterr()
    assert policies_command(["status", NAME, "--artifact-root", str(root)]) == 0
    assert "shadow" not in capsys.readouterr().out  # stopped: only the stable version is shown


@pytest.mark.integration
def test_a_shadow_that_cannot_be_loaded_is_left_out_and_nothing_served_changes(
        amqp_url: str, prefix: str, tmp_path: Path, runs: dict[str, Path]) -> None:
    root = published(tmp_path, runs, "right")
    acrobot = publish_policy(root, NAME, save_run(tmp_path / "acrobot", env_name="Acrobot-v1"))  # 2
    releases.promote(root, NAME, 1)
    producer = Producer(amqp_url, prefix)
    try:
        with serving(amqp_url, prefix, root) as service:
            cli = ["--artifact-root", str(root), "--url", amqp_url, "--prefix", prefix]
            assert policies_command(["shadow", NAME, str(acrobot.version), *cli]) == 0
            wait_until(lambda: metric(service, "maze_worker_policy_reloads_total", outcome="rejected") == 1,
                       "the incompatible shadow not rejected")
            assert metric(service, "maze_worker_shadow_version") == 0
            for seq in range(3):
                reply = producer.call("u-1", seq, state(0.1), reward=None if seq == 0 else 1.0, done=seq == 2,
                                      timeout=60)
                assert reply["error"] is None and reply["policy_version"] == 1, reply
    finally:
        producer.close()
