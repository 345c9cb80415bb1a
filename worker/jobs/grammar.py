"""What a job override may look like: a plain ``key=value``, and nothing else Hydra would accept.

A job's overrides come from whoever can publish to the job queues, so they are held to a small grammar
(docs/jobs.md, "What a job message may ask")::

    override := key "=" value
    key      := name ("." (name | index))*        name: [A-Za-z_][A-Za-z0-9_]*, index: [0-9]+
    value    := scalar | "[" [scalar ("," scalar)*] "]"
    scalar   := plain | "'" quoted "'" | '"' quoted '"'
    plain    := [A-Za-z0-9_.:/+-]*                 (may be empty: ``input_dir=``)
    quoted   := printable characters but quotes, backslash and "$"

So there are no ``+``, ``~`` or ``++`` prefixes (no keys added or deleted), no ``@package``, no sweeps or
Hydra functions, no nested lists or maps, and no ``${...}`` interpolation anywhere (``${oc.env:...}`` would
put the worker's environment variables into the job and its error messages). Which keys a job may set and
what their values may say is ``worker.jobs.guard``'s business.

>>> parse_override("runner.n_episodes=10").value
10
>>> parse_override("env._target_=os.makedirs").key
'env._target_'
>>> parse_override("runner.n_episodes=${oc.env:HOME}")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
worker.jobs.grammar.OverrideSyntaxError: expected key=value ... '${...}' interpolations are refused
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeAlias

from worker.errors import WorkerError

Scalar: TypeAlias = str | int | float | bool | None
"""A parsed scalar value, typed the way Hydra types it (``10`` is an int, ``null`` is None)."""

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
KEY_PATTERN = re.compile(rf"{_NAME}(?:\.(?:{_NAME}|[0-9]+))*")
_PLAIN = r"[A-Za-z0-9_.:/+\-]*"
_QUOTED = r"'[^'\"\\$\x00-\x1f\x7f]*'" "|" r'"[^\'"\\$\x00-\x1f\x7f]*"'
_SCALAR = rf"(?:{_QUOTED}|{_PLAIN})"
_ITEM = rf"(?:{_QUOTED}|[A-Za-z0-9_.:/+\-]+)"
_LIST = rf"\[\s*(?:{_ITEM}\s*(?:,\s*{_ITEM}\s*)*)?\]"
VALUE_PATTERN = re.compile(rf"{_LIST}|{_SCALAR}")

PREFIXES = ("++", "+", "~")

EXPECTED_VALUE = ("expected key=value with a plain value (letters, digits and _ . : / + -), a quoted "
                  "string or a flat list of those")


class OverrideSyntaxError(WorkerError, ValueError):
    """An override is not a plain ``key=value``; the message says what was expected."""


@dataclass(frozen=True)
class Override:
    """One parsed job override."""

    text: str
    """The override as submitted."""
    key: str
    """The dotted key (``runner.n_episodes``) or a config group (``runner``)."""
    value: Scalar | list[Scalar]
    """The value as Hydra reads it."""

    @property
    def segments(self) -> list[str]:
        return self.key.split(".")


def parse_override(text: str) -> Override:
    """``text`` as an Override; raises OverrideSyntaxError unless it follows the grammar above."""
    if text.startswith(PREFIXES):
        raise OverrideSyntaxError("expected key=value; '+', '++' and '~' (adding or deleting keys) are "
                                  "refused")
    key, equals, raw = text.partition("=")
    if not equals:
        raise OverrideSyntaxError("expected key=value, got no '='")
    if "@" in key:
        raise OverrideSyntaxError("expected key=value; '@package' overrides are refused")
    if not KEY_PATTERN.fullmatch(key):
        raise OverrideSyntaxError("expected a dotted key of letters, digits and '_' (runner.n_episodes), "
                                  f"got {key[:60]!r}")
    if "$" in raw:
        raise OverrideSyntaxError(f"{EXPECTED_VALUE}; '$' and '${{...}}' interpolations are refused")
    if not VALUE_PATTERN.fullmatch(raw):
        raise OverrideSyntaxError(f"{EXPECTED_VALUE}, got {raw[:60]!r}")
    return Override(text, key, _hydra_value(text, key))


def render_override(key: str, value: str) -> str:
    """``key=value`` with ``value`` quoted where the plain form cannot hold it; raises OverrideSyntaxError
    for a value no quoted form of the grammar holds."""
    if re.fullmatch(_PLAIN, value) and value not in ("null", "true", "false") and not _numeric(value):
        return f"{key}={value}"
    quoted = f"'{value}'"
    if not re.fullmatch(_QUOTED, quoted):
        raise OverrideSyntaxError(f"a value with quotes, backslashes, '$' or control characters cannot be "
                                  f"passed on, got {value[:60]!r}")
    return f"{key}={quoted}"


def _numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


_parser: Any = None


def _hydra_value(text: str, key: str) -> Scalar | list[Scalar]:
    """The value as Hydra parses ``text``, checked to be a plain change of ``key`` to a scalar or a flat list.

    The grammar above is a subset of Hydra's; asking Hydra as well makes sure both read the same thing.
    """
    global _parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    if _parser is None:
        _parser = OverridesParser.create()
    try:
        (parsed,) = _parser.parse_overrides([text])
    except Exception as err:  # noqa: BLE001 - Hydra raises its own types; the text is the submitter's
        raise OverrideSyntaxError(f"{EXPECTED_VALUE}; Hydra cannot parse it ({type(err).__name__})") from None
    if (parsed.type is not OverrideType.CHANGE or parsed.package is not None or parsed.key_or_group != key
            or parsed.is_sweep_override()):
        raise OverrideSyntaxError(f"{EXPECTED_VALUE}; Hydra reads it as something else")
    value = parsed.value()
    items = value if isinstance(value, list) else [value]
    if not all(item is None or isinstance(item, str | int | float | bool) for item in items):
        raise OverrideSyntaxError(f"{EXPECTED_VALUE}; nested lists and maps are refused")
    return [_plain(item) for item in value] if isinstance(value, list) else _plain(value)


def _plain(value: Any) -> Scalar:
    # Hydra's QuotedString and similar are str subclasses: pass plain strings on.
    return str(value) if isinstance(value, str) else value
