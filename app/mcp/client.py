"""MCP servers as tool sources (SPEC §18): ``McpManager`` and one ``McpConnection`` per server file.

``McpManager`` reads ``agent.mcp.servers-dir`` (``mcp-servers/<serverKey>.json``, ``app.mcp.specs``)
and keeps it live like the catalog folders: a watchfiles watcher whose timeout doubles as the
fallback rescan (a cheap fingerprint of the folder). A file that does not validate is reported
with its reason and never takes the other servers down.

Each enabled server gets one ``McpConnection``: a task that owns one MCP session (the SDK's
``Client`` over ``stdio_client`` or ``streamable_http_client``), lists the server's tools and
serves calls until the session is lost. Then the server is ``unavailable`` with the reason and is
reconnected with exponential backoff (``BACKOFF_FIRST_S`` doubling up to ``BACKOFF_MAX_S``).
A lost session is noticed without a call: a stdio server's stdout ending (the process exited), an
HTTP server's change stream failing, or a call failing on the connection itself.

Stdio servers run inside the tool sandbox of SPEC §14 unless the file says ``"sandbox": false``:
the command is wrapped in ``bwrap`` with the sandbox's own arguments (``Sandbox.bwrap_args``), a
private writable folder ``data/.agw/mcp/<serverKey>`` as ``HOME``, the file's ``cwd`` (when set)
bound read-only as the working directory, and an environment of ``PATH``, ``HOME``, ``LANG``, the
sandbox's pass-through names and the file's ``env`` only. Its stderr goes to a temporary file
whose last line becomes the reason when the process dies.

The catalog reads ``catalog_tools()`` at every build (``McpTools`` per file: status, the tools as
``mcp__<serverKey>__<tool>`` backend tools — the last listing while the server is down); a change
of any server's tool list rebuilds the catalog (``follow``), so the agents that use it see it.
``call_tool`` runs one call, bounded by the file's ``timeoutMs``; every failure is a ``ToolError``,
which the engine turns into an error result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO, cast

import anyio
import mcp_types as types
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from watchfiles import DefaultFilter, awatch

from app import __version__
from app.catalog.definitions import ToolDefinition, ToolKind
from app.catalog.loader import visible_entries
from app.catalog.manager import WATCH_STEP_MS, Fingerprint, fingerprint, rescan_interval_s
from app.catalog.mcp import McpTools, mcp_tool_name
from app.config import Settings
from app.errors import DefinitionError, ToolError
from app.mcp.results import tool_result
from app.mcp.specs import HttpServer, ServerSpec, StdioServer, check_server_key, load_server
from app.tools.sandbox import Sandbox

logger = logging.getLogger(__name__)

READY = "ready"
UNAVAILABLE = "unavailable"
DISABLED = "disabled"

#: first reconnect delay after a failure; doubles per failure up to ``BACKOFF_MAX_S``
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
#: how long ``start()`` waits for the servers' first connection attempts, in all
STARTUP_WAIT_S = 10.0
#: the bound of one connection attempt: start (or reach) the server, handshake, first tool listing
CONNECT_TIMEOUT_S = 30.0
#: the most pages of ``tools/list`` read from one server
MAX_LIST_PAGES = 100
#: the shortest time between two re-listings of a server's tools: a server that announces changes
#: in a loop costs one ``tools/list`` (and one catalog rebuild) a second, and its last change still lands
RELIST_MIN_INTERVAL_S = 1.0
#: the most tools taken from one server (the rest are skipped with a warning): every tool an agent
#: names goes to the model with each call, and a server listing 100,000 cost seconds and 600 MB
MAX_TOOLS = 256
#: what a model provider accepts as a function name
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: the last bytes of a dead stdio server's stderr kept for its reason
_STDERR_TAIL_BYTES = 4096

CLIENT_INFO = types.Implementation(name="agent-gateway", version=__version__)


class ConnectionLost(Exception):
    """The session with the server ended; the message is the reason."""


@dataclass(frozen=True, slots=True)
class ServerFile:
    """One ``mcp-servers/*.json`` file as last read: its definition, or why it has none."""

    key: str
    path: Path
    spec: ServerSpec | None = None
    error: str | None = None


def _leaf(exc: BaseException) -> BaseException:
    """The first non-group exception of ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe_failure(exc: BaseException, command: str | None = None) -> str:
    """A one-line reason for a failed or lost session."""
    leaf = _leaf(exc)
    if isinstance(leaf, ConnectionLost | ToolError):
        return str(leaf)
    if isinstance(leaf, TimeoutError):
        return f"the server did not answer the handshake and the tool listing within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(leaf, FileNotFoundError | PermissionError) and command is not None:
        return f"cannot start the server command {command!r}: {leaf.strerror or leaf}"
    text = str(leaf).strip()
    return f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__


class _WatchedReadStream:
    """The transport's read stream, reporting its end (the server process exited) once."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _stderr_tail(errlog: IO[str]) -> str:
    """The last non-empty line the server wrote to stderr (``''`` when none)."""
    try:
        errlog.flush()
        size = os.fstat(errlog.fileno()).st_size
        with open(errlog.fileno(), "rb", closefd=False) as raw:
            raw.seek(max(0, size - _STDERR_TAIL_BYTES))
            tail = raw.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


#: a stdio server's stderr file is cut back to its tail once it grows past this many bytes
STDERR_MAX_BYTES = 1024 * 1024
#: how often the stderr file's size is looked at
STDERR_CHECK_S = 2.0


async def _keep_trimmed(errlog: IO[str]) -> None:
    """Keep a stdio server's stderr file small: a server that writes without end filled the disk
    (a review saw 1 GiB held by the gateway). Only the tail is ever read (``_stderr_tail``)."""
    while True:
        await asyncio.sleep(STDERR_CHECK_S)
        try:
            _trim(errlog.fileno())
        except OSError:
            logger.debug("could not trim an MCP server's stderr file", exc_info=True)


def _trim(fd: int) -> None:
    """Cut the file to its last ``_STDERR_TAIL_BYTES`` when it is larger than ``STDERR_MAX_BYTES``.
    The server shares the file's offset (the same open file), so the seek moves its writes too."""
    size = os.fstat(fd).st_size
    if size <= STDERR_MAX_BYTES:
        return
    tail = os.pread(fd, _STDERR_TAIL_BYTES, size - _STDERR_TAIL_BYTES)
    os.ftruncate(fd, 0)
    os.pwrite(fd, tail, 0)
    os.lseek(fd, len(tail), os.SEEK_SET)


class McpConnection:
    """One server: its session task, status, tools and calls (see the module docstring)."""

    def __init__(self, manager: McpManager, file: ServerFile, spec: ServerSpec) -> None:
        self.manager = manager
        self.key = file.key
        self.file = file
        self.spec = spec
        self.status = UNAVAILABLE
        self.error: str | None = "starting"
        self.tools: dict[str, ToolDefinition] = {}
        #: one attempt (success or failure) is over: ``start()`` waits for it
        self.settled = asyncio.Event()
        self._client: Client | None = None
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._relist: asyncio.Event | None = None
        self._was_ready = False
        self._scope: anyio.CancelScope | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._main(), name=f"mcp:{self.key}")

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        task, self._task = self._task, None
        if task is not None:
            if self._scope is None:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _main(self) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            failures = 0
            while True:
                self._was_ready = False
                try:
                    await self._session()
                    reason = self._lost_reason or "the session ended"
                except Exception as exc:  # every failure is reported as the server's reason, then retried
                    command = self.spec.command if isinstance(self.spec, StdioServer) else None
                    reason = self._lost_reason or describe_failure(exc, command)
                    logger.debug("MCP server %s session failed", self.key, exc_info=True)
                if self._was_ready:
                    failures = 0  # it had been ready: the next attempt starts from the first delay
                self._set_unavailable(reason)
                self.settled.set()
                delay = min(BACKOFF_FIRST_S * (2 ** failures), BACKOFF_MAX_S)
                failures += 1
                logger.info("MCP server %s: reconnecting in %.1f s", self.key, delay)
                await anyio.sleep(delay)

    async def _session(self) -> None:
        """Connect, list the tools and serve until the session is lost."""
        self._lost = asyncio.Event()
        self._relist = asyncio.Event()
        self._lost_reason = ""
        # the handshake and the first listing are bounded; the scope encloses the whole session (cancel
        # scopes nest with the SDK's task groups) and its deadline is lifted once the server is ready
        with anyio.CancelScope(deadline=anyio.current_time() + CONNECT_TIMEOUT_S) as handshake:
            async with contextlib.AsyncExitStack() as stack:
                client = await stack.enter_async_context(self._connect(stack))
                tools = await self._list_tools(client)
                handshake.deadline = math.inf
                self._client = client
                try:
                    self._set_ready(tools)
                    self.settled.set()
                    async with anyio.create_task_group() as group:
                        group.start_soon(self._follow_tool_changes, client)
                        await self._lost.wait()
                        group.cancel_scope.cancel()
                finally:
                    self._client = None
        if handshake.cancelled_caught:
            raise TimeoutError("handshake")
        if not self._lost_reason:
            self._lost_reason = "the session ended"

    def _connect(self, stack: contextlib.AsyncExitStack) -> Client:
        spec = self.spec
        if isinstance(spec, HttpServer):
            http = create_mcp_http_client(headers=dict(spec.headers) or None)
            transport: Any = streamable_http_client(spec.url, http_client=http)
            stack.push_async_callback(http.aclose)
        else:
            transport = self._stdio_transport(spec, stack)
        return Client(transport, client_info=CLIENT_INFO, cache=None, message_handler=self._on_message)

    def _stdio_transport(self, spec: StdioServer, stack: contextlib.AsyncExitStack) -> Any:
        params = self.manager.stdio_parameters(self.key, spec)
        errlog: IO[str] = stack.enter_context(tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace"))

        def ended() -> None:
            if self._lost is not None and not self._lost.is_set():
                tail = _stderr_tail(errlog)
                self._lost_reason = "the server process exited" + (f": {tail}" if tail else "")
                self._lost.set()

        @contextlib.asynccontextmanager
        async def transport() -> AsyncIterator[Any]:
            trimming = asyncio.get_running_loop().create_task(_keep_trimmed(errlog), name=f"mcp-stderr:{self.key}")
            try:
                async with stdio_client(params, errlog=cast(TextIO, errlog)) as (read, write):
                    yield _WatchedReadStream(read, ended), write
            finally:
                trimming.cancel()

        return transport()

    async def _list_tools(self, client: Client) -> dict[str, ToolDefinition]:
        tools: dict[str, ToolDefinition] = {}
        skipped: list[str] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                name = mcp_tool_name(self.key, tool.name)
                if not _FUNCTION_NAME.fullmatch(name) or len(tools) >= MAX_TOOLS:
                    skipped.append(tool.name)
                    continue
                tools[name] = ToolDefinition(
                    name=name, kind=ToolKind.BACKEND,
                    description=tool.description or tool.title or f"{tool.name} (MCP server {self.key})",
                    parameters=dict(tool.input_schema), source=self.file.path,
                )
            cursor = page.next_cursor
            if cursor is None:
                break
        if skipped:
            logger.warning("MCP server %s: %d tools skipped (a name that does not fit mcp__%s__<tool> in 64 letters, "
                           "digits, '_' or '-', or more than %d tools): %s", self.key, len(skipped), self.key, MAX_TOOLS,
                           ", ".join(skipped[:20]) + (" …" if len(skipped) > 20 else ""))
        return tools

    async def _on_message(self, message: Any) -> None:
        """Handshake-era servers announce tool list changes as a notification."""
        if isinstance(message, types.ToolListChangedNotification) and self._relist is not None:
            self._relist.set()

    async def _follow_tool_changes(self, client: Client) -> None:
        """Re-list the tools whenever the server says they changed (a listen stream on 2026-07-28
        servers, the notification before); a failed listen stream means the server is gone."""
        async with anyio.create_task_group() as group:
            if client.protocol_version in MODERN_PROTOCOL_VERSIONS and _lists_changes(client):
                group.start_soon(self._listen, client)
            while True:
                assert self._relist is not None
                await self._relist.wait()
                self._relist.clear()
                try:
                    tools = await self._list_tools(client)
                except (MCPError, OSError) as exc:
                    self._lose(f"re-listing the tools failed: {describe_failure(exc)}")
                    return
                self._set_ready(tools)
                await anyio.sleep(RELIST_MIN_INTERVAL_S)  # changes announced meanwhile: one listing after it

    async def _listen(self, client: Client) -> None:
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _ in subscription:
                    assert self._relist is not None
                    self._relist.set()
        except ListenNotSupportedError:
            return
        except MCPError as exc:
            logger.info("MCP server %s refused the tool change stream: %s", self.key, exc)
            return
        except Exception as exc:  # the stream broke: the server is gone or unreachable
            self._lose(f"the server's change stream broke: {describe_failure(exc)}")

    def _lose(self, reason: str) -> None:
        if self._lost is not None and not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    # -- state

    def _set_ready(self, tools: dict[str, ToolDefinition]) -> None:
        changed = self.status != READY or tools != self.tools
        was = self.status
        self._was_ready = True
        self.status, self.error, self.tools = READY, None, tools
        if was != READY:
            logger.info("MCP server %s ready: %d tools", self.key, len(tools))
        if changed:
            self.manager.publish()

    def _set_unavailable(self, reason: str) -> None:
        if self.status != UNAVAILABLE or self.error != reason:
            log = logger.warning if self.error != reason else logger.info
            log("MCP server %s unavailable: %s", self.key, reason)
        self.status, self.error = UNAVAILABLE, reason
        self.manager.publish()  # the last tool listing stays: calls get an error result

    # -- calls

    async def call(self, tool: str, args: dict[str, Any]) -> Any:
        client = self._client
        if client is None or self.status != READY:
            raise ToolError(f"MCP server '{self.key}' is unavailable: {self.error or 'not connected'}")
        timeout_ms = self.spec.timeout_ms
        try:
            with anyio.fail_after(timeout_ms / 1000 + 1):
                result = await client.call_tool(tool, args, read_timeout_seconds=timeout_ms / 1000)
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                self._timed_out()
                raise ToolError(f"MCP tool '{tool}' of server '{self.key}' timed out after {timeout_ms} ms "
                                "(timeoutMs)") from exc
            if exc.code == types.CONNECTION_CLOSED:
                self._lose("the connection closed during a call")
                raise ToolError(f"MCP server '{self.key}' is unavailable: the connection closed during the "
                                f"call of '{tool}'") from exc
            raise ToolError(f"MCP tool '{tool}' of server '{self.key}' failed: {exc.message}") from exc
        except TimeoutError as exc:
            self._timed_out()
            raise ToolError(f"MCP tool '{tool}' of server '{self.key}' timed out after {timeout_ms} ms "
                            "(timeoutMs)") from exc
        return tool_result(self.key, tool, result)

    def _timed_out(self) -> None:
        """A stdio server that did not answer in time is started again: its one pipe may be stuck in
        an answer that never ends (an endless line the SDK's reader would collect forever, costing a
        core and holding every later call)."""
        if isinstance(self.spec, StdioServer):
            self._lose("a call timed out (timeoutMs); the server process is started again")

    def describe(self) -> dict[str, Any]:
        return _describe(self.key, self.spec, self.status, self.tools, self.error)


def _lists_changes(client: Client) -> bool:
    tools = client.server_capabilities.tools
    return bool(tools and tools.list_changed)


def _describe(key: str, spec: ServerSpec | None, status: str, tools: Mapping[str, ToolDefinition],
              error: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "serverKey": key,
        "status": status,
        "transport": spec.transport if spec is not None else None,
        "tools": [{"name": tool.name, "description": tool.description} for tool in tools.values()],
    }
    if error:
        entry["error"] = error
    return entry


class McpManager:
    """Every MCP server of the deployment (see the module docstring). Built once per ``Gateway``."""

    def __init__(self, settings: Settings, sandbox: Sandbox) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self._files: dict[str, ServerFile] = {}
        self._connections: dict[str, McpConnection] = {}
        self._published: Mapping[str, McpTools] = {}
        self._version = 0
        self._read_version = 0
        self._fingerprint: Fingerprint = frozenset()
        self._reload_catalog: Callable[[], Awaitable[object]] | None = None
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._apply_lock = asyncio.Lock()

    @property
    def folder(self) -> Path:
        return self.settings.mcp_servers_dir

    # -- lifecycle

    async def start(self) -> None:
        """Read the folder, connect every enabled server (waiting up to ``STARTUP_WAIT_S`` for their
        first attempts) and start watching the folder."""
        if self._tasks:
            return
        await self.rescan(force=True)
        pending = [connection.settled.wait() for connection in self._connections.values()]
        if pending:
            await asyncio.wait([asyncio.ensure_future(p) for p in pending], timeout=STARTUP_WAIT_S)
        self._tasks = [asyncio.create_task(self._watch_loop(), name="mcp-watch")]

    async def follow(self, reload_catalog: Callable[[], Awaitable[object]]) -> None:
        """From now on a change of any server's tools rebuilds the catalog with ``reload_catalog``;
        rebuilds at once when one happened since the catalog last read them."""
        self._reload_catalog = reload_catalog
        self._tasks.append(asyncio.create_task(self._reload_loop(), name="mcp-catalog-reload"))
        if self._read_version != self._version:
            self._dirty.set()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(connection.stop() for connection in connections))

    # -- what others read

    def catalog_tools(self) -> Mapping[str, McpTools]:
        """Every server file's status and tools (safe from any thread: one immutable mapping)."""
        self._read_version = self._version
        return self._published

    def describe(self) -> list[dict[str, Any]]:
        """``GET /api/ap/mcp-servers``: ``[{serverKey, status, transport, tools[], error?}]`` by key."""
        entries = []
        for key, file in sorted(self._files.items()):
            connection = self._connections.get(key)
            if connection is not None:
                entries.append(connection.describe())
            elif file.spec is not None and not file.spec.enabled:
                entries.append(_describe(key, file.spec, DISABLED, {}, None))
            else:
                entries.append(_describe(key, file.spec, UNAVAILABLE, {}, file.error))
        return entries

    async def call_tool(self, server_key: str, tool: str, args: dict[str, Any]) -> Any:
        """Call ``tool`` of ``server_key``; ``ToolError`` for every failure (the model's error result)."""
        connection = self._connections.get(server_key)
        if connection is None:
            file = self._files.get(server_key)
            if file is None:
                raise ToolError(f"there is no MCP server '{server_key}'")
            if file.spec is not None and not file.spec.enabled:
                raise ToolError(f"MCP server '{server_key}' is disabled")
            raise ToolError(f"MCP server '{server_key}' is unavailable: {file.error}")
        return await connection.call(tool, args)

    def publish(self) -> None:
        """Rebuild the catalog's view after a status or tool change; a tool change reloads the catalog."""
        published: dict[str, McpTools] = {}
        for key, file in self._files.items():
            connection = self._connections.get(key)
            if connection is not None:
                published[key] = McpTools(key, connection.status, dict(connection.tools), connection.error)
            elif file.spec is not None and not file.spec.enabled:
                published[key] = McpTools(key, DISABLED)
            else:
                published[key] = McpTools(key, UNAVAILABLE, error=file.error)
        before = self._published
        self._published = published
        if {k: v.tools for k, v in before.items()} != {k: v.tools for k, v in published.items()}:
            self._version += 1
            self._dirty.set()

    # -- stdio servers

    def stdio_parameters(self, key: str, spec: StdioServer) -> StdioServerParameters:
        """How to spawn a stdio server: inside ``bwrap`` (SPEC §14) unless the file or the sandbox says not."""
        settings = self.settings
        cwd = settings.resolve(spec.cwd) if spec.cwd else None
        if not spec.sandbox or not self.sandbox.enabled:
            if spec.sandbox:
                logger.warning("UNSAFE: MCP server %s runs unconfined (agent.tools.sandbox.mode: off)", key)
            return StdioServerParameters(command=spec.command, args=list(spec.args), env=dict(spec.env) or None,
                                         cwd=cwd or settings.base_dir)
        bwrap = self._bwrap()
        workspace = self.workspace_for(key)
        args = self.sandbox.bwrap_args(bwrap, workspace, read_only=(cwd,) if cwd is not None else ())
        if cwd is not None:
            args += ["--chdir", str(cwd)]
        # the environment goes to bwrap as its own environment, never on its command line (where
        # every local user could read a token in ps or /proc/<pid>/cmdline); bwrap passes it on,
        # less the variables the SDK adds of its own accord
        env = self.sandbox.environment(workspace, spec.env)
        for name in get_default_environment():
            if name not in env:
                args += ["--unsetenv", name]
        return StdioServerParameters(command=args[0], args=[*args[1:], "--", spec.command, *spec.args],
                                     env=env, cwd=workspace)

    def workspace_for(self, key: str) -> Path:
        """The server's private, writable folder: ``data/.agw/mcp/<serverKey>``."""
        root = self.settings.state_dir / "mcp"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        workspace = root / check_server_key(key)
        workspace.mkdir(exist_ok=True, mode=0o700)
        return workspace.resolve()

    def _bwrap(self) -> str:
        configured = self.sandbox.config.bwrap_path
        found = configured if os.path.isabs(configured) and os.access(configured, os.X_OK) else None
        found = found or (shutil.which(configured) if not os.path.isabs(configured) else None)
        if found is None:
            raise ToolError(f"the tool sandbox is unavailable: bubblewrap ({configured!r}) is not installed; "
                            "the stdio MCP server is not started (SPEC §14)")
        return found

    # -- the folder

    def read_folder(self) -> dict[str, ServerFile]:
        files: dict[str, ServerFile] = {}
        for path in visible_entries(self.folder):
            if not path.is_file() or path.suffix.lower() != ".json":
                continue
            try:
                files[path.stem] = ServerFile(path.stem, path, spec=load_server(path))
            except DefinitionError as exc:
                logger.warning("rejected MCP server definition %s: %s", path.name, exc.message)
                files[path.stem] = ServerFile(path.stem, path, error=f"invalid definition: {exc.message}")
        return files

    async def rescan(self, *, force: bool = False) -> bool:
        """Apply the folder when it changed (or always with ``force``); True when it did."""
        async with self._apply_lock:
            current = await asyncio.to_thread(fingerprint, (self.folder,))
            if not force and current == self._fingerprint:
                return False
            self._fingerprint = current
            files = await asyncio.to_thread(self.read_folder)
            await self._apply(files)
            return True

    async def _apply(self, files: dict[str, ServerFile]) -> None:
        stale: list[McpConnection] = []
        for key, connection in list(self._connections.items()):
            file = files.get(key)
            if file is None or file.spec is None or not file.spec.enabled or file.spec != connection.spec:
                stale.append(self._connections.pop(key))
        await asyncio.gather(*(connection.stop() for connection in stale))
        self._files = files
        for key, file in files.items():
            if file.spec is not None and file.spec.enabled and key not in self._connections:
                connection = McpConnection(self, file, file.spec)
                self._connections[key] = connection
                connection.start()
        self.publish()

    async def _watch_loop(self) -> None:
        interval_ms = int(rescan_interval_s(self.settings) * 1000)
        while True:
            if not self.folder.is_dir():
                await asyncio.sleep(interval_ms / 1000)
                await self.rescan()
                continue
            try:
                async for _ in awatch(self.folder, watch_filter=DefaultFilter(), debounce=50, step=WATCH_STEP_MS,
                                      rust_timeout=interval_ms, yield_on_timeout=True,
                                      ignore_permission_denied=True):
                    await self.rescan()
                    if not self.folder.is_dir():
                        break
            except (OSError, RuntimeError) as exc:
                logger.warning("MCP server folder watcher failed (%s); rescanning every %d ms", exc, interval_ms)
                await asyncio.sleep(interval_ms / 1000)
                await self.rescan()

    async def _reload_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._reload_catalog is not None:
                try:
                    await self._reload_catalog()
                except Exception:  # a failed rebuild keeps the previous catalog; the next change retries
                    logger.exception("catalog reload after an MCP tool change failed")

