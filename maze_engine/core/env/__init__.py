"""The env hierarchy: CoreEnv (simulation in maze_state/maze_action) -> MazeEnv (policy spaces) -> wrappers.
"""
