"""Fixtures of the cluster tests (SPEC §16): one redis-server for the session; per module three
gateway processes on one deployment folder, a haproxy in front of them and the fake model they share.

The processes are shared by the module's tests (starting them is the slow part); each test uses
its own users (JWT ``sub``), chats, scripts and gates, so tests never see each other's runs.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.devtools import FakeUpstream
from tests.cluster.support import GatewayProcess, RedisServer, ScriptBook, free_port, proxy_config
from tests.security.support import ISSUER, KeyPair, ec_pair, mint
from tests.security.test_reverse_proxy import Haproxy
from tests.support.deployment import agent, make_deployment, write_agent

#: short, so that a lost instance is noticed quickly; long enough for a busy 2-core CI machine: the
#: heartbeat's TTL is 3/4 of it, and with fencing an instance whose loop stalls past that stops its runs
LEASE_SECONDS = 4.0
#: per-user caps of the deployment (SPEC §19), cluster-wide
USER_CONCURRENT_RUNS = 2
USER_RPM = 3
FRONTEND = {"backends": [], "frontends": ["confirm_dialog"], "actions": []}


@dataclass
class Cluster:
    """Three instances (``a``, ``b``, ``c``) behind ``proxy``, on ``redis``, answered by ``book``."""

    deploy: Path
    redis: RedisServer
    upstream: FakeUpstream
    book: ScriptBook
    key: KeyPair
    gateways: list[GatewayProcess]
    proxy: Haproxy
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def a(self) -> GatewayProcess:
        return self.gateways[0]

    @property
    def b(self) -> GatewayProcess:
        return self.gateways[1]

    @property
    def c(self) -> GatewayProcess:
        return self.gateways[2]

    def auth(self, user: str) -> dict[str, str]:
        """The ``Authorization`` header of ``user`` (a JWT signed with the deployment's key)."""
        if user not in self._tokens:
            self._tokens[user] = mint(self.key, user, exp_in=3600)
        return {"Authorization": f"Bearer {self._tokens[user]}"}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def _application_yml(upstream_url: str, redis_url: str, public_pem: str) -> str:
    pem = textwrap.indent(public_pem.strip(), " " * 8)
    return (
        "agent:\n"
        "  auth:\n    enabled: true\n"
        f"    issuer: {ISSUER}\n"
        f"    local-public-key: |\n{pem}\n"
        "  providers:\n"
        f"    fake:\n      base-url: {upstream_url}\n      api-key: sk-test-secret-key-123\n"
        "  llm:\n    interaction-log:\n      enabled: false\n"
        "  limits:\n    user:\n"
        f"      concurrent-runs: {USER_CONCURRENT_RUNS}\n      rpm: {USER_RPM}\n"
        "  runs:\n    retention-seconds: 300\n"
        "  cluster:\n"
        f"    redis-url: {redis_url}\n"
        f"    lease-seconds: {LEASE_SECONDS}\n"
        "    instance-name: ${AGW_INSTANCE:gw}\n"
    )


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    book = ScriptBook()
    work = tmp_path_factory.mktemp("cluster")
    with FakeUpstream(responder=book) as upstream:
        key = ec_pair("cluster-key")
        deploy = make_deployment(work / "deploy", upstream.url)
        (deploy / "application.yml").write_text(_application_yml(upstream.url, redis_server.url, key.public_pem),
                                                encoding="utf-8")
        write_agent(deploy, "plain", agent("ONESHOT"))
        write_agent(deploy, "asker", agent("REACT", tools=FRONTEND))
        gateways = [GatewayProcess(name, deploy, work).start() for name in ("a", "b", "c")]
        try:
            for gateway in gateways:
                gateway.wait_ready()
            port = free_port()
            with Haproxy(proxy_config(port, gateways), work, port) as proxy:
                yield Cluster(deploy, redis_server, upstream, book, key, gateways, proxy)
        finally:
            for gateway in gateways:
                gateway.stop()
