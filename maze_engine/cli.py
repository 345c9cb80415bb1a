"""``maze-run``: the Hydra command line of the engine.

The default config ``conf_rollout`` rolls a policy out; ``-cn conf_train`` (any config with an ``algorithm``
node) trains one. Every mistake ends in one line on stderr: a config that does not compose gets
``config_check``'s explanation with a "did you mean" (exit code 2), errors the engine raises for bad config
values their own message (exit code 2). The run's log goes to ``cli.log`` in its output directory; a run that
fails before writing anything leaves no output directory behind.
"""

import io
import logging
import shutil
import sys
from contextlib import redirect_stderr
from pathlib import Path
from typing import IO, Any

import hydra
from omegaconf import DictConfig

from maze_engine.config import CONFIG_PATH, HYDRA_VERSION_BASE, ROLLOUT_CONFIG, register_schemas
from maze_engine.core.errors import ConfigError, MazeError, SpaceMismatchError

logger = logging.getLogger(__name__)

EXIT_FAILURE = 1
EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130
HYDRA_SUBDIR = ".hydra"


def run_config(cfg: DictConfig) -> Any:
    """Dispatch a composed config: training when it has an ``algorithm`` node, a rollout otherwise."""
    if "algorithm" in cfg:
        # Imported here: rollouts should not pay for loading the training stack (torch, optimizers).
        from maze_engine.training.launch import train_from_config

        return train_from_config(cfg)
    from maze_engine.rollout.launch import rollout_from_config

    return rollout_from_config(cfg)


class HeldStream:
    """Stands in for stderr while Hydra composes: what is written is held back until ``release``, so that
    Hydra's report of a config that does not compose can be replaced by a one-line explanation."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.held: io.StringIO | None = io.StringIO()

    def write(self, text: str) -> int:
        return (self.held if self.held is not None else self.stream).write(text)

    def flush(self) -> None:
        if self.held is None:
            self.stream.flush()

    def release(self, keep: bool = True) -> None:
        """Pass on (``keep``) or drop what was held; write through from now on."""
        if self.held is not None:
            text, self.held = self.held.getvalue(), None
            if keep and text:
                self.stream.write(text)
                self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


_stderr: HeldStream | None = None


def _start_run() -> None:
    """The config composed: stop holding stderr back."""
    global _stderr
    if _stderr is not None:
        sys.stderr = _stderr.stream
        _stderr.release()


def _fail(message: str, code: int, output_dir: Path | None) -> None:
    logger.error("%s", message)
    if output_dir is not None:
        discard_unused_output_dir(output_dir)
    print(f"maze-run: error: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(config_path=CONFIG_PATH, config_name=ROLLOUT_CONFIG, version_base=HYDRA_VERSION_BASE)
def _hydra_app(cfg: DictConfig) -> None:
    _start_run()
    output_dir = _output_dir()
    logger.info("maze-run %s (output directory %s)", " ".join(sys.argv[1:]), output_dir)
    # SystemExit passes Hydra's handler (which catches Exception only), so these codes reach the shell.
    try:
        run_config(cfg)
    except (ConfigError, SpaceMismatchError) as err:
        _fail(str(err), EXIT_CONFIG_ERROR, output_dir)
    except MazeError as err:
        _fail(str(err), EXIT_FAILURE, output_dir)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED, output_dir)
    except Exception:
        logger.exception("maze-run failed")
        if output_dir is not None:
            discard_unused_output_dir(output_dir)
        raise


def main() -> None:
    """Console entry point of ``maze-run`` (arguments come from ``sys.argv``, as Hydra expects)."""
    global _stderr
    register_schemas()
    _stderr = HeldStream(sys.stderr)
    sys.stderr = _stderr
    try:
        _hydra_app()
    except SystemExit as exit_:
        held = _stderr.held is not None
        sys.stderr = _stderr.stream
        if held and exit_.code not in (0, None):
            explanation = _explain(sys.argv[1:])
            if explanation is not None:
                _stderr.release(keep=False)
                print(f"maze-run: error: {explanation}", file=sys.stderr)
                sys.exit(EXIT_CONFIG_ERROR)
        raise
    finally:
        sys.stderr = _stderr.stream
        _stderr.release()
        _stderr = None


def _explain(args: list[str]) -> str | None:
    """``config_check``'s one-line reason why the command line's config does not compose, if it has one."""
    from hydra._internal.utils import get_args_parser

    from maze_engine.config_check import explain_config_error

    try:
        with redirect_stderr(io.StringIO()):
            parsed = get_args_parser().parse_args(args)
    except SystemExit:
        return None  # not a config problem: argparse's own message says what is wrong
    if parsed.config_path or parsed.multirun:
        return None
    return explain_config_error(parsed.config_name or ROLLOUT_CONFIG, parsed.overrides or [],
                                parsed.config_dir)


def _output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def discard_unused_output_dir(directory: Path) -> bool:
    """Remove ``directory`` if the run wrote nothing there besides Hydra's ``.hydra/`` and its log (empty
    folders aside), and then the folders above it under ``outputs/`` that are left empty; True if removed."""
    if not directory.is_dir():
        return False
    log_files = {Path(handler.baseFilename) for handler in _file_handlers()}
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if relative.parts[0] == HYDRA_SUBDIR or path in log_files:
            continue
        if not path.is_dir():
            return False
    for handler in _file_handlers():
        if Path(handler.baseFilename).is_relative_to(directory):
            handler.close()
            for owner in (logging.getLogger(), logger):
                owner.removeHandler(handler)
    shutil.rmtree(directory, ignore_errors=True)
    outputs = Path.cwd() / "outputs"
    if directory.resolve().is_relative_to(outputs.resolve()):
        for parent in directory.resolve().parents:
            if not parent.is_relative_to(outputs.resolve()):
                break
            try:
                parent.rmdir()
            except OSError:
                break
    return True


def _file_handlers() -> list[logging.FileHandler]:
    handlers = [*logging.getLogger().handlers, *logger.handlers]
    return [handler for handler in handlers if isinstance(handler, logging.FileHandler)]


if __name__ == "__main__":
    main()
