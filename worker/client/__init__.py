"""The producer side: publish states, get actions (``MazeClient``); needs only pika, msgpack and numpy.

``import worker.client`` loads neither gymnasium, torch nor hydra (a test holds it so).
"""

from worker.client.errors import (
    BadMessage,
    ClientTimeout,
    ConnectionFailed,
    ConnectionLost,
    EpisodeLost,
    InternalError,
    MazeClientError,
    OutOfOrder,
    Overloaded,
    ReplyError,
    TopologyMissing,
    UnknownEpisode,
    Unroutable,
)
from worker.client.maze_client import Episode, MazeClient

__all__ = ["BadMessage", "ClientTimeout", "ConnectionFailed", "ConnectionLost", "Episode", "EpisodeLost",
           "InternalError", "MazeClient", "MazeClientError", "OutOfOrder", "Overloaded", "ReplyError",
           "TopologyMissing", "UnknownEpisode", "Unroutable"]
