"""The ``evaluation`` map of an evaluate job (docs/jobs.md, "Evaluate jobs"): every field checked, each
mistake named (``evaluation.gamma: expected a discount in (0, 1], got 2``).

Only the form is checked here, as a client can: the policy is a published one by name (never a path), the
dataset a string. Whether that version is published and where the dataset lies is the job worker's check
(``worker.jobs.guard``), against its artifact root.

>>> decode_evaluation({"policy": "published:cartpole@3", "dataset": "cartpole/logged-v0"}, "e").bootstrap
500
>>> decode_evaluation({"policy": "runs/ppo", "dataset": "x"}, "e")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
worker.jobs.decode_error.JobDecodeError: evaluation.policy: expected published:NAME@VERSION or ...
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

from worker.jobs.decode_error import JobDecodeError
from worker.jobs.schema import EVALUATION_METHODS, MAX_BOOTSTRAP, MAX_FQE_STEPS, MAX_SEED, EvaluationSpec
from worker.wire.checks import MISSING, describe

FIELD = "evaluation"
PUBLISHED_PATTERN = re.compile(r"published:([A-Za-z0-9][A-Za-z0-9._-]{0,63})(?:@([1-9][0-9]{0,8}))?")
"""A published policy by name (the name pattern of ``publish_policy``) and, optionally, version."""
MAX_DATASET_LENGTH = 1000
KEYS = tuple(spec_field.name for spec_field in fields(EvaluationSpec))
DEFAULTS = EvaluationSpec("", "")


def published_policy(text: str) -> tuple[str, int | None]:
    """The name and version (None: the latest) of a checked ``published:NAME[@VERSION]``."""
    match = PUBLISHED_PATTERN.fullmatch(text)
    assert match is not None, "checked by decode_evaluation"
    return match[1], None if match[2] is None else int(match[2])


def decode_evaluation(value: Any, job_id: str) -> EvaluationSpec:
    """An EvaluationSpec from the decoded ``evaluation`` map; raises JobDecodeError naming the field."""
    if not isinstance(value, dict):
        raise JobDecodeError(FIELD, f"{FIELD}: expected a map with policy and dataset (an evaluate job "
                                    f"needs one), got {describe(value)}", job_id)
    unknown = [key for key in value if key not in KEYS]
    if unknown:
        raise JobDecodeError(FIELD, f"{FIELD}: expected only the keys {', '.join(KEYS)}, got "
                                    f"{describe(unknown[0])}", job_id)

    def fail(name: str, expected: str) -> JobDecodeError:
        return JobDecodeError(f"{FIELD}.{name}", f"{FIELD}.{name}: expected {expected}, got "
                                                 f"{describe(value.get(name, MISSING))}", job_id)

    policy = value.get("policy")
    if type(policy) is not str or not PUBLISHED_PATTERN.fullmatch(policy):
        raise fail("policy", "published:NAME@VERSION or published:NAME (the latest version): a policy "
                             "published under the job workers' artifact root, never a run directory")
    dataset = value.get("dataset")
    if type(dataset) is not str or not 0 < len(dataset) <= MAX_DATASET_LENGTH \
            or any(ord(char) < 32 for char in dataset):
        raise fail("dataset", "a Minari dataset (a path inside the job workers' artifact root, or an id such "
                              "as cartpole/logged-v0 under its datasets/) or stream:PREFIX")

    def number(name: str, expected: str, accept: Callable[[float], bool]) -> Any:
        item = value.get(name)
        if item is None:
            return getattr(DEFAULTS, name)
        if type(item) not in (int, float) or not math.isfinite(item) or not accept(item):
            raise fail(name, expected)
        return item

    methods = value.get("methods")
    if methods is None:
        methods = EVALUATION_METHODS
    elif (not isinstance(methods, list | tuple) or not methods or len(set(methods)) != len(methods)
            or not all(type(method) is str and method in EVALUATION_METHODS for method in methods)):
        raise fail("methods", f"a non-empty list of distinct estimators from {list(EVALUATION_METHODS)}")
    return EvaluationSpec(
        policy=policy, dataset=dataset,
        gamma=float(number("gamma", "a discount in (0, 1]", lambda x: 0 < x <= 1)),
        bootstrap=number("bootstrap", f"an integer number of resamples in [2, {MAX_BOOTSTRAP}]",
                         lambda x: type(x) is int and 2 <= x <= MAX_BOOTSTRAP),
        seed=number("seed", f"an integer in [0, {MAX_SEED}]",
                    lambda x: type(x) is int and 0 <= x <= MAX_SEED),
        level=float(number("level", "an interval coverage in (0, 1)", lambda x: 0 < x < 1)),
        methods=tuple(methods),
        epsilon=_optional_float(number("epsilon", "nil or a probability floor in (0, 1)",
                                       lambda x: 0 < x < 1)),
        fqe_steps=number("fqe_steps", f"nil or an integer number of gradient steps in [1, {MAX_FQE_STEPS}]",
                         lambda x: type(x) is int and 1 <= x <= MAX_FQE_STEPS))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def evaluation_plain(spec: EvaluationSpec) -> dict[str, Any]:
    """The wire (and ``spec.json``) form of ``spec``; ``decode_evaluation`` reads it back."""
    plain = asdict(spec)
    plain["methods"] = list(spec.methods)
    return {key: item for key, item in plain.items() if item is not None}
