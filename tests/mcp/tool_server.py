"""A real MCP server built with the ``mcp`` SDK, for the gateway's MCP client tests (SPEC §18).

``python tool_server.py stdio`` serves over stdin/stdout; ``python tool_server.py http PORT``
serves streamable HTTP on ``127.0.0.1:PORT/mcp``. Each process has its own ``instance`` id, so a
test can tell a restarted server from the first one; while a file ``HOLD`` is in its working
directory, the server refuses to start (exit code 4).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import TextContent

INSTANCE = uuid.uuid4().hex

server = MCPServer("gateway-test-tools")


@server.tool(description="Echo the text back")
def echo(text: str) -> str:
    return f"echo: {text}"


@server.tool(description="Add two integers; the sum as structured content")
def add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


@server.tool(description="Two text parts")
def parts() -> list[TextContent]:
    return [TextContent(type="text", text="first part"), TextContent(type="text", text="second part")]


@server.tool(description="Always fails with the given message")
def fail(message: str) -> str:
    raise ToolError(message)


@server.tool(description="Sleep, then answer")
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done sleeping"


@server.tool(description="The process's instance id (new after every start)")
def instance() -> str:
    return INSTANCE


@server.tool(description="Exit the server process at once, mid-call")
def crash() -> str:
    os._exit(3)


@server.tool(description="Read a file and return its text, or the error")
def read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return "CONTENT:" + handle.read()
    except OSError as exc:
        return f"ERROR:{type(exc).__name__}"


@server.tool(description="A text result of the given size in bytes")
def big(size: int) -> str:
    return "x" * size


@server.tool(description="Start writing one line to stdout that never ends, then never answer")
async def endless_line() -> str:
    import threading

    def flood() -> None:
        chunk = b"x" * 65536
        while True:
            os.write(1, chunk)

    threading.Thread(target=flood, daemon=True).start()
    await asyncio.sleep(3600)
    return "unreachable"


@server.tool(description="Register many tools at once and tell the client the list changed")
async def grow_many(count: int, ctx: Context) -> str:
    for n in range(count):
        server.add_tool(lambda: "many", name=f"many_{n}", description="one of many")
    await ctx.notify_tools_changed()
    return f"added {count}"


@server.tool(description="Register one more tool and tell the client the list changed")
async def grow(name: str, ctx: Context) -> str:
    server.add_tool(lambda: f"I am {name}", name=name, description=f"grown tool {name}")
    await ctx.notify_tools_changed()
    return f"added {name}"


LISTINGS = 0
_list_tools = server.list_tools


async def _counted_list_tools() -> list:  # type: ignore[type-arg]
    global LISTINGS
    LISTINGS += 1
    return await _list_tools()


server.list_tools = _counted_list_tools  # type: ignore[method-assign]


@server.tool(description="How many times a client listed the tools")
def listings() -> int:
    return LISTINGS


@server.tool(description="Announce a tool list change `times` times, `gap` seconds apart, then add one tool")
async def churn(times: int, gap: float, name: str, ctx: Context) -> str:
    for _ in range(times):
        await ctx.notify_tools_changed()
        await asyncio.sleep(gap)
    server.add_tool(lambda: f"I am {name}", name=name, description=f"grown tool {name}")
    await ctx.notify_tools_changed()
    return f"churned {times}"


if __name__ == "__main__":
    if os.path.exists("HOLD"):  # the test keeps this server from starting while the file is there
        sys.stderr.write("held by the HOLD file\n")
        sys.exit(4)
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
