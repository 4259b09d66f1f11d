"""MCP server files, tool names and results (SPEC §18) on their own: what is rejected, and why."""

from __future__ import annotations

from pathlib import Path

import mcp_types as types
import pytest

from app.catalog.definitions import ToolDefinition, ToolKind
from app.catalog.loader import build_catalog
from app.catalog.mcp import McpTools, mcp_tool_name, split_mcp_name
from app.config import load_settings
from app.errors import DefinitionError, ToolError
from app.mcp.results import tool_result
from app.mcp.specs import check_server_key, parse_server
from app.tools.registry import builtin_tool_names
from tests.support.deployment import agent, make_deployment, write_agent


@pytest.mark.parametrize(("body", "reason"), [
    ({}, "'transport' must be \"stdio\" or \"http\""),
    ({"transport": "stdio"}, "command: Field required"),
    ({"transport": "http", "url": "file:///etc/passwd"}, "url must be an http(s) URL"),
    ({"transport": "stdio", "command": "x", "timeoutMs": 0}, "timeoutMs"),
    ({"transport": "stdio", "command": "x", "shell": True}, "shell: unknown field"),
])
def test_server_files_are_rejected_with_a_reason(body: dict[str, object], reason: str) -> None:
    with pytest.raises(DefinitionError) as refused:
        parse_server(body)
    assert reason in refused.value.message


def test_server_keys_cannot_hold_the_separator_or_leave_the_folder() -> None:
    assert check_server_key("weather-v2") == "weather-v2"
    for bad in ("a__b", "../x", "", "files_"):  # "files_": mcp__files___echo reads as server files, tool _echo
        with pytest.raises(DefinitionError):
            check_server_key(bad)
    assert split_mcp_name(mcp_tool_name("files", "read__all")) == ("files", "read__all")
    assert split_mcp_name("mcp__files") is None and split_mcp_name("city_datetime") is None


def test_agents_resolve_mcp_names_against_the_servers(tmp_path: Path) -> None:
    deploy = make_deployment(tmp_path / "deploy", "http://127.0.0.1:9")
    write_agent(deploy, "wild", agent("REACT", tools={"backends": ["mcp__up__*"]}))
    write_agent(deploy, "down", agent("REACT", tools={"backends": ["mcp__down__echo", "mcp__up__echo"]}))
    write_agent(deploy, "typo", agent("REACT", tools={"backends": ["mcp__nowhere__echo"]}))
    write_agent(deploy, "malformed", agent("REACT", tools={"backends": ["mcp__up"]}))
    settings = load_settings(deploy, files=(Path("application.yml"),), env={})

    def tool(server: str, name: str) -> ToolDefinition:
        return ToolDefinition(mcp_tool_name(server, name), ToolKind.BACKEND, name, {"type": "object"})

    servers = {
        "up": McpTools("up", "ready", {t.name: t for t in (tool("up", "echo"), tool("up", "add"))}),
        "down": McpTools("down", "unavailable", {}, "the server process exited"),
    }
    catalog = build_catalog(settings, builtin_tool_names(), mcp=servers)
    assert [t.name for t in catalog.agents["wild"].stages["react"].tools] == ["mcp__up__echo", "mcp__up__add"]
    assert [t.name for t in catalog.agents["down"].stages["react"].tools] == ["mcp__up__echo"]
    reasons = {Path(r.file).stem: r.reason for r in catalog.rejections}
    assert "no MCP server 'nowhere'" in reasons["typo"]
    assert "malformed MCP tool name 'mcp__up'" in reasons["malformed"]


def test_results_become_tool_results() -> None:
    image = types.ImageContent(type="image", data="aGk=", mime_type="image/png")
    text = types.TextContent(type="text", text="a chart")
    assert tool_result("s", "t", types.CallToolResult(content=[text, image])) == "a chart\n[image image/png omitted]"
    structured = types.CallToolResult(content=[text], structured_content={"points": [1, 2]})
    assert tool_result("s", "t", structured) == {"points": [1, 2]}
    with pytest.raises(ToolError) as failed:
        tool_result("s", "t", types.CallToolResult(content=[types.TextContent(type="text", text="nope")],
                                                   is_error=True))
    assert failed.value.message == "MCP tool 't' of server 's' failed: nope"


def test_attack_a_stdio_servers_endless_stderr_is_cut_back_to_its_tail() -> None:
    """A server writing to stderr without end filled the disk through the gateway's temporary file
    (only its tail is ever read). Past ``STDERR_MAX_BYTES`` the file is cut back to its tail, and
    the server's next writes (it shares the file's offset) land right after it."""
    import os
    import subprocess
    import sys
    import tempfile

    from app.mcp.client import _STDERR_TAIL_BYTES, STDERR_MAX_BYTES, _stderr_tail, _trim

    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as errlog:
        writer = subprocess.run(
            [sys.executable, "-c", f"import sys; sys.stderr.write('x' * {STDERR_MAX_BYTES * 2} + '\\nlast words\\n')"],
            stderr=errlog, check=True)
        assert writer.returncode == 0 and os.fstat(errlog.fileno()).st_size > STDERR_MAX_BYTES
        _trim(errlog.fileno())
        assert os.fstat(errlog.fileno()).st_size <= _STDERR_TAIL_BYTES
        assert _stderr_tail(errlog) == "last words"
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('after the cut\\n')"],
                       stderr=errlog, check=True)
        assert _stderr_tail(errlog) == "after the cut"
        assert os.fstat(errlog.fileno()).st_size <= _STDERR_TAIL_BYTES + 20
