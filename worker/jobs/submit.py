"""The ``maze-worker submit`` and ``maze-worker jobs`` commands, on ``JobClient`` (``worker.client.jobs``, the
pika side, re-exported here for Python callers).

    maze-worker submit train env.name=CartPole-v1 algorithm.n_epochs=5 --wait
    maze-worker submit evaluate --policy published:cartpole@3 --dataset stream:maze --wait
    maze-worker jobs status <job id>
    maze-worker jobs cancel <job id>
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.client.jobs import JobClient, JobClientError
from worker.experience.evaluate import add_estimation_arguments, estimation_options
from worker.jobs.codec import JobDecodeError, new_job
from worker.jobs.records import JobRecords
from worker.jobs.schema import JobEvent, JobMessage, JobResult
from worker.wire import topology

__all__ = ["JobClient", "JobClientError", "default_job_id", "job_status", "jobs_command", "jobs_parser",
           "submit_command", "submit_parser"]

ARTIFACT_ROOT_ENV = "MAZE_ARTIFACT_ROOT"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
"""Ctrl-C while waiting (the shell's code for SIGINT): the job itself goes on."""
IDLE_WARNING_S = 5.0
"""Waiting this long without an event makes ``submit --wait`` look for a job worker on the queue."""


def default_job_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


# ----------------------------------------------------------------------------------------------- the CLI

def _broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="broker URL (default: $MAZE_AMQP_URL, else the local "
                                                    "broker)")
    parser.add_argument("--prefix", default=topology.DEFAULT_PREFIX, help="topology prefix (default: maze)")


def submit_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maze-worker submit", description="Submit a training, rollout or evaluate job to the job "
        "workers. Overrides (train, rollout) are plain key=value settings of the config tree (docs/jobs.md, "
        "\"What a job message may ask\"); an evaluate job takes the evaluate options instead.",
        epilog="examples: maze-worker submit train env.name=CartPole-v1 algorithm.n_epochs=5 --wait; "
               "maze-worker submit evaluate --policy published:cartpole@3 --dataset stream:maze --wait")
    parser.add_argument("kind", choices=list(topology.JOB_KINDS),
                        help="the job kind: train, rollout, or evaluate (off-policy evaluation of a "
                             "published policy on logged episodes, docs/evaluation.md)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. algorithm=ppo runner.n_envs=2")
    parser.add_argument("--config", default=None, help="config name (default: conf_train / conf_rollout)")
    parser.add_argument("--job-id", default=None, help="job id, the idempotency key (default: generated)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="S",
                        help="stop the job after S seconds (it fails with time_limit)")
    parser.add_argument("--publish-policy", default=None, metavar="NAME",
                        help="train: publish the trained policy under NAME when it finishes")
    parser.add_argument("--force", action="store_true",
                        help="with --publish-policy: publish even when the published version's recorded "
                             "evaluation return is better")
    parser.add_argument("--canary", type=float, default=None, metavar="SHARE",
                        help="with --publish-policy: release the new version as a canary to SHARE of new "
                             "episodes (0 < SHARE < 1)")
    parser.add_argument("--auto", action="store_true",
                        help="with --canary: the workers promote or roll back the canary (docs/worker.md)")
    parser.add_argument("--min-episodes", type=int, default=None, metavar="N",
                        help="with --auto: finished episodes on each side before deciding (default 50)")
    parser.add_argument("--shadow", action="store_true",
                        help="with --publish-policy: run the new version in shadow beside the stable one "
                             "instead of serving it (docs/worker.md)")
    parser.add_argument("--chunks", type=int, default=None, metavar="N",
                        help="rollout: split into N chunk jobs run by any job workers, results merged")
    evaluate = parser.add_argument_group(
        "evaluate", "an evaluate job's options; the job workers' defaults are those shown (docs/jobs.md)")
    evaluate.add_argument("--policy", default=argparse.SUPPRESS, metavar="published:NAME[@VERSION]",
                          help="the published policy to evaluate, under the job workers' artifact root "
                               "(without @VERSION: the latest version)")
    evaluate.add_argument("--dataset", default=argparse.SUPPRESS, metavar="DATASET",
                          help="a Minari dataset (a path inside the job workers' artifact root, or an id "
                               "under <artifact_root>/datasets/), or stream:PREFIX (the experience stream)")
    add_estimation_arguments(evaluate, omit_defaults=True)
    parser.add_argument("--wait", action="store_true", help="show progress and print the result")
    parser.add_argument("--timeout", type=float, default=24 * 3600.0, metavar="S",
                        help="with --wait: give up after S seconds (default: a day)")
    _broker_arguments(parser)
    return parser


def submit_command(argv: Sequence[str]) -> int:
    """``maze-worker submit``: the exit code (0 submitted or finished, 1 failed/cancelled, 2 usage)."""
    parser = submit_parser()
    args = parser.parse_intermixed_args(list(argv))
    evaluation = {name: getattr(args, name) for name in ("policy", "dataset") if hasattr(args, name)}
    evaluation.update(estimation_options(args))
    try:
        job = new_job(args.job_id or default_job_id(args.kind), args.kind, args.overrides, config=args.config,
                      time_limit_s=args.time_limit, publish_policy=args.publish_policy, chunks=args.chunks,
                      force_publish=args.force, canary=args.canary, canary_auto=args.auto,
                      canary_min_episodes=args.min_episodes, shadow=args.shadow,
                      evaluation=evaluation or ({} if args.kind == "evaluate" else None))
    except JobDecodeError as err:
        parser.error(err.message)
    try:
        with JobClient(args.url, args.prefix) as client:
            if args.wait:
                client.watch(job.job_id)
            client.submit(job)
            print(f"submitted {job.kind} job {job.job_id}", file=sys.stderr, flush=True)
            if not args.wait:
                print(job.job_id)
                return EXIT_OK
            result = _wait_with_progress(client, job, args.timeout)
    except JobClientError as err:
        print(f"maze-worker submit: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\ninterrupted: job {job.job_id} stays submitted; follow it with `maze-worker jobs status "
              f"{job.job_id}` or cancel it with `maze-worker jobs cancel {job.job_id}`", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps(result.to_plain(), indent=1, sort_keys=True))
    return EXIT_OK if result.status == "finished" else EXIT_FAILED


def _wait_with_progress(client: JobClient, job: JobMessage, timeout: float) -> JobResult:
    from tqdm import tqdm

    unit = {"train": "epoch", "rollout": "chunk"}.get(job.kind, "job")
    bar = tqdm(desc=job.job_id, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def on_event(event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == JobEvent.EPOCH:
            bar.total = event.get("epochs") or bar.total
            bar.n = int(event.get("epoch") or 0)
            eval_return = (((event.get("stats") or {}).get("eval") or (event.get("stats") or {}).get("train")
                            or {}).get("episode_return") or {}).get("mean")
            if eval_return is not None:
                bar.set_postfix(episode_return=f"{eval_return:.2f}")
            bar.refresh()
        elif name == JobEvent.CHUNK:
            bar.total = event.get("chunks")
            bar.n = int(event.get("done") or 0)
            bar.refresh()
        elif name in (JobEvent.ACCEPTED, JobEvent.STARTED):
            if event.get("chunks"):
                bar.total = event["chunks"]
            bar.set_description(f"{job.job_id} {name}")

    started = time.monotonic()
    heard: list[bool] = []
    warned: list[bool] = []

    def on_tick() -> None:
        """Say so, once, when nothing has been heard for a while and no job worker consumes the queue."""
        if heard or warned or time.monotonic() - started < IDLE_WARNING_S:
            return
        warned.append(True)
        if client.consumers(job.kind) == 0:
            queue = topology.jobs_queue(client.prefix, job.kind)
            bar.write(f"maze-worker submit: no job worker consumes {queue} yet; the job waits there until "
                      f"one starts (`maze-worker role=jobs broker.prefix={client.prefix}`). Ctrl-C stops "
                      "waiting, not the job.", file=sys.stderr)

    def on_any_event(event: dict[str, Any]) -> None:
        heard.append(True)
        on_event(event)

    try:
        return client.wait(job.job_id, timeout, on_any_event, on_tick)
    finally:
        bar.close()


def jobs_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maze-worker jobs", description="Look at and cancel jobs.")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="print a job's record and result from the artifact root")
    status.add_argument("job_id")
    status.add_argument("--artifact-root", default=os.environ.get(ARTIFACT_ROOT_ENV, "artifacts"),
                        help="the job workers' artifact root (default: $MAZE_ARTIFACT_ROOT, else "
                             "./artifacts)")
    cancel = commands.add_parser("cancel", help="cancel a queued or running job (via <prefix>.control)")
    cancel.add_argument("job_id")
    cancel.add_argument("--reason", default="", help="recorded in the cancelled result")
    _broker_arguments(cancel)
    return parser


def job_status(artifact_root: str | Path, job_id: str) -> dict[str, Any]:
    """What the artifact root knows about ``job_id``: ``{job_id, status, record, result}``."""
    records = JobRecords(artifact_root)
    record = records.record(job_id)
    result = records.result(job_id)
    status = (str(result.status) if result is not None else
              (record or {}).get("status") or "unknown")
    if records.cancellation(job_id) is not None and result is None:
        status = f"{status} (cancel requested)"
    return {"job_id": job_id, "status": status, "record": record,
            "result": None if result is None else result.to_plain(),
            "looked_in": str(records.job_dir(job_id).resolve())}


def jobs_command(argv: Sequence[str]) -> int:
    """``maze-worker jobs status|cancel``."""
    parser = jobs_parser()
    args = parser.parse_args(list(argv))
    try:
        if args.command == "status":
            info = job_status(args.artifact_root, args.job_id)
            print(json.dumps(info, indent=1, sort_keys=True))
            if info["record"] is None and info["result"] is None:
                print(f"maze-worker jobs: no record of job {args.job_id} under {info['looked_in']}; is "
                      f"--artifact-root (or ${ARTIFACT_ROOT_ENV}) the job workers' artifact_root?",
                      file=sys.stderr)
                return EXIT_FAILED
            return EXIT_OK
        with JobClient(args.url, args.prefix) as client:
            client.cancel(args.job_id, args.reason)
        print(f"cancel sent for job {args.job_id}", file=sys.stderr)
        return EXIT_OK
    except JobDecodeError as err:
        parser.error(err.message)
    except JobClientError as err:
        print(f"maze-worker jobs: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_USAGE
