"""Several gateway instances on one Redis (SPEC §16): the optional extra ``[cluster]``.

``ClusterNode`` (``node``) is this instance's membership; ``ClusterDirectory`` (``directory``)
is the run service's view of runs on other instances; ``runlog`` mirrors run logs to Redis
Streams; ``RedisCounters`` (``counters``) keeps the limits' windows cluster-wide;
``ClusterSchedules`` (``schedules``) fires each scheduled job once and shares schedules.json.
Nothing here is imported without ``agent.cluster.redis-url``.
"""

from app.cluster.counters import RedisCounters
from app.cluster.directory import ClusterDirectory
from app.cluster.node import ClusterNode
from app.cluster.schedules import ClusterSchedules

__all__ = ["ClusterDirectory", "ClusterNode", "ClusterSchedules", "RedisCounters"]
