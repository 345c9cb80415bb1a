"""Packaging glue that pyproject.toml cannot express: the top-level conf/ tree ships as maze_engine.conf."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["maze_engine", "maze_engine.*", "worker", "worker.*"]),
              "maze_engine.conf"],
    package_dir={"maze_engine.conf": "conf"},
)
