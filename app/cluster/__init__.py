"""Several gateway instances on one Redis (SPEC §16): the optional extra ``[cluster]``.

``ClusterNode`` (``node``) is this instance's membership; ``ClusterDirectory`` (``directory``)
is the run service's view of runs on other instances; ``runlog`` mirrors run logs to Redis
Streams. Nothing here is imported without ``agent.cluster.redis-url``.
"""

from app.cluster.directory import ClusterDirectory
from app.cluster.node import ClusterNode

__all__ = ["ClusterDirectory", "ClusterNode"]
