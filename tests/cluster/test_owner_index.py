"""The per-owner run index (``agw:owner:<owner>:runs``, SPEC §16) against a real redis-server, through
``ClusterNode.admit_run`` itself (the admission script): it stays bounded for an owner who never lists."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.cluster import node as node_module
from app.cluster.keys import OWNER_INDEX_PRUNE
from app.cluster.node import ClusterNode
from app.config import ClusterSettings
from tests.cluster.support import RedisServer


@pytest.fixture
async def node(redis_server: RedisServer) -> AsyncIterator[ClusterNode]:
    cluster = ClusterNode(ClusterSettings.model_validate({"redis-url": redis_server.url, "instance-name": "idx"}),
                          retention_seconds=60)
    yield cluster
    await cluster.redis.aclose()


async def admit(node: ClusterNode, owner: str, run_id: str, started_at: int) -> None:
    code, _ = await node.admit_run(run_id, owner, f"chat-{run_id}", started_at, {"runId": run_id, "owner": owner},
                                   user_cap=1000, global_cap=1000)
    assert code == 0
    node.release_run(run_id)


async def test_an_owner_who_never_lists_keeps_a_bounded_run_index(
    node: ClusterNode, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = "index-bot"
    index = f"agw:owner:{owner}:runs"
    with redis_server.client() as redis_client:
        # 60 runs whose records expired long ago (nobody listed them)
        redis_client.zadd(index, {f"run_stale{i}": i for i in range(60)})
        for i in range(60 // OWNER_INDEX_PRUNE + 1):
            await admit(node, owner, f"run_live{i}", 1000 + i)
        assert sorted(m.decode() for m in redis_client.zrange(index, 0, -1)) == \
            sorted(f"run_live{i}" for i in range(60 // OWNER_INDEX_PRUNE + 1))
        # and however many live records there are, the index keeps the newest OWNER_INDEX_MAX
        monkeypatch.setattr(node_module, "OWNER_INDEX_MAX", 3)
        await admit(node, owner, "run_newest", 5000)
        assert [m.decode() for m in redis_client.zrange(index, 0, -1)] == [
            f"run_live{60 // OWNER_INDEX_PRUNE - 1}", f"run_live{60 // OWNER_INDEX_PRUNE}", "run_newest"]
