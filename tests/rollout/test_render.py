"""Rendering in the sequential runner: never crashes headless, shows text, saves frames as PNG."""

import zlib
from pathlib import Path

import numpy as np
import pytest
from rollout_helpers import make_endless_env

from maze_engine import SequentialRolloutRunner
from maze_engine.rollout import render
from maze_engine.rollout.render import RENDER_DIR, StepRenderer, choose_render_mode, write_png

RANDOM = {"_target_": "maze_engine.RandomPolicy"}


@pytest.fixture
def headless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def read_png(path: Path) -> np.ndarray:
    """Decode the PNGs write_png produces (8-bit, no interlace, filter 0), independently of it."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, dict[bytes, bytes]()
    while position < len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        tag = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        crc = int.from_bytes(data[position + 8 + length:position + 12 + length], "big")
        assert crc == zlib.crc32(tag + body)
        chunks[tag] = chunks.get(tag, b"") + body
        position += 12 + length
    width, height = int.from_bytes(chunks[b"IHDR"][:4], "big"), int.from_bytes(chunks[b"IHDR"][4:8], "big")
    channels = {0: 1, 2: 3, 6: 4}[chunks[b"IHDR"][9]]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8)
    raw = raw.reshape(height, 1 + width * channels)
    assert not raw[:, 0].any()  # filter type 0 on every row
    pixels = raw[:, 1:].reshape(height, width, channels)
    return pixels[..., 0] if channels == 1 else pixels


@pytest.mark.parametrize("shape", [(3, 5), (3, 5, 3), (2, 7, 4)])
def test_write_png_round_trips(tmp_path: Path, shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    write_png(tmp_path / "frame.png", image)
    np.testing.assert_array_equal(read_png(tmp_path / "frame.png"), image)


def test_write_png_rejects_other_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image: expected shape"):
        write_png(tmp_path / "frame.png", np.zeros((2, 2, 2), dtype=np.uint8))


def test_headless_machines_render_to_rgb_arrays(headless: None) -> None:
    assert choose_render_mode() == "rgb_array"


def test_headless_cartpole_render_falls_back_to_text(tmp_path: Path, headless: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    runner = SequentialRolloutRunner(n_episodes=1, max_episode_steps=3, render=True, seed=0)
    runner.run({"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}, RANDOM,
               output_dir=tmp_path)
    out = capsys.readouterr().out
    # Either pygame draws frames to files, or each step is printed as text; both are fine, neither crashes.
    frames = list((tmp_path / RENDER_DIR).rglob("*.png")) if (tmp_path / RENDER_DIR).exists() else []
    assert len(frames) == 4 or all(f"episode 0 step {step}" in out for step in range(4))
    assert "rollout statistics" in out


def test_rgb_frames_are_saved_per_episode_and_step(tmp_path: Path, headless: None) -> None:
    runner = SequentialRolloutRunner(n_episodes=2, max_episode_steps=3, render=True, silent=True)
    runner.run({"_target_": "rollout_helpers.make_endless_env"}, RANDOM, output_dir=tmp_path)
    frames = sorted(path.relative_to(tmp_path / RENDER_DIR).as_posix()
                    for path in (tmp_path / RENDER_DIR).rglob("*.png"))
    assert frames == [f"episode_{episode:03d}/step_{step:05d}.png" for episode in (0, 1) for step in range(4)]
    # The test env paints its step count into the red channel.
    assert read_png(tmp_path / RENDER_DIR / "episode_001" / "step_00002.png")[0, 0, 0] == 2


def test_rendered_episodes_record_log_probs_into_minari_too(tmp_path: Path, headless: None) -> None:
    import minari

    runner = SequentialRolloutRunner(n_episodes=2, max_episode_steps=3, render=True, silent=True,
                                     record_minari="rendered-v0")
    runner.run({"_target_": "rollout_helpers.make_endless_env"}, RANDOM, output_dir=tmp_path)
    for episode in minari.MinariDataset(tmp_path / "minari" / "rendered-v0" / "data").iterate_episodes():
        np.testing.assert_allclose(episode.infos["log_prob"], [-np.log(3.0)] * 3 + [np.nan])


def test_text_renders_are_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    renderer = StepRenderer(make_endless_env(render_mode="ansi"), tmp_path)
    renderer.render(0, 0)
    assert capsys.readouterr().out == "episode 0 step 0\nt=0\n"


def test_envs_that_render_nothing_print_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = make_endless_env(render_mode=None)
    renderer = StepRenderer(env, tmp_path)
    observation = env.reset()
    renderer.render(0, 0, observation=observation)
    renderer.render(0, 1, action={"action": 2}, reward=2.0, observation=env.step({"action": 2})[0])
    assert capsys.readouterr().out.splitlines() == [
        "episode 0 step 0 observation={observation: [0.]}",
        "episode 0 step 1 action={action: 2} reward=2 observation={observation: [1.]}",
    ]


def test_a_failing_render_is_reported_once_then_text(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    env = make_endless_env(render_mode="rgb_array")

    def broken() -> None:
        raise RuntimeError("no GPU context")

    env.core_env.render = broken
    renderer = StepRenderer(env, tmp_path)
    renderer.render(0, 0, observation=env.reset())
    renderer.render(0, 1, observation=env.reset())
    captured = capsys.readouterr()
    assert captured.err.count("cannot render here (RuntimeError: no GPU context)") == 1
    assert captured.out.count("episode 0 step") == 2
