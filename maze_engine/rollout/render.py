"""Rendering for the sequential runner that never crashes a headless machine.

With a display (and pygame, which gymnasium's windows need) envs are created with ``render_mode="human"``
and draw their own window. Without one they are created with ``render_mode="rgb_array"`` and every frame is
saved as a PNG under ``<output_dir>/render/episode_<n>/``; text an env renders (``ansi``) is printed. When
an env cannot render at all (no pygame, no render support), each step is printed as one line of text
(episode, step, action, reward, observation) instead, after a one-line notice on stderr.
"""

import importlib.util
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from maze_engine.core.env.structured_env import StructuredEnv

RENDER_DIR = "render"


def display_available() -> bool:
    """Whether a window can be opened: a display server on Linux/BSD; assumed on macOS and Windows."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def choose_render_mode() -> str:
    """``human`` where a window can be shown, else ``rgb_array`` (frames saved to files)."""
    if display_available() and importlib.util.find_spec("pygame") is not None:
        return "human"
    return "rgb_array"


def write_png(path: Path, image: np.ndarray) -> None:
    """Save an ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8 image as PNG (no imaging library needed)."""
    pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if pixels.ndim == 2:
        color_type = 0
    elif pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        color_type = 2 if pixels.shape[2] == 3 else 6
    else:
        raise ValueError(f"image: expected shape (H, W), (H, W, 3) or (H, W, 4), got {pixels.shape}")
    height, width = pixels.shape[:2]
    # Each scanline starts with filter type 0 (none).
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        checksum = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", checksum)

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
                     + chunk(b"IEND", b""))


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_short(item)}" for key, item in value.items()) + "}"
    if isinstance(value, np.ndarray | list | tuple):
        return np.array2string(np.asarray(value), precision=3, threshold=16, max_line_width=10_000)
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return repr(value.item() if isinstance(value, np.generic) else value)


class StepRenderer:
    """Shows one step at a time in whatever way the env and the machine allow."""

    def __init__(self, env: StructuredEnv, output_dir: Path, stream: IO[str] | None = None) -> None:
        self.env = env
        self.output_dir = output_dir
        self.stream = stream
        gym_env = getattr(getattr(env, "maze_env", None), "gym_env", None)
        # Gymnasium envs in human mode draw on every step by themselves; rendering again would draw twice.
        self.self_rendering = getattr(gym_env, "render_mode", None) == "human"
        self.text_only = False
        self.frames_saved = 0

    def render(self, episode: int, step: int, action: Any = None, reward: float | None = None,
               observation: Any = None) -> None:
        """Show the state after ``step`` of ``episode`` (step 0: right after reset)."""
        if self.self_rendering:
            return
        if not self.text_only:
            try:
                frame = self.env.maze_env.render()  # type: ignore[attr-defined]
            except Exception as err:  # noqa: BLE001 - any render failure means: fall back to text
                self.text_only = True
                print(f"render: the env cannot render here ({type(err).__name__}: {err}); "
                      "printing steps as text instead", file=sys.stderr)
            else:
                if isinstance(frame, str):
                    print(f"episode {episode} step {step}\n{frame}", file=self.stream or sys.stdout)
                    return
                if isinstance(frame, np.ndarray) and frame.ndim in (2, 3):
                    self._save_frame(episode, step, frame)
                    return
                self.text_only = True  # the env renders nothing we can show
        self._print_step(episode, step, action, reward, observation)

    def _save_frame(self, episode: int, step: int, frame: np.ndarray) -> None:
        directory = self.output_dir / RENDER_DIR / f"episode_{episode:03d}"
        if self.frames_saved == 0:
            print(f"render: no display, saving frames under {self.output_dir / RENDER_DIR}", file=sys.stderr)
        directory.mkdir(parents=True, exist_ok=True)
        write_png(directory / f"step_{step:05d}.png", frame)
        self.frames_saved += 1

    def _print_step(self, episode: int, step: int, action: Any, reward: float | None,
                    observation: Any) -> None:
        parts = [f"episode {episode} step {step}"]
        if action is not None:
            parts.append(f"action={_short(action)}")
        if reward is not None:
            parts.append(f"reward={_short(reward)}")
        parts.append(f"observation={_short(observation)}")
        print(" ".join(parts), file=self.stream or sys.stdout)
