"""The ``agw`` command line (SPEC §22) as real subprocesses (``python -m app …``).

``validate`` (a good folder, a broken agent file, a malformed or typo'd configuration), ``init``
(whose folder validates, serves every demo agent and chats in-process), ``chat`` against a
running gateway on the fake upstream (streamed text, tool calls, a frontend tool answered from
stdin), global options before and after the sub-command, a bad ``--log-level`` and a busy port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.engine.helpers import call, tool_message
from tests.support.deployment import REPO, agent, write_agent
from tests.support.server import GatewayServer, wait_healthy
from tests.support.sse import collect

DEMO_AGENTS = ["demoPlain", "demoThinking", "demoReact", "demoPlanExecute", "demoConfirm", "demoAction",
               "demoGraphWeather", "demoGraphReview"]
QUESTION = {"question": "Which city?", "options": ["Paris", "Rome"], "allowFreeText": False}
#: bounds that only turn a hang into a failure
HANG = 120


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "SERVER_", "MEMORY_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


def agw(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m app ARGS`` to the end."""
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd or REPO, env=_env(), input=stdin,
                          capture_output=True, text=True, timeout=HANG)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr


# -- validate ------------------------------------------------------------------------------


def test_validate_a_good_folder_exits_0(deploy: Path) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    done = agw("validate", str(deploy))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 0 rejected" in done.stdout
    assert "agents" in done.stdout and "rejected" in done.stdout  # the summary table


def test_validate_a_broken_agent_file_exits_1_with_file_line_and_reason(deploy: Path) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    (deploy / "agents" / "broken.json").write_text('{\n  "key": "broken",\n  "mode": "ONESHOT",,\n}\n')
    write_agent(deploy, "lost", agent("ONESHOT", model="no-such-model"))
    done = agw("validate", str(deploy))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("agents/broken.json:3:") and "trailing comma" in line for line in lines), lines
    assert any(line.startswith("agents/lost.json: agent:") and "no-such-model" in line for line in lines), lines
    assert "FAILED: 2 rejected" in done.stdout
    _no_traceback(done)


def test_validate_reports_a_typo_key_with_the_closest_known_key(deploy: Path) -> None:
    with (deploy / "application.yml").open("a", encoding="utf-8") as file:
        file.write("sever:\n  port: 9999\n")
    done = agw("validate", str(deploy))
    assert done.returncode == 0, done.stdout + done.stderr  # a warning: the gateway starts with it
    assert "application.yml: unknown key: 'sever' (did you mean 'server'?)" in done.stdout
    strict = agw("validate", "--strict", str(deploy))
    assert strict.returncode == 1 and "'sever'" in strict.stdout


def test_validate_a_malformed_configuration_names_file_and_line(deploy: Path) -> None:
    (deploy / "application.yml").write_text("agent: [\n", encoding="utf-8")
    done = agw("validate", str(deploy))
    assert done.returncode == 1
    assert done.stdout.startswith("application.yml:2:"), done.stdout
    _no_traceback(done)


# -- init, then validate, serve and chat on it ---------------------------------------------


@pytest.fixture(scope="module")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("init") / "deployment"
    done = agw("init", str(folder))
    assert done.returncode == 0, done.stderr
    return folder


def test_init_writes_the_demo_deployment_and_refuses_a_non_empty_folder(initialized: Path) -> None:
    for path in ("application.yml", "README.md", "models/local-demo.json", "tools/confirm_dialog.frontend",
                 "viewports/confirm_dialog.html", "skills/math_basic/SKILL.md"):
        assert (initialized / path).is_file(), path
    assert {p.stem for p in (initialized / "agents").glob("*.json")} == set(DEMO_AGENTS)
    again = agw("init", str(initialized))
    assert again.returncode == 1 and "not empty" in again.stderr and "--force" in again.stderr
    assert agw("init", "--force", str(initialized)).returncode == 0
    assert agw("validate", str(initialized)).returncode == 0


@pytest.fixture
def served(initialized: Path) -> Iterator[str]:
    """``agw serve`` on the initialized folder, with the global options after the sub-command."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--dir", str(initialized), "--port", str(port),
         "--log-level", "warning"],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_healthy(url, process, HANG):
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"agw serve did not start: {err.decode()[-2000:]}")
    yield url
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    assert b"Traceback" not in err, err.decode()[-2000:]


async def test_serve_streams_every_demo_agent_of_an_initialized_folder(served: str) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        listed = (await client.get(f"{served}/api/ap/agents")).json()["data"]
        assert set(DEMO_AGENTS) <= {a["key"] for a in listed}
        events = await collect(client, f"{served}/api/ap/query", {"agentKey": "demoPlain", "message": "hello"})
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "run.complete", kinds
    assert "content.delta" in kinds


def test_chat_in_process_on_an_initialized_folder(initialized: Path) -> None:
    done = agw("chat", "demoConfirm", "--dir", str(initialized), stdin="book a table\n1\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[tool] confirm_dialog " in done.stdout
    assert "answer> 1" in done.stdout
    assert 'You asked: "book a table". You confirmed: Yes.' in done.stdout


# -- chat against a running gateway ---------------------------------------------------------


def test_chat_streams_text_shows_tool_calls_and_answers_a_frontend_tool_from_stdin(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer]
) -> None:
    tools = {"backends": ["mock_city_weather"], "frontends": ["confirm_dialog"], "actions": []}
    write_agent(deploy, "trip", agent("REACT", tools=tools, reasoning=True))
    gw = start_gateway()
    upstream.enqueue(
        call("c1", "mock_city_weather", {"city": "Shanghai"}, text=("Checking the weather. ",)),
        call("c2", "confirm_dialog", QUESTION),
        text_script(["It is ", "sunny ", "in Rome."], reasoning=["Rome ", "was chosen."]),
    )
    done = agw("chat", "trip", "--url", gw.url, stdin="plan my trip\n2\n")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    lines = out.splitlines()
    assert "Checking the weather. " in lines
    assert any(line.startswith("[tool] mock_city_weather {") and "Shanghai" in line for line in lines), lines
    assert any(line.startswith("[tool] mock_city_weather -> {") for line in lines), lines
    assert "[input] Which city?" in lines and "1) Paris  2) Rome" in lines and "answer> 2" in lines
    assert "[thinking] Rome was chosen." in lines
    assert "It is sunny in Rome." in lines
    assert out.index("[tool] mock_city_weather") < out.index("[input] Which city?") < out.index("It is sunny")
    # the frontend tool's answer reached the model as the tool result of its own call
    submitted = orjson.loads(tool_message(upstream.requests[2].body, "c2")["content"])
    assert submitted == {"confirmed": True, "selectedOption": "Rome", "selectedIndex": 1, "freeText": None,
                         "answer": "Rome"}


def test_chat_keeps_one_chat_across_lines_and_fails_clearly_on_an_unknown_agent(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer]
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script(["first ", "answer"]), text_script(["second ", "answer"]))
    done = agw("chat", "plain", "--url", gw.url, stdin="one\n\ntwo\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "first answer" in done.stdout and "second answer" in done.stdout
    chats = httpx.get(f"{gw.url}/api/ap/chats").json()["data"]
    assert len(chats) == 1
    second: dict[str, Any] = upstream.requests[1].body
    assert [m["content"] for m in second["messages"] if m["role"] == "user"] == ["one", "two"]
    unknown = agw("chat", "nobody", "--url", gw.url, stdin="hi\n")
    assert unknown.returncode == 1 and "unknown agent" in unknown.stderr
    _no_traceback(unknown)


# -- global options, bad options, busy port ------------------------------------------------


def test_global_options_go_before_or_after_the_sub_command(deploy: Path, tmp_path: Path) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (("--dir", str(deploy), "validate"), ("validate", "--dir", str(deploy)),
                 ("--dir", str(empty), "validate", "--dir", str(deploy)),
                 ("--log-level", "debug", "validate", "--log-level", "ERROR", "--dir", str(deploy))):
        done = agw(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert re.search(r"│ agents\s*│\s*1\s*│\s*0\s*│", done.stdout), done.stdout  # this folder's one agent


@pytest.mark.parametrize("args", [("--log-level", "bogus", "serve"), ("serve", "--log-level", "bogus")])
def test_a_bad_log_level_is_one_clean_line_and_exit_2(args: tuple[str, ...]) -> None:
    done = agw(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--log-level" in lines[0] and "'bogus'" in lines[0], done.stderr
    assert done.stdout == ""


def test_serve_warns_of_unknown_keys_and_refuses_a_busy_port_before_the_app_starts(deploy: Path) -> None:
    with (deploy / "application.yml").open("a", encoding="utf-8") as file:
        file.write("sever:\n  port: 1\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = agw("serve", "--dir", str(deploy), "--port", str(port))
    assert done.returncode == 2
    assert f"agw: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert f"unknown configuration key 'sever' in {deploy / 'application.yml'} (did you mean 'server'?)" in done.stderr
    assert "WARNING" in done.stderr.split("unknown configuration key")[0].splitlines()[-1]
    assert "catalog v" not in done.stderr and "Application startup" not in done.stderr  # the app never started
    assert done.stdout == ""
    _no_traceback(done)


def test_the_agw_command_starts_without_importing_the_gateway() -> None:
    """``agw credentials list``, ``validate`` and ``init`` imported the whole gateway (FastAPI, the
    MCP SDK, every route) through ``app.cli``: about 3 s before anything ran, 4.8 s for a
    credentials listing. Only ``serve``, ``sidecar`` and an in-process ``chat`` need it now."""
    probe = ("import sys, app.cli; heavy = sorted(m for m in ('app.gateway', 'app.api.app', 'fastapi', 'mcp') "
             "if m in sys.modules); print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported by app.cli: {result.stdout.strip()}"
