"""The producer side: publish states, get actions (``MazeClient``), submit jobs (``JobClient``); needs only
pika, msgpack and numpy.

``import worker.client`` loads neither gymnasium, torch nor hydra (a test holds it so).
"""

from worker.client.errors import (
    BadMessage,
    ClientTimeout,
    ConnectionFailed,
    ConnectionLost,
    EpisodeLost,
    InternalError,
    JobClientError,
    MazeClientError,
    OutOfOrder,
    Overloaded,
    ReplyError,
    TopologyMissing,
    UnknownEpisode,
    Unroutable,
)
from worker.client.jobs import JobClient
from worker.client.maze_client import Episode, MazeClient

__all__ = ["BadMessage", "ClientTimeout", "ConnectionFailed", "ConnectionLost", "Episode", "EpisodeLost",
           "InternalError", "JobClient", "JobClientError", "MazeClient", "MazeClientError", "OutOfOrder",
           "Overloaded", "ReplyError", "TopologyMissing", "UnknownEpisode", "Unroutable"]
