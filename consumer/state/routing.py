"""Single-slot Lua scripts on one Redis or a Redis Cluster, optionally replicated before they return.

Every script call's keys share one hash slot (the key layouts put all keys of a subject under
one {hash tag}); in a cluster that is checked here, not assumed. Calls are grouped by the
master that owns their slot and sent as one plain pipeline per master, not through redis-py's
cluster pipeline, for two guarantees the counters rest on:
  - a plain pipeline runs on one connection, so a trailing WAIT covers exactly the writes before it;
  - it reloads scripts the node lacks (a promoted replica starts with an empty script cache).
A moved slot, a failover in progress or a WAIT that falls short raises a TRANSIENT error after
the slot map is refreshed; the caller retries the whole batch, which the fences make exact.
So does a script cache emptied between the pipeline's load check and its exec (SCRIPT FLUSH,
a failover just then): NOSCRIPT, and the retry loads the scripts again.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster, key_slot
from redis.commands.core import Script
from redis.exceptions import AskError, ClusterDownError, ClusterError, MasterDownError, MovedError, NoScriptError, RedisClusterException, TryAgainError


class NotReplicated(redis.RedisError):
    """WAIT returned before enough replicas held the writes."""


# A cluster says these while it fails over or reshards (RedisClusterException: no reachable node or
# uncovered slot, from redis-py itself): back off and retry, like a connection error.
TOPOLOGY = (MovedError, AskError, ClusterDownError, TryAgainError, MasterDownError, ClusterError, RedisClusterException)
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError, *TOPOLOGY, NotReplicated, NoScriptError)


@dataclass(frozen=True)
class Replication:
    """WAIT for `replicas` replicas (at most `timeout_ms`) after each master's writes; 0 = don't wait."""

    replicas: int = 0
    timeout_ms: int = 1000


ScriptCall = tuple[list[str], list]  # (keys, args)


class ScriptRunner:
    def __init__(self, client: redis.Redis | RedisCluster, replication: Replication = Replication()) -> None:
        self.client = client
        self.replication = replication
        self.cluster = isinstance(client, RedisCluster)

    def _node(self, keys: list[str]) -> redis.Redis:
        if not self.cluster:
            return self.client
        slots = {key_slot(key.encode()) for key in keys}
        if len(slots) != 1:
            raise ValueError(f"script keys span {len(slots)} hash slots: {keys[:3]}")  # a key-layout bug, never data
        return self.client.get_redis_connection(self.client.nodes_manager.get_node_from_slot(slots.pop()))

    def refresh(self) -> None:
        """Re-read the slot map (a failover moved slots) so the retry is routed anew; best effort."""
        try:
            self.client.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException):
            pass  # no node answers yet: the next retry refreshes again

    def run(self, script: Script, calls: list[ScriptCall]) -> list:
        """Every call's reply, in order; one round trip per master holding any of the calls' slots."""
        groups: dict[int, tuple[redis.Redis, list[int]]] = {}
        for i, (keys, _) in enumerate(calls):
            node = self._node(keys)
            groups.setdefault(id(node), (node, []))[1].append(i)
        replies: list = [None] * len(calls)
        wait = self.replication.replicas
        for node, indexes in groups.values():
            pipe = node.pipeline(transaction=False)
            for i in indexes:
                keys, args = calls[i]
                script(keys=keys, args=args, client=pipe)
            if wait:
                pipe.wait(wait, self.replication.timeout_ms)
            try:
                out = pipe.execute()
            except (redis.ConnectionError, redis.TimeoutError, *TOPOLOGY):
                if self.cluster:
                    self.refresh()
                raise
            if wait and out[-1] < wait:
                raise NotReplicated(f"WAIT: {out[-1]} of {wait} replicas acknowledged within {self.replication.timeout_ms} ms")
            for i, reply in zip(indexes, out):
                replies[i] = reply
        return replies
