"""``Gateway``: the core both the HTTP app and the sidecar build in their lifespan.

It owns every long-lived object — settings, the catalog manager (hot reload), the
shared httpx client, chat memory, pending frontend submissions, live runs, and the
embedded local model when a provider asks for it — and closes them in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from app import __version__
from app.catalog.manager import CatalogManager
from app.collector import CollectorTuning
from app.config import EMBEDDED_BASE_URL, ProviderSettings, Settings
from app.credentials import provider_api_keys
from app.devtools.demo_model import demo_responder
from app.devtools.fake_upstream import FakeUpstream
from app.engine.context import RunServices
from app.gil import SwitchInterval
from app.engine.limits import RateLimiter
from app.engine.routing import ModelRouter
from app.logs import apply_format as apply_log_format
from app.llm.upstream import shared_client
from app.runs import RunService
from app.engine.submits import SubmitRegistry
from app.memory.store import ChatStore
from app.scheduler import ScheduleService
from app.security.access_log import HTTPX_LOGGER, QueryCredentialFilter
from app.telemetry import Telemetry
from app.mcp import AgentsMcpServer, McpManager
from app.tools.registry import builtin_tool_names, builtin_tools, with_mcp_tools
from app.tools.sandbox import Sandbox
from app.usage import UsageLedger
from app.writer import WriterThread

if TYPE_CHECKING:
    from app.cluster import ClusterNode

logger = logging.getLogger(__name__)



class Gateway:
    """Build with ``async with Gateway(settings) as gateway:``."""

    def __init__(self, settings: Settings, api_keys: Mapping[str, str] | None = None, *,
                 lean_parser: bool | None = None) -> None:
        """``lean_parser``: parse upstream answers with httptools (``True``), with httpcore's h11
        (``False``), or with httptools when installed (``None``, app/llm/upstream.py)."""
        self.version = __version__
        self.local_upstream: FakeUpstream | None = None
        #: provider key → decrypted ``api-key-ref`` credential (SPEC §12); ConfigError when it cannot be read
        self._credential_keys = dict(api_keys) if api_keys is not None else provider_api_keys(settings)
        apply_log_format(settings.logging.format)
        self.settings = self._with_embedded_model(settings)
        #: SPEC §18: MCP servers as tool sources (their tools reach the catalog and the engine)
        self.mcp = McpManager(self.settings, Sandbox(self.settings))
        self.catalog = CatalogManager(self.settings, builtin_tool_names(), mcp_tools=self.mcp.catalog_tools)
        self._collector = CollectorTuning()
        self._switch_interval = SwitchInterval()
        #: SPEC §9 "Logs": httpx logs each outgoing request's URL at INFO, and a provider's base-url
        #: or a tool's toolApi may hold a password or an api_key parameter
        self._url_masking = QueryCredentialFilter()
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
        # issue 13: httpx on the leanest transport installed (app/llm/upstream.py)
        self.http = shared_client(limits, httpx.Timeout(60.0, connect=10.0), lean_parser=lean_parser)
        #: the one thread that writes chat files and usage lines: a run's lines of both go out on one
        #: wake-up of it (app/writer.py); closed after the two stores
        self._writer = WriterThread("gateway-writer")
        self.chats = ChatStore(self.settings.chats_dir, self.settings.memory.chat.charset, writer=self._writer)
        self.submits = SubmitRegistry()
        self.services = RunServices(
            settings=self.settings, http=self.http, chats=self.chats, submits=self.submits,
            builtin_tools=with_mcp_tools(builtin_tools(), self.mcp.call_tool), api_key_for=self.api_key_for,
            sandbox=Sandbox(self.settings),
            router=ModelRouter(self.settings.agent.llm.breaker), limiter=RateLimiter(self.settings.agent.limits.user),
            ledger=UsageLedger(self.settings.state_dir / "usage", writer=self._writer),
        )
        if self.settings.agent.tools.sandbox.mode == "off":
            logger.warning(
                "UNSAFE: the tool sandbox is off (agent.tools.sandbox.mode: off): _bash_ and skill scripts run "
                "unconfined with the gateway's file access; set mode: bwrap in production"
            )
        #: SPEC §19: trace ids on the runs' log lines, spans when an OTLP endpoint is set (built in open())
        self.telemetry = Telemetry(self.settings.agent.telemetry)
        #: SPEC §16: several instances on one Redis (None = this process alone)
        self.cluster: ClusterNode | None = None
        directory, schedules = None, None
        if self.settings.agent.cluster.redis_url:
            # the optional extra [cluster] (redis)
            from app.cluster import ClusterDirectory, ClusterNode, ClusterSchedules, RedisCounters

            self.cluster = ClusterNode(self.settings.agent.cluster, self.settings.agent.runs.retention_seconds)
            directory = ClusterDirectory(self.cluster, self.chats, self.settings.agent.limits)
            self.services.chat_lease = directory.chat_lease
            self.services.limiter = RateLimiter(self.settings.agent.limits.user, RedisCounters(self.cluster))
            schedules = ClusterSchedules(self.cluster)
        self._directory = directory
        self.runs = RunService(self.services, lambda: self.catalog.snapshot, telemetry=self.telemetry,
                               directory=directory)
        self.scheduler = ScheduleService(self.settings, self.runs, lambda: self.catalog.snapshot, self.chats,
                                         cluster=schedules)
        #: SPEC §18: /mcp, every agent as the MCP tool ask_<agentKey>
        self.agents_mcp = AgentsMcpServer(self.runs, lambda: self.catalog.snapshot,
                                          max_body_bytes=self.settings.server.max_body_bytes)

    def _with_embedded_model(self, settings: Settings) -> Settings:
        """Start the scripted local model for providers configured with ``base-url: embedded``."""
        embedded = [key for key, p in settings.agent.providers.items() if p.base_url == EMBEDDED_BASE_URL]
        if not embedded:
            return settings
        self.local_upstream = FakeUpstream(responder=demo_responder)
        self.local_upstream.start()
        providers = dict(settings.agent.providers)
        for key in embedded:
            providers[key] = providers[key].model_copy(update={"base_url": self.local_upstream.url})
        agent = settings.agent.model_copy(update={"providers": providers})
        logger.info("embedded local model listening on %s for providers %s", self.local_upstream.url, embedded)
        return settings.model_copy(update={"agent": agent})

    def api_key_for(self, provider_key: str) -> str:
        if provider_key in self._credential_keys:
            return self._credential_keys[provider_key]
        provider: ProviderSettings | None = self.settings.agent.providers.get(provider_key)
        return provider.api_key if provider is not None else ""

    async def __aenter__(self) -> Gateway:
        logging.getLogger(HTTPX_LOGGER).addFilter(self._url_masking)
        self.settings.chats_dir.mkdir(parents=True, exist_ok=True)
        await self.mcp.start()  # first: the catalog's first build sees the MCP servers' tools
        await self.catalog.start()
        await self.mcp.follow(lambda: asyncio.to_thread(self.catalog.reload))
        await self.agents_mcp.start()
        if self.cluster is not None and self._directory is not None:
            await self.cluster.start(self.runs.handle_command, self._directory.lost_run)
        await self.scheduler.start()
        self.telemetry.open()
        self._collector.apply()  # issue 13: start-up is done: freeze its heap, fewer young collections
        self._switch_interval.apply()  # issue 13: helper threads get the GIL within 0.5 ms, not 5
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Each step runs even when one before it failed (Redis gone, an MCP server that hangs up
        # badly): a failure is logged and the rest goes on. Memory and usage are flushed, the
        # writer thread stopped and the interpreter's settings restored whatever happened above,
        # a cancelled shutdown included.
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("the scheduler", self.scheduler.stop),
            ("the agents' MCP server", self.agents_mcp.stop),
            ("the runs", self.runs.aclose),
            ("the MCP clients", self.mcp.stop),  # after the runs: none calls an MCP tool any more
        ]
        if self.cluster is not None:
            steps.append(("the cluster node", self.cluster.stop))  # after the runs recorded their end in Redis
        steps += [
            ("telemetry", self.telemetry.aclose),  # every run's span has ended: flush them
            ("the catalog", self.catalog.stop),
            ("the upstream client", self.http.aclose),
        ]
        try:
            for name, stop in steps:
                try:
                    await stop()
                except Exception:
                    logger.exception("stopping %s failed; the gateway goes on stopping the rest", name)
            if self.local_upstream is not None:
                self.local_upstream.stop()
        finally:
            self.chats.close()  # closes the chat files after the pending appends
            self.services.ledger.close()  # writes the queued usage lines
            self._writer.close()  # returns when all of the above is written: memory and usage are flushed
            self._collector.restore()
            self._switch_interval.restore()
            logging.getLogger(HTTPX_LOGGER).removeFilter(self._url_masking)
