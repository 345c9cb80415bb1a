"""The child process of a job: ``python -m worker.jobs.child <job_dir>`` runs one training, rollout or
off-policy evaluation.

It runs ``maze-run``'s code path (``compose_config`` then ``build_training``/``rollout_from_config``), or
``maze-worker experience evaluate``'s (``evaluate_policy``), on the spec the job worker wrote to
``<job_dir>/spec.json``, with the output in ``<job_dir>/output``. Progress goes to ``progress.jsonl`` (one
JSON line per training epoch), the outcome to ``outcome.json``: the statistics summary (an evaluation's
report), or an error ``{code, message}``. Exit status 0: done; 2: a config error or data an evaluation
refuses (never retried); 1: any other failure. Whatever else happens to the process (a signal, the OOM
killer) the parent sees as a crash.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from worker.jobs.records import PROGRESS_FILE, SPEC_FILE, write_json_atomic
from worker.jobs.schema import JobErrorCode, finite_plain
from worker.settings import BrokerSettings, TLSSettings

OUTCOME_FILE = "outcome.json"
EVALUATION_FILE = "evaluation.json"
BROKER_ENV = "MAZE_JOB_BROKER"
"""The job worker's broker settings (JSON) for an evaluate job that reads ``stream:PREFIX``: passed in the
child's environment, never written to the job directory (the URL may hold a password)."""
STREAM_IDLE_S = 1.0
"""A ``stream:`` dataset ends after this long without a record (as ``dataset=stream:`` of a training job)."""
JOB_FIELDS = ("evaluation.policy", "evaluation.dataset")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_ORPHANED = 3

EPOCH_SECTIONS = ("train", "eval", "time")
"""Sections of a training epoch's statistics sent as progress (the learner's losses stay in stats.tsv)."""


class ProgressTee:
    """A TrainingReporter stand-in that passes everything on and appends each epoch to the progress file."""

    def __init__(self, reporter: Any, stream: IO[str], n_epochs: int) -> None:
        self._reporter = reporter
        self._stream = stream
        self._n_epochs = n_epochs

    def write_epoch(self, epoch: int, sections: Mapping[str, Any]) -> None:
        self._reporter.write_epoch(epoch, sections)
        stats = {name: sections[name] for name in EPOCH_SECTIONS if name in sections}
        line = {"event": "epoch", "epoch": epoch + 1, "epochs": self._n_epochs, "stats": finite_plain(stats)}
        self._stream.write(json.dumps(line, allow_nan=False) + "\n")
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reporter, name)


def run_training(cfg: Any, output_dir: Path, progress: IO[str]) -> dict[str, Any]:
    """Train as ``maze-run -cn conf_train`` would, reporting epochs; returns the summary."""
    from maze_engine.training.checkpoint import CHECKPOINT_FILE
    from maze_engine.training.launch import build_training

    # The job worker keeps an earlier attempt's output only when its checkpoint lets training go on.
    resume = output_dir if (output_dir / CHECKPOINT_FILE).is_file() else None
    run = build_training(cfg, output_dir, silent=True, resume=resume)
    run.trainer.reporter = ProgressTee(run.trainer.reporter, progress,  # type: ignore[assignment]
                                       int(run.trainer.config.n_epochs))
    try:
        last = run.train()
    finally:
        run.close()
    section = "eval" if "eval" in last else "train"
    last_return = last.get(section, {}).get("episode_return", {}).get("mean")
    best = run.model_selection.best_score
    return {"epochs": int(run.trainer.epoch), "selected_by": section,
            "last_eval_return": _number(last_return),
            "best_eval_return": _number(best),
            "last_train_return": _number(last.get("train", {}).get("episode_return", {}).get("mean"))}


def run_rollout(cfg: Any, output_dir: Path) -> dict[str, Any]:
    """Roll out as ``maze-run`` would (console output off); returns the summary."""
    from omegaconf import OmegaConf

    from maze_engine.rollout.launch import rollout_from_config

    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    if isinstance(config.get("runner"), dict):
        config["runner"]["silent"] = True
    statistics = rollout_from_config({str(key): value for key, value in config.items()}, output_dir)
    return {"statistics": finite_plain(statistics)}


def run_evaluation(spec: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Estimate as ``maze-worker experience evaluate --json`` would, on what the job worker vetted; returns
    the report (the summary), also written to ``evaluation.json`` in the output."""
    from worker.experience.evaluate import StreamSource, evaluate_policy
    from worker.jobs.evaluation_spec import decode_evaluation

    evaluation = decode_evaluation(spec["evaluation"], "")
    broker = broker_from_environment()
    stream = None if broker is None else StreamSource(broker, idle_s=STREAM_IDLE_S)
    report = evaluate_policy(**asdict(evaluation), artifact_root=spec.get("artifact_root"), stream=stream,
                             fields=JOB_FIELDS)
    write_json_atomic(output_dir / EVALUATION_FILE, finite_plain(report))
    return report


def broker_environment(settings: BrokerSettings) -> str:
    """``settings`` as the value of ``BROKER_ENV``."""
    return json.dumps(asdict(settings))


def broker_from_environment() -> BrokerSettings | None:
    raw = os.environ.get(BROKER_ENV)
    if not raw:
        return None
    values = json.loads(raw)
    return BrokerSettings(**{**values, "tls": TLSSettings(**values["tls"])})


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m worker.jobs.child <job_dir>", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    job_dir = Path(args[0])
    # The parent stops a job with SIGTERM: end through Python's exit path so files are closed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    _exit_with_parent()
    spec = json.loads((job_dir / SPEC_FILE).read_text(encoding="utf-8"))
    output_dir = Path(spec["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    from maze_engine.config import compose_config
    from maze_engine.core.errors import ConfigError, MazeError, SpaceMismatchError
    from worker.experience.evaluate import EvaluationRefused
    from worker.jobs.datasets import StreamDatasetError, export_stream_dataset

    try:
        _limit_threads(spec.get("torch_threads"))
        if spec["kind"] == "evaluate":
            summary = run_evaluation(spec, output_dir)
        else:
            cfg = compose_config(spec["config"], spec["overrides"])
            if spec["kind"] == "train":  # dataset=stream:<prefix>: exported here, off the job worker's loop
                export_stream_dataset(cfg, job_dir, broker_from_environment())
            with open(job_dir / PROGRESS_FILE, "a", encoding="utf-8") as progress:
                summary = (run_training(cfg, output_dir, progress) if spec["kind"] == "train"
                           else run_rollout(cfg, output_dir))
    except (EvaluationRefused, StreamDatasetError) as err:
        return _outcome(job_dir, EXIT_CONFIG_ERROR, error={"code": JobErrorCode.DATA, "message": str(err)})
    except (ConfigError, SpaceMismatchError) as err:
        return _outcome(job_dir, EXIT_CONFIG_ERROR, error={"code": "config", "message": str(err)})
    except MazeError as err:
        return _outcome(job_dir, EXIT_FAILED, error={"code": "crashed", "message": str(err)})
    except Exception as err:  # noqa: BLE001 - whatever the engine raises becomes the job's error
        traceback.print_exc()
        return _outcome(job_dir, EXIT_FAILED, error={"code": "crashed",
                                                     "message": f"{type(err).__name__}: {err}"})
    return _outcome(job_dir, EXIT_OK, summary=summary)


def _outcome(job_dir: Path, code: int, summary: dict[str, Any] | None = None,
             error: dict[str, str] | None = None) -> int:
    write_json_atomic(job_dir / OUTCOME_FILE, {"exit": code, "summary": summary or {}, "error": error})
    return code


def _exit_with_parent(interval_s: float = 1.0) -> None:
    """End this process (and, through its session, nothing else) when the job worker that started it dies.

    A worker killed with SIGKILL cannot stop its child; its job goes back to the queue when the lease lapses,
    so an orphaned run must not go on writing into the job's directory.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _limit_threads(threads: Any) -> None:
    if isinstance(threads, int) and threads > 0:
        import torch

        torch.set_num_threads(threads)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


if __name__ == "__main__":
    sys.exit(main())
