"""``maze-run``: the Hydra command line of the engine.

The default config ``conf_rollout`` rolls a policy out; ``-cn conf_train`` (any config with an ``algorithm``
node) trains one. Hydra reports mistyped overrides and config names itself; errors the engine raises for bad
config values are printed as one line with exit code 2 instead of a traceback.
"""

import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from maze_engine.config import CONFIG_PATH, HYDRA_VERSION_BASE, ROLLOUT_CONFIG, register_schemas
from maze_engine.core.errors import ConfigError, MazeError, SpaceMismatchError

EXIT_FAILURE = 1
EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130


def run_config(cfg: DictConfig) -> Any:
    """Dispatch a composed config: training when it has an ``algorithm`` node, a rollout otherwise."""
    if "algorithm" in cfg:
        # Imported here: rollouts should not pay for loading the training stack (torch, optimizers).
        from maze_engine.training.launch import train_from_config

        return train_from_config(cfg)
    from maze_engine.rollout.launch import rollout_from_config

    return rollout_from_config(cfg)


def _fail(message: str, code: int) -> None:
    print(f"maze-run: error: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(config_path=CONFIG_PATH, config_name=ROLLOUT_CONFIG, version_base=HYDRA_VERSION_BASE)
def _hydra_app(cfg: DictConfig) -> None:
    # SystemExit passes Hydra's handler (which catches Exception only), so these codes reach the shell.
    try:
        run_config(cfg)
    except (ConfigError, SpaceMismatchError) as err:
        _fail(str(err), EXIT_CONFIG_ERROR)
    except MazeError as err:
        _fail(str(err), EXIT_FAILURE)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)


def main() -> None:
    """Console entry point of ``maze-run`` (arguments come from ``sys.argv``, as Hydra expects)."""
    register_schemas()
    _hydra_app()


if __name__ == "__main__":
    main()
