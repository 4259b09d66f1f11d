"""MCP servers as tool sources (SPEC §18), end to end: a real MCP server built with the ``mcp`` SDK
(``tool_server.py``, over stdio inside the sandbox or over streamable HTTP in its own process), the
real gateway, and a scripted model calling ``mcp__<serverKey>__<tool>`` tools."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.engine.helpers import call, first, of_type, tool_names
from tests.mcp.support import HttpToolServer, copy_server_into, eventually, stdio_server, write_server
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect

Start = Callable[..., GatewayServer]


async def servers(client: httpx.AsyncClient, gw: GatewayServer) -> dict[str, dict[str, Any]]:
    body = (await client.get(f"{gw.url}/api/ap/mcp-servers")).json()
    assert body["code"] == 0, body
    return {entry["serverKey"]: entry for entry in body["data"]}


async def status_of(client: httpx.AsyncClient, gw: GatewayServer, key: str, wanted: str) -> dict[str, Any] | None:
    entry = (await servers(client, gw)).get(key)
    return entry if entry is not None and entry["status"] == wanted else None


async def ask(client: httpx.AsyncClient, gw: GatewayServer, agent_key: str, message: str = "go") -> list[dict[str, Any]]:
    return await collect(client, f"{gw.url}/api/ap/query", {"agentKey": agent_key, "message": message})


async def call_tool(upstream: FakeUpstream, client: httpx.AsyncClient, gw: GatewayServer, agent_key: str,
                    name: str, args: dict[str, Any]) -> Any:
    """One query whose scripted model calls ``name`` once; the ``tool.result`` it got."""
    upstream.enqueue(call("call_1", name, args), text_script(["done"]))
    events = await ask(client, gw, agent_key)
    assert events[-1]["type"] == "run.complete", events[-1]
    return first(events, "tool.result")["result"]


async def test_stdio_tools_reach_the_model_with_their_schema_and_run_end_to_end(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    write_server(deploy, "tools", stdio_server())
    write_agent(deploy, "user", agent("REACT", tools={"backends": ["mcp__tools__parts", "mcp__tools__add"]}))
    gw = start_gateway()
    entry = await eventually(lambda: status_of(client, gw, "tools", "ready"), "server ready")
    assert {tool["name"] for tool in entry["tools"]} >= {"mcp__tools__echo", "mcp__tools__add", "mcp__tools__parts"}

    upstream.enqueue(call("call_1", "mcp__tools__add", {"a": 2, "b": 40}), text_script(["done"]))
    events = await ask(client, gw, "user")
    assert events[-1]["type"] == "run.complete"
    offered = upstream.requests[0].body["tools"]
    assert sorted(tool_names(upstream.requests[0].body)) == ["mcp__tools__add", "mcp__tools__parts"]
    add_schema = next(t["function"]["parameters"] for t in offered if t["function"]["name"] == "mcp__tools__add")
    assert add_schema["properties"]["a"]["type"] == "integer" and add_schema["required"] == ["a", "b"]
    # the arguments stream like any backend tool's, then the structured result comes back as JSON
    assert "".join(e["delta"] for e in of_type(events, "tool.args")) == orjson.dumps({"a": 2, "b": 40}).decode()
    assert first(events, "tool.result")["result"] == {"sum": 42}
    tool_message = [m for m in upstream.requests[1].body["messages"] if m.get("role") == "tool"][-1]
    assert orjson.loads(tool_message["content"]) == {"sum": 42}

    # plain text parts are joined
    assert await call_tool(upstream, client, gw, "user", "mcp__tools__parts", {}) == "first part\nsecond part"


async def test_wildcard_lists_every_tool_of_the_server(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    write_server(deploy, "tools", stdio_server())
    write_agent(deploy, "all", agent("REACT", tools={"backends": ["mcp__tools__*", "city_datetime"]}))
    gw = start_gateway()
    entry = await eventually(lambda: status_of(client, gw, "tools", "ready"), "server ready")
    upstream.enqueue(text_script(["hi"]))
    await ask(client, gw, "all")
    offered = set(tool_names(upstream.requests[0].body))
    assert offered == {tool["name"] for tool in entry["tools"]} | {"city_datetime"}
    assert {"mcp__tools__echo", "mcp__tools__read_file", "mcp__tools__slow"} <= offered


async def test_is_error_and_timeout_are_error_results_and_the_run_goes_on(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    write_server(deploy, "tools", stdio_server(timeoutMs=500))
    write_agent(deploy, "user", agent("REACT", tools={"backends": ["mcp__tools__*"]}))
    gw = start_gateway()
    await eventually(lambda: status_of(client, gw, "tools", "ready"), "server ready")

    failed = await call_tool(upstream, client, gw, "user", "mcp__tools__fail", {"message": "the disk is on fire"})
    assert failed["ok"] is False and "the disk is on fire" in failed["error"]
    before = await call_tool(upstream, client, gw, "user", "mcp__tools__instance", {})

    slow = await call_tool(upstream, client, gw, "user", "mcp__tools__slow", {"seconds": 30})
    assert slow["ok"] is False and "timed out after 500 ms" in slow["error"]

    # a stdio server that did not answer in time is started again, and serves the next calls
    await _until_restarted(upstream, client, gw, before)
    assert await call_tool(upstream, client, gw, "user", "mcp__tools__echo", {"text": "hi"}) == {"result": "echo: hi"}


async def _until_restarted(upstream: FakeUpstream, client: httpx.AsyncClient, gw: GatewayServer,
                           before: Any) -> None:
    """Bounded attempts until the ``instance`` tool answers from a new server process."""
    for _ in range(100):
        now = await call_tool(upstream, client, gw, "user", "mcp__tools__instance", {})
        if isinstance(now, dict) and "result" in now and now != before:
            return
        await asyncio.sleep(0.1)  # pacing only; the bound is the number of attempts
    raise AssertionError("the server was not started again")


async def test_a_crashed_server_is_unavailable_gives_error_results_and_comes_back(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    script = copy_server_into(deploy)
    hold = deploy / "mcp-src" / "HOLD"
    write_server(deploy, "tools", stdio_server(cwd=str(deploy / "mcp-src"), args=[Path(script).name, "stdio"]))
    write_agent(deploy, "user", agent("REACT", tools={"backends": ["mcp__tools__*"]}))
    gw = start_gateway()
    await eventually(lambda: status_of(client, gw, "tools", "ready"), "server ready")
    before = await call_tool(upstream, client, gw, "user", "mcp__tools__instance", {})

    hold.touch()  # the restarts fail while it is there
    crashed = await call_tool(upstream, client, gw, "user", "mcp__tools__crash", {})
    assert crashed["ok"] is False and "unavailable" in crashed["error"]
    down = await eventually(lambda: status_of(client, gw, "tools", "unavailable"), "server unavailable")
    assert "exited" in down["error"]
    held = await eventually(lambda: _error_contains(client, gw, "tools", "held by the HOLD file"), "restart refused")
    assert held["status"] == "unavailable"
    # agents keep loading, with the last tool listing, and a call while it is down is an error result
    assert "mcp__tools__echo" in [t["name"] for t in held["tools"]]
    while_down = await call_tool(upstream, client, gw, "user", "mcp__tools__echo", {"text": "anyone?"})
    assert while_down["ok"] is False and "MCP server 'tools' is unavailable" in while_down["error"]

    hold.unlink()  # the next retry (backoff) starts a new process
    await eventually(lambda: status_of(client, gw, "tools", "ready"), "server back")
    after = await call_tool(upstream, client, gw, "user", "mcp__tools__instance", {})
    assert isinstance(before, dict) and isinstance(after, dict) and after["result"] != before["result"]


async def _error_contains(client: httpx.AsyncClient, gw: GatewayServer, key: str, text: str) -> dict[str, Any] | None:
    entry = (await servers(client, gw)).get(key)
    return entry if entry is not None and text in (entry.get("error") or "") else None


async def test_servers_without_a_usable_command_are_unavailable_and_their_agents_still_load(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    write_server(deploy, "nocommand", {"transport": "stdio", "args": ["x"]})
    write_server(deploy, "missing", {"transport": "stdio", "command": "/nonexistent/mcp-server"})
    write_server(deploy, "missingraw", {"transport": "stdio", "command": "/nonexistent/mcp-server", "sandbox": False})
    write_server(deploy, "tools", stdio_server())
    write_agent(deploy, "user", agent("REACT", tools={"backends": [
        "mcp__nocommand__*", "mcp__missing__echo", "mcp__missingraw__echo", "mcp__tools__echo"]}))
    gw = start_gateway()
    await eventually(lambda: status_of(client, gw, "tools", "ready"), "the good server ready")
    await eventually(lambda: _error_contains(client, gw, "missing", "No such file"), "sandboxed spawn failed")
    listed = await servers(client, gw)
    assert listed["nocommand"]["status"] == "unavailable" and "command: Field required" in listed["nocommand"]["error"]
    assert listed["missingraw"]["status"] == "unavailable"
    assert "'/nonexistent/mcp-server'" in listed["missingraw"]["error"]
    assert "bwrap" in listed["missing"]["error"]  # it was started inside the sandbox

    agents = (await client.get(f"{gw.url}/api/ap/agents")).json()["data"]
    assert "user" in {a["key"] for a in agents}
    assert (await client.get(f"{gw.url}/api/ap/catalog/rejections")).json()["data"] == []
    result = await call_tool(upstream, client, gw, "user", "mcp__missing__echo", {"text": "x"})
    assert result["ok"] is False
    assert tool_names(upstream.requests[0].body) == ["mcp__tools__echo"]


async def test_server_files_hot_reload_add_disable_and_remove(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    (deploy / "mcp-servers").mkdir()
    write_agent(deploy, "user", agent("REACT", tools={"backends": ["mcp__hot__*"]}))
    gw = start_gateway()

    async def rejected() -> bool:
        data = (await client.get(f"{gw.url}/api/ap/catalog/rejections")).json()["data"]
        return any("no MCP server 'hot'" in r["reason"] for r in data)

    assert await rejected()  # an unknown server is an unknown tool
    path = write_server(deploy, "hot", stdio_server())
    await eventually(lambda: status_of(client, gw, "hot", "ready"), "added server ready")

    async def agent_tools() -> list[str]:
        data = (await client.get(f"{gw.url}/api/ap/agent", params={"agentKey": "user"})).json()["data"]
        return [tool["name"] for tool in data["stages"][0]["tools"]] if data else []

    assert "mcp__hot__echo" in await eventually(agent_tools, "the agent has the server's tools")

    path.write_bytes(orjson.dumps({**stdio_server(), "enabled": False}))
    await eventually(lambda: status_of(client, gw, "hot", "disabled"), "server disabled")
    await eventually(lambda: _not(agent_tools), "the disabled server's tools left the agent")
    assert (await servers(client, gw))["hot"]["tools"] == []

    path.unlink()
    await eventually(lambda: _gone(client, gw, "hot"), "server removed")
    await eventually(rejected, "the agent names an unknown server again")


async def _not(check: Callable[[], Any]) -> bool:
    return not await check()


async def _gone(client: httpx.AsyncClient, gw: GatewayServer, key: str) -> bool:
    return key not in await servers(client, gw)


async def test_a_changed_tool_list_refreshes_the_agents_that_use_the_server(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    write_server(deploy, "tools", stdio_server())
    write_agent(deploy, "user", agent("REACT", tools={"backends": ["mcp__tools__*"]}))
    gw = start_gateway()
    await eventually(lambda: status_of(client, gw, "tools", "ready"), "server ready")
    assert await call_tool(upstream, client, gw, "user", "mcp__tools__grow", {"name": "sprout"}) == {
        "result": "added sprout"}

    async def grown() -> bool:
        entry = (await servers(client, gw))["tools"]
        return "mcp__tools__sprout" in [tool["name"] for tool in entry["tools"]]

    async def agent_has_it() -> bool:
        data = (await client.get(f"{gw.url}/api/ap/agent", params={"agentKey": "user"})).json()["data"]
        return "mcp__tools__sprout" in [tool["name"] for tool in data["stages"][0]["tools"]]

    await eventually(grown, "the new tool listed")
    await eventually(agent_has_it, "the agent refreshed with the new tool")
    assert await call_tool(upstream, client, gw, "user", "mcp__tools__sprout", {}) == "I am sprout"
    assert "mcp__tools__sprout" in tool_names(upstream.requests[-2].body)


async def test_attack_a_server_announcing_tool_changes_in_a_loop_is_listed_at_most_once_a_second(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    """Every ``tools/list_changed`` was followed by a new listing and a catalog rebuild as soon as the
    last one ended: a server announcing changes in a loop kept the gateway listing and rebuilding.
    Listings are now at least a second apart, and the last change still lands."""
    write_server(deploy, "tools", stdio_server())
    write_agent(deploy, "user", agent("REACT", tools={"backends": ["mcp__tools__*"]}))
    gw = start_gateway()
    await eventually(lambda: status_of(client, gw, "tools", "ready"), "server ready")
    before = await call_tool(upstream, client, gw, "user", "mcp__tools__listings", {})
    assert await call_tool(upstream, client, gw, "user", "mcp__tools__churn",
                           {"times": 40, "gap": 0.025, "name": "last"}) == {"result": "churned 40"}

    async def agent_has_it() -> bool:
        data = (await client.get(f"{gw.url}/api/ap/agent", params={"agentKey": "user"})).json()["data"]
        return "mcp__tools__last" in [tool["name"] for tool in data["stages"][0]["tools"]]

    await eventually(agent_has_it, "the change after the churn")
    after = await call_tool(upstream, client, gw, "user", "mcp__tools__listings", {})
    before, after = before["result"], after["result"]
    assert after - before <= 10, f"{after - before} listings for 41 announcements over about a second"


async def test_the_sandbox_hides_the_gateway_state_from_a_stdio_server(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    script = copy_server_into(deploy)
    # both servers run with the deployment folder (which holds application.yml) as working directory
    write_server(deploy, "boxed", {"transport": "stdio", "command": sys.executable, "args": [script, "stdio"],
                                   "cwd": str(deploy)})
    write_server(deploy, "open", {"transport": "stdio", "command": sys.executable, "args": [script, "stdio"],
                                  "cwd": str(deploy), "sandbox": False})
    write_agent(deploy, "user", agent("REACT", tools={"backends": ["mcp__boxed__read_file", "mcp__open__read_file"]}))
    gw = start_gateway()
    await eventually(lambda: status_of(client, gw, "boxed", "ready"), "sandboxed server ready")
    await eventually(lambda: status_of(client, gw, "open", "ready"), "unsandboxed server ready")
    secret = str(deploy / "application.yml")

    unconfined = await call_tool(upstream, client, gw, "user", "mcp__open__read_file", {"path": secret})
    assert "sk-test-secret-key-123" in unconfined["result"]  # the control: without the sandbox it is readable
    boxed = await call_tool(upstream, client, gw, "user", "mcp__boxed__read_file", {"path": secret})
    # inside, application.yml is masked (an empty or unreadable file), though its folder is bound
    assert boxed["result"] in ("CONTENT:", "ERROR:PermissionError")
    elsewhere = await call_tool(upstream, client, gw, "user", "mcp__boxed__read_file", {"path": "/etc/passwd"})
    assert elsewhere == {"result": "ERROR:FileNotFoundError"}


async def test_streamable_http_server_tools_and_recovery(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    remote = HttpToolServer().start()
    try:
        write_server(deploy, "remote", {"transport": "http", "url": remote.url, "headers": {"X-Team": "tests"}})
        write_agent(deploy, "user", agent("REACT", tools={"backends": ["mcp__remote__*"]}))
        gw = start_gateway()
        await eventually(lambda: status_of(client, gw, "remote", "ready"), "HTTP server ready")
        assert await call_tool(upstream, client, gw, "user", "mcp__remote__echo", {"text": "over http"}) == {
            "result": "echo: over http"}

        remote.stop()
        down = await call_tool(upstream, client, gw, "user", "mcp__remote__echo", {"text": "gone?"})
        assert down["ok"] is False
        await eventually(lambda: status_of(client, gw, "remote", "unavailable"), "HTTP server unavailable")

        remote = HttpToolServer(remote.port).start()
        await eventually(lambda: status_of(client, gw, "remote", "ready"), "HTTP server back")
        assert await call_tool(upstream, client, gw, "user", "mcp__remote__echo", {"text": "again"}) == {
            "result": "echo: again"}
    finally:
        remote.stop()


async def test_attack_a_server_that_never_ends_its_line_is_started_again(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    """A stdio server that writes one line without end: the SDK's reader collected it forever (a
    core busy, memory growing, every later call stuck behind it) while the server stayed
    ``ready``. The call's timeout now ends the session, and the process is started again."""
    write_server(deploy, "tools", stdio_server(timeoutMs=500))
    write_agent(deploy, "user", agent("REACT", tools={"backends": ["mcp__tools__*"]}))
    gw = start_gateway()
    await eventually(lambda: status_of(client, gw, "tools", "ready"), "server ready")
    before = await call_tool(upstream, client, gw, "user", "mcp__tools__instance", {})
    flooded = await call_tool(upstream, client, gw, "user", "mcp__tools__endless_line", {})
    assert flooded["ok"] is False and "timed out" in flooded["error"]
    await _until_restarted(upstream, client, gw, before)


async def test_attack_a_huge_result_or_tool_list_is_cut_to_size(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    """A 40 MB result went whole into the event stream, the chat file and every later model
    request of the chat; a server listing 100,000 tools cost seconds and 600 MB, and all of them
    went to the model. Results are cut at 1 MiB with a note, and a server gives at most 256 tools."""
    from app.mcp.client import MAX_TOOLS
    from app.mcp.results import MAX_RESULT_BYTES

    write_server(deploy, "tools", stdio_server())
    write_agent(deploy, "user", agent("REACT", tools={"backends": ["mcp__tools__*"]}))
    gw = start_gateway()
    await eventually(lambda: status_of(client, gw, "tools", "ready"), "server ready")
    result = await call_tool(upstream, client, gw, "user", "mcp__tools__big", {"size": 3 * MAX_RESULT_BYTES})
    assert isinstance(result, str)  # (the SDK's structured {"result": …}, too large: its JSON text, cut)
    text = result
    assert "x" * 1000 in text and "bytes, the first" in text
    assert len(text.encode()) < MAX_RESULT_BYTES + 200
    await call_tool(upstream, client, gw, "user", "mcp__tools__grow_many", {"count": MAX_TOOLS + 50})

    async def capped() -> bool:
        return len((await servers(client, gw))["tools"]["tools"]) == MAX_TOOLS

    await eventually(capped, f"the tool list cut at {MAX_TOOLS}")


async def test_attack_a_sandboxed_servers_secrets_are_not_on_any_command_line(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    """The server file's ``env`` went to bwrap as ``--setenv NAME VALUE``: every local user could
    read the token in ``ps`` or ``/proc/<pid>/cmdline``. It now reaches the server through the
    environment only, and the server still sees it."""
    secret = "argv-secret-4242"
    write_server(deploy, "tools", stdio_server(env={"MY_TOKEN": secret}))
    write_agent(deploy, "user", agent("REACT", tools={"backends": ["mcp__tools__*"]}))
    gw = start_gateway()
    await eventually(lambda: status_of(client, gw, "tools", "ready"), "server ready")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert secret.encode() not in cmdline.read_bytes(), f"the secret is on the command line of {cmdline}"
        except OSError:
            continue  # a process that ended meanwhile
    seen = await call_tool(upstream, client, gw, "user", "mcp__tools__read_file", {"path": "/proc/self/environ"})
    environ = seen["result"] if isinstance(seen, dict) else seen
    assert f"MY_TOKEN={secret}" in environ
    names = {entry.split("=", 1)[0] for entry in environ.removeprefix("CONTENT:").split("\x00") if "=" in entry}
    # nothing of the gateway's own environment (bwrap adds PWD for the working directory it sets)
    assert names - {"PWD"} == {"PATH", "HOME", "LANG", "TMPDIR", "MY_TOKEN"}
