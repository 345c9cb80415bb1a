"""The event-log format: one tab-separated file per event name, one row per event.

Columns are ``episode_id``, ``step`` (0 for the first step after a reset), then the event's attribute names.
Numbers and booleans are written as JSON scalars, other non-text values (lists, arrays, maps) as JSON, and
text as is unless it would read back as something else (then it is JSON-quoted). ``read_event_logs``
reverses this. Several processes may append to the same directory: each flush is a single append of whole
rows, and a file appears only together with its header.
"""

import csv
import io
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

from maze_engine.core.errors import MazeError
from maze_engine.core.events import EventRecord
from maze_engine.core.spaces import to_plain

SUFFIX = ".tsv"
FIXED_COLUMNS = ("episode_id", "step")
# Text starting with one of these could parse as JSON, so it is quoted when written.
_JSON_START = frozenset('"{[-0123456789tfnNI \t\r\n')


class EventLogError(MazeError):
    """An event does not fit the event log it is written to."""


def encode_value(value: Any) -> str:
    """One attribute value as a cell."""
    if isinstance(value, str):
        if value and value[0] not in _JSON_START:
            return value
        try:
            json.loads(value)
        except ValueError:
            return value if value else '""'
        return json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return json.dumps(float(value))
    return json.dumps(to_plain(value), default=str)


def decode_value(cell: str) -> Any:
    """The value of a cell written by ``encode_value`` (an empty cell: an attribute the event lacked)."""
    if not cell:
        return None
    if cell[0] not in _JSON_START:
        return cell
    try:
        return json.loads(cell)
    except ValueError:
        return cell


def event_log_path(directory: str | os.PathLike[str], event_name: str) -> Path:
    """The file of ``event_name`` in ``directory`` (the name percent-encoded where unsafe in file names)."""
    return Path(directory) / f"{quote(event_name, safe='')}{SUFFIX}"


def _row_text(rows: Iterable[list[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter="\t", lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _check_header(path: str | os.PathLike[str], header: list[str] | None) -> list[str]:
    if not header or tuple(header[:2]) != FIXED_COLUMNS:
        raise EventLogError(f"{os.fspath(path)}: expected a header starting with {list(FIXED_COLUMNS)}, "
                            f"got {header}")
    return header


def _append(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _EventFile:
    """An open event-log file: its columns and an append-only descriptor."""

    def __init__(self, path: Path, attributes: list[str]) -> None:
        if not path.exists():
            # Header first in a private file, then linked into place: the file never exists without it.
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
            temporary.write_bytes(_row_text([[*FIXED_COLUMNS, *attributes]]))
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process created it first; its header is used below
            finally:
                temporary.unlink()
        with path.open(encoding="utf-8", newline="") as file:
            header = _check_header(path, next(csv.reader(file, delimiter="\t"), None))
        self.path = path
        self.attributes = header[2:]
        self._known = set(self.attributes)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.rows: list[list[Any]] = []

    def add(self, episode_id: str, step: int, event: EventRecord) -> None:
        attributes = event.attributes
        for name in attributes:
            if name not in self._known:
                raise EventLogError(f"event {event.name!r}: attribute {name!r} is not a column of "
                                    f"{self.path} (columns {self.attributes}); an event name needs one set "
                                    "of attributes")
        self.rows.append([episode_id, step, *(encode_value(attributes[name]) if name in attributes else ""
                                              for name in self.attributes)])

    def flush(self) -> None:
        if self.rows:
            _append(self.fd, _row_text(self.rows))
            self.rows.clear()

    def close(self) -> None:
        self.flush()
        os.close(self.fd)


class EventLogWriter:
    """Buffers event rows in memory and appends them to ``<directory>/<event name>.tsv`` on ``flush``."""

    def __init__(self, directory: str | os.PathLike[str], max_buffered_rows: int = 10_000) -> None:
        self.directory = Path(directory)
        self.max_buffered_rows = max_buffered_rows
        self._files: dict[str, _EventFile] = {}
        self._buffered = 0

    def add(self, episode_id: str, step: int, event: EventRecord) -> None:
        """Buffer one event of step ``step`` in episode ``episode_id``."""
        file = self._files.get(event.name)
        if file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            file = self._files[event.name] = _EventFile(event_log_path(self.directory, event.name),
                                                        list(event.attributes))
        file.add(episode_id, step, event)
        self._buffered += 1
        if self._buffered >= self.max_buffered_rows:
            self.flush()

    def flush(self) -> None:
        """Append every buffered row to its file."""
        for file in self._files.values():
            file.flush()
        self._buffered = 0

    def close(self) -> None:
        """Flush and close the files (a later ``add`` opens them again)."""
        for file in self._files.values():
            file.close()
        self._files.clear()
        self._buffered = 0


def read_event_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of one event-log file, values decoded (``step`` as int, ``episode_id`` as text)."""
    with Path(path).open(encoding="utf-8", newline="") as file:
        reader = csv.reader(file, delimiter="\t")
        header = _check_header(path, next(reader, None))
        attributes = header[2:]
        return [{"episode_id": cells[0], "step": int(cells[1]),
                 **{name: decode_value(cell) for name, cell in zip(attributes, cells[2:], strict=True)}}
                for cells in reader]


def read_event_logs(directory: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Every event log under ``directory`` (subfolders merged): event name -> rows in file order.

    >>> import tempfile
    >>> from maze_engine import EventRecord
    >>> writer = EventLogWriter(tempfile.mkdtemp())
    >>> writer.add("episode-1", 0, EventRecord("reward", {"value": 1.5, "tags": ["a"]}))
    >>> writer.close()
    >>> read_event_logs(writer.directory)
    {'reward': [{'episode_id': 'episode-1', 'step': 0, 'value': 1.5, 'tags': ['a']}]}
    """
    if not Path(directory).is_dir():
        raise EventLogError(f"directory: {os.fspath(directory)!r} does not exist")
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(directory).rglob(f"*{SUFFIX}")):
        logs.setdefault(unquote(path.name[:-len(SUFFIX)]), []).extend(read_event_log(path))
    return logs
