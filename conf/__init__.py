"""The Hydra config tree, shipped as ``maze_engine.conf``.

Hydra imports this package before it reads any YAML file from it, so registering the dataclass schemas here
lets every entry point (maze-run, RunContext, a bare ``hydra.compose``) load YAML files that extend them.
"""

from maze_engine.config import register_schemas

register_schemas()
