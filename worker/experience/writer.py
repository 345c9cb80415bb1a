"""Minari's HDF5 storage in a child process, so that reading the stream and writing the dataset overlap.

Creating an episode's groups and datasets in h5py is most of an export's time and holds the GIL, so a thread
would not overlap it with reading and decoding the stream; a forked child does, on another core. The parent
sends batches of Minari ``EpisodeBuffer``s with their episode metadata over a pipe (which also paces it), the
child appends them with ``MinariStorage.update_episodes`` and ``update_episode_metadata``, and answers
``finish`` with the number of episodes written, or the error. An export that fails or is abandoned removes
what the child wrote.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import shutil
from pathlib import Path
from typing import Any

from worker.errors import WorkerError


class DatasetWriteError(WorkerError):
    """The child process could not write the dataset; the message says why."""


class DatasetWriter:
    """A child process that writes one Minari dataset at ``path`` (``<out>/<id>/data``).

    Start it before opening any connection or thread: it is forked.
    """

    def __init__(self, path: Path, observation_space: Any, action_space: Any, env_spec: Any = None) -> None:
        context = multiprocessing.get_context("fork")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_serve, name="maze-export-writer", daemon=True,
                                        args=(child, path, observation_space, action_space, env_spec))
        self._process.start()
        child.close()

    def write(self, buffers: list[Any], metadata: list[dict[str, Any]]) -> None:
        """Append episodes (and their metadata) to the dataset; DatasetWriteError if the child failed."""
        try:
            self._pipe.send(("episodes", buffers, metadata))
        except OSError:  # the child is gone: its last words say why
            self._raise_reply()

    def finish(self, metadata: dict[str, Any]) -> int:
        """Add the dataset's metadata and close it; the episodes written (0: nothing was created)."""
        with contextlib.suppress(OSError):  # a child that failed already has its error waiting
            self._pipe.send(("finish", metadata))
        count = self._raise_reply()
        self._process.join(30)
        return count

    def abort(self) -> None:
        """Stop the child and remove what it wrote (nothing happens after ``finish``)."""
        if not self._process.is_alive():
            return
        with contextlib.suppress(OSError):
            self._pipe.send(("abort",))
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)

    def _raise_reply(self) -> int:
        try:
            kind, value = self._pipe.recv()
        except (EOFError, OSError):
            raise DatasetWriteError(f"the dataset writer process ended unexpectedly (exit code "
                                    f"{self._process.exitcode})") from None
        if kind == "error":
            raise DatasetWriteError(value)
        return int(value)


def _serve(pipe: Any, path: Path, observation_space: Any, action_space: Any, env_spec: Any) -> None:
    """The child: apply the parent's messages to the dataset until ``finish`` or ``abort``."""
    from minari.dataset.minari_storage import MinariStorage

    storage = None
    try:
        while True:
            message = pipe.recv()
            if message[0] == "episodes":
                _, buffers, metadata = message
                if storage is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    storage = MinariStorage.new(path, observation_space=observation_space,
                                                action_space=action_space, env_spec=env_spec,
                                                data_format="hdf5", jpeg_encoding=False)
                first = storage.total_episodes
                storage.update_episodes(buffers)
                storage.update_episode_metadata(metadata, range(first, first + len(buffers)))
            elif message[0] == "finish":
                if storage is not None:
                    storage.update_metadata(message[1])
                pipe.send(("ok", 0 if storage is None else storage.total_episodes))
                return
            else:
                _remove(path)
                return
    except EOFError:  # the parent went away
        _remove(path)
    except Exception as err:  # noqa: BLE001 - whatever failed is reported to the parent, by name
        _remove(path)
        pipe.send(("error", f"writing the dataset at {path} failed: {type(err).__name__}: {err}"))


def _remove(path: Path) -> None:
    """Remove a partly written dataset (``<out>/<id>/data`` and ``<out>/<id>`` when left empty)."""
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()
