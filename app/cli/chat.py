"""``agw chat AGENT`` (SPEC §22): talk to an agent from the terminal.

Reads one message per line from stdin (so it can be piped), sends it to ``POST /api/ap/query``
and renders the SSE stream (SPEC §6) as it arrives: answer text delta by delta, reasoning dim and
italic, tool and action calls on their own lines (name, arguments, a summary of the result). A
frontend tool is answered from the next stdin line (``POST /api/ap/submit``). The conversation
stays in one chat. Exit on end of input: 0, or 1 when a run failed.

With ``--url`` it talks to a running gateway; without, it starts the gateway of the deployment
folder in-process on a free loopback port (the same HTTP API, nothing else listens).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import uvicorn
from rich.console import Console
from rich.text import Text

from app.cli.options import (
    DirOption,
    LogLevelOption,
    deployment_dir,
    effective_log_level,
    err_console,
    fail,
    log_unknown_keys,
    out_console,
)
from app.cli.serve import listening_socket
from app.config import load_settings
from app.paths import ascii_int

#: how much of a tool result is shown
RESULT_CHARS = 240
#: how long the in-process gateway may take to start before ``agw chat`` gives up
START_TIMEOUT_S = 60.0

ReadLine = Callable[[], str | None]

STYLES = {
    "reasoning": "dim italic",
    "content": "",
    "tool": "cyan",
    "result": "dim cyan",
    "input": "bold yellow",
    "note": "dim",
    "error": "bold red",
}


class ChatError(Exception):
    """The gateway could not be reached or refused the request; the message says why."""


def read_stdin_line() -> str | None:
    """The next stdin line without its newline, or None at end of input."""
    line = sys.stdin.readline()
    return None if line == "" else line.rstrip("\r\n")


def compact(value: Any, limit: int = RESULT_CHARS) -> str:
    """One line of JSON (or the text itself), cut at ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def frontend_answer(line: str, args: dict[str, Any]) -> dict[str, Any]:
    """The ``params`` of ``POST /api/ap/submit`` for a terminal answer to a frontend tool.

    A JSON object is sent as it is. Otherwise the answer takes the shape the confirm dialog
    viewport submits (``viewports/confirm_dialog.html``): an option by number or text, or free
    text; ``/cancel`` declines.
    """
    text = line.strip()
    if text.startswith("{"):
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            if isinstance(value, dict):
                return value
    if text.lower() == "/cancel":
        return {"confirmed": False, "selectedOption": None, "selectedIndex": None, "freeText": None,
                "answer": "cancelled"}
    raw_options = args.get("options")
    options = [str(option) for option in raw_options] if isinstance(raw_options, list) else []
    index: int | None = None
    choice = ascii_int(text)
    if choice is not None and 1 <= choice <= len(options):
        index = choice - 1
    else:
        index = next((i for i, option in enumerate(options) if option.lower() == text.lower()), None)
    option = options[index] if index is not None else None
    free_text = text if option is None and text else None
    return {"confirmed": True, "selectedOption": option, "selectedIndex": index, "freeText": free_text,
            "answer": option or free_text or ""}


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON events of an SSE body (``data:`` lines joined per message; comments skipped)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield json.loads("\n".join(data))
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield json.loads("\n".join(data))


@dataclass
class _Call:
    name: str
    frontend: bool = False
    args: list[str] = field(default_factory=list)

    def arguments(self) -> Any:
        raw = "".join(self.args)
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return raw


class ChatSession:
    """One terminal conversation with ``agent`` through a gateway's HTTP API."""

    def __init__(self, http: httpx.Client, agent: str, chat_id: str | None, console: Console,
                 read_line: ReadLine, *, interactive: bool = False) -> None:
        self._http = http
        self._interactive = interactive  # a terminal echoes what is typed; piped input is echoed here
        self._agent = agent
        self.chat_id = chat_id
        self._console = console
        self._read_line = read_line
        self._open: str | None = None  # the block whose deltas are being printed: reasoning / content
        self._calls: dict[str, _Call] = {}
        self._actions: dict[str, _Call] = {}
        self._input_closed = False
        self._run_id = ""

    # -- output -----------------------------------------------------------------------------

    def _end_block(self) -> None:
        if self._open is not None:
            self._console.print()
            self._open = None

    def _stream(self, block: str, delta: str) -> None:
        if self._open != block:
            self._end_block()
            self._open = block
            if block == "reasoning":  # labelled too, so it stays apart where styles are not shown
                self._console.print(Text("[thinking] ", style=STYLES["note"]), end="")
        self._console.print(Text(delta, style=STYLES[block]), end="")

    def _line(self, style: str, label: str, text: str = "") -> None:
        self._end_block()
        line = Text(f"[{label}]", style=STYLES[style])
        if text:
            line.append(f" {text}", style=STYLES[style])
        self._console.print(line)

    # -- one run ----------------------------------------------------------------------------

    def ask(self, message: str) -> bool:
        """Send ``message``, render the run; True when it completed (False: error or cancelled)."""
        body: dict[str, Any] = {"message": message, "agentKey": self._agent}
        if self.chat_id:
            body["chatId"] = self.chat_id
        outcome = "cancel"
        try:
            with self._http.stream("POST", "/api/ap/query", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise ChatError(f"query refused (HTTP {response.status_code}): {_message_of(response)}")
                for event in sse_events(response.iter_lines()):
                    kind = str(event.get("type", ""))
                    if kind in ("run.complete", "run.error", "run.cancel"):
                        outcome = kind.removeprefix("run.")
                    self._on_event(kind, event)
        finally:
            self._end_block()
        return outcome == "complete"

    def _on_event(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "run.start":
            self._run_id = str(event.get("runId", ""))
        if kind in ("chat.start", "run.start"):
            if event.get("chatId") and event["chatId"] != self.chat_id:
                self.chat_id = str(event["chatId"])
                self._line("note", "chat", self.chat_id)
        elif kind == "reasoning.delta":
            self._stream("reasoning", str(event.get("delta", "")))
        elif kind == "content.delta":
            self._stream("content", str(event.get("delta", "")))
        elif kind in ("reasoning.end", "content.end"):
            self._end_block()
        elif kind.startswith("tool."):
            self._on_tool(kind, event)
        elif kind.startswith("action."):
            self._on_action(kind, event)
        elif kind == "plan.create":
            for number, task in enumerate(event.get("plan") or [], start=1):
                description = task.get("description", "") if isinstance(task, dict) else task
                self._line("note", "plan", f"{number}. {description}")
        elif kind in ("task.start", "task.fail"):
            label = "task" if kind == "task.start" else "task failed"
            self._line("note", label, str(event.get("description") or event.get("taskId", "")))
        elif kind == "source.snapshot":
            self._line("note", "source", " ".join(str(event.get(k) or "") for k in ("title", "url")).strip())
        elif kind == "artifact.publish":
            artifact = event.get("artifact") or {}
            self._line("note", "artifact", f"{artifact.get('name', '')} {artifact.get('url', '')}".strip())
        elif kind == "run.error":
            error = event.get("error") or {}
            text = error.get("message") or error.get("code") if isinstance(error, dict) else error
            self._line("error", "error", str(text))
        elif kind == "run.cancel":
            self._line("note", "cancelled")

    def _on_tool(self, kind: str, event: dict[str, Any]) -> None:
        tool_id = str(event.get("toolId", ""))
        if kind == "tool.start":
            self._end_block()
            self._calls[tool_id] = _Call(str(event.get("toolName") or event.get("toolKey") or "tool"),
                                         frontend=bool(event.get("toolType")))
            return
        call = self._calls.get(tool_id)
        if call is None:
            return
        if kind == "tool.args":
            call.args.append(str(event.get("delta", "")))
        elif kind == "tool.end":
            self._line("tool", "tool", f"{call.name} {compact(call.arguments())}")
            if call.frontend:
                self._answer_frontend(str(event.get("runId") or self._run_id), tool_id, call)
        elif kind == "tool.result":
            self._line("result", "tool", f"{call.name} -> {compact(event.get('result'))}")

    def _on_action(self, kind: str, event: dict[str, Any]) -> None:
        action_id = str(event.get("actionId", ""))
        if kind == "action.start":
            self._end_block()
            self._actions[action_id] = _Call(str(event.get("actionName") or "action"))
        elif kind == "action.args" and action_id in self._actions:
            self._actions[action_id].args.append(str(event.get("delta", "")))
        elif kind == "action.end" and action_id in self._actions:
            action = self._actions[action_id]
            self._line("tool", "action", f"{action.name} {compact(action.arguments())}")

    # -- frontend tools ---------------------------------------------------------------------

    def _answer_frontend(self, run_id: str, tool_id: str, call: _Call) -> None:
        """Ask on the terminal, read the answer line, ``POST /api/ap/submit`` it."""
        args = call.arguments()
        args = args if isinstance(args, dict) else {}
        self._line("input", "input", str(args.get("question") or f"{call.name} is waiting for an answer"))
        options = args.get("options")
        if isinstance(options, list) and options:
            self._console.print(Text("  ".join(f"{n}) {o}" for n, o in enumerate(options, start=1)),
                                     style=STYLES["input"]))
        self._console.print(Text("answer> ", style=STYLES["input"]), end="")
        line = None if self._input_closed else self._read_line()
        if not self._interactive:
            self._console.print(line or "")
        if line is None:
            self._input_closed = True
            self._line("note", "input closed: cancelling the run")
            self._http.post("/api/ap/interrupt", json={"runId": run_id})
            return
        params = frontend_answer(line, args)
        response = self._http.post("/api/ap/submit", json={"runId": run_id, "toolId": tool_id, "params": params})
        data = _data_of(response)
        if response.status_code != 200 or not isinstance(data, dict) or not data.get("accepted"):
            status = data.get("status") if isinstance(data, dict) else None
            self._line("error", "input", f"not accepted: {status or _message_of(response)}")

    # -- the conversation -------------------------------------------------------------------

    def run(self) -> int:
        """Read messages until end of input; 0, or 1 when any run did not complete."""
        failed = False
        while not self._input_closed:
            if self._interactive:
                self._console.print(Text("you> ", style="bold"), end="")
            line = self._read_line()
            if line is None:
                break
            if not line.strip():
                continue
            failed = not self.ask(line) or failed
        return 1 if failed else 0


def _data_of(response: httpx.Response) -> Any:
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            return body.get("data")
    return None


def _message_of(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and body.get("msg"):
            return str(body["msg"])
    return response.text[:200] or response.reason_phrase


@contextlib.contextmanager
def local_gateway(folder: Path, log_level: str) -> Iterator[str]:
    """The deployment folder's gateway on a free loopback port, in a background thread; its URL."""
    settings = load_settings(folder)
    log_unknown_keys(settings.base_dir)
    from app.api.app import create_app  # the whole gateway: only for an in-process chat

    app = create_app(settings)
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level.lower(),
                                           log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="agw-chat-gateway", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ChatError("the in-process gateway did not start (see the log above)")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def chat(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="The agent key.")],
    url: Annotated[str | None, typer.Option("--url", help="A running gateway (default: start the deployment "
                                                          "folder's gateway in-process).")] = None,
    chat_id: Annotated[str | None, typer.Option("--chat-id", help="Continue this chat.")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="AGW_TOKEN",
                                              help="Bearer token (JWT) when the gateway has auth on.")] = None,
    dir: DirOption = None,
    log_level: LogLevelOption = None,
) -> int:
    """Talk to an agent: one message per stdin line, the answer streamed as it comes."""
    level = effective_log_level(ctx, default="WARNING")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    console = out_console()
    try:
        with contextlib.ExitStack() as stack:
            base = url or stack.enter_context(local_gateway(deployment_dir(ctx, dir), level))
            http = stack.enter_context(httpx.Client(base_url=base.rstrip("/"), headers=headers,
                                                    timeout=httpx.Timeout(30.0, read=None)))
            session = ChatSession(http, agent, chat_id, console, read_stdin_line, interactive=sys.stdin.isatty())
            return session.run()
    except ChatError as exc:
        raise fail(str(exc), 1) from None
    except httpx.TransportError as exc:
        err_console().print(Text(f"agw: cannot talk to the gateway at {url or 'the in-process gateway'}: {exc}"))
        raise typer.Exit(1) from None
