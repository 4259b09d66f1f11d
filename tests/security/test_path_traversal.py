"""No name a client or a model supplies leaves its folder (SPEC §4 "Bad input", §9 "Paths").

Every parameter that names a file — ``chatId`` (chat and query), ``agentKey`` (agent and
query), ``viewportKey``, ``file`` (data), and the ``_skill_run_script_`` tool's ``skill``
and ``script`` — is attacked with ``..``, absolute paths, encoded and double-encoded
separators, backslashes, NUL bytes and symlinks that point out of the folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.catalog.definitions import AgentDefinition, Catalog, SkillDefinition
from app.config import load_settings
from app.devtools import FakeUpstream
from app.devtools.script import text_script
from app.errors import ToolError
from app.tools.base import ToolContext
from app.tools.skill_script import run_skill_script
from tests.support.deployment import REPO, agent, make_deployment, write_agent
from tests.support.server import GatewayServer

SECRET = "TOP-SECRET-OUTSIDE"

ATTACKS = [
    "..", "../x", "../../etc/passwd", "/etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e%2fsecret.txt",
    "..%252fsecret.txt", "a/../../secret.txt", "..\\secret.txt", "x\x00y", "x%00y", "....//secret.txt",
    "~/secret.txt", "C:\\secret.txt", "a/b", ".", "/", "",
]


@pytest.fixture(scope="module")
def traversal_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    root = tmp_path_factory.mktemp("traversal")
    outside = root / "secret.txt"
    outside.write_text(SECRET, encoding="utf-8")
    (root / "secret.html").write_text(f"<p>{SECRET}</p>", encoding="utf-8")
    chat_line = ('{"_type":"query","chatId":"evil","runId":"r","updatedAt":1,'
                 f'"query":{{"agentKey":"plain","message":"{SECRET}"}}}}\n')
    (root / "secret_chat.json").write_text(chat_line, encoding="utf-8")
    with FakeUpstream(responder=lambda body: text_script(["ok"])) as upstream:
        deploy = make_deployment(root / "deploy", upstream.url)
        write_agent(deploy, "plain", agent("ONESHOT"))
        (deploy / "data" / "fine.txt").write_text("fine", encoding="utf-8")
        (deploy / "data" / ".env").write_text(SECRET, encoding="utf-8")
        (deploy / "data" / ".agw").mkdir(parents=True, exist_ok=True)
        (deploy / "data" / ".agw" / "probe.json").write_text(SECRET, encoding="utf-8")
        os.symlink(deploy / "data" / ".agw", deploy / "data" / "state")
        (deploy / "data" / "page.html").write_text("<script>fetch('/api/ap/chats')</script>", encoding="utf-8")
        os.symlink(outside, deploy / "data" / "link.txt")
        os.symlink(root, deploy / "data" / "linkdir")
        os.symlink(root / "secret.html", deploy / "viewports" / "evil.html")
        (deploy / "chats").mkdir(exist_ok=True)
        os.symlink(root / "secret_chat.json", deploy / "chats" / "evil.json")
        with GatewayServer(deploy) as server:
            yield server


def _refused(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in (statuses or (400, 404)), (response.status_code, response.text)
    assert response.json()["code"] > 0
    assert SECRET not in response.text


@pytest.mark.parametrize("attack", ATTACKS)
def test_get_parameters(traversal_gateway: GatewayServer, attack: str) -> None:
    base = traversal_gateway.url
    with httpx.Client(timeout=30) as client:
        _refused(client.get(f"{base}/api/ap/chat", params={"chatId": attack}))
        _refused(client.get(f"{base}/api/ap/agent", params={"agentKey": attack}))
        _refused(client.get(f"{base}/api/ap/viewport", params={"viewportKey": attack}))
        _refused(client.get(f"{base}/api/ap/data", params={"file": attack}))
        _refused(client.post(f"{base}/api/ap/query", json={"chatId": attack, "message": "hi"}))
        if attack:
            _refused(client.post(f"{base}/api/ap/query", json={"agentKey": attack, "message": "hi"}))


def test_raw_encoded_query_strings(traversal_gateway: GatewayServer) -> None:
    """Hand-written query strings (no client-side re-encoding)."""
    with httpx.Client(timeout=30) as client:
        for raw in ("file=..%2Fsecret.txt", "file=%2E%2E/secret.txt", "file=..%5Csecret.txt", "file=fine.txt%00.png",
                    "file=%2Fetc%2Fpasswd", "file=linkdir%2Fsecret.txt", "file=..%252Fsecret.txt"):
            _refused(client.get(f"{traversal_gateway.url}/api/ap/data?{raw}"))
        assert client.get(f"{traversal_gateway.url}/api/ap/data?file=fine.txt").text == "fine"


def test_attack_a_double_encoded_dot_or_a_symlink_reads_no_hidden_file(traversal_gateway: GatewayServer) -> None:
    """The hidden-file rule looked at the name once decoded, and ``confine`` decoded it again:
    ``%252Eenv`` passed as ``%2Eenv`` and opened ``data/.env``. A symlink inside the data folder
    into ``.agw`` passed too. The rule now judges the path that is opened."""
    with httpx.Client(timeout=30) as client:
        for raw in ("file=.env", "file=%2Eenv", "file=%252Eenv", "file=%252eenv", "file=state%2Fprobe.json",
                    "file=state/probe.json", "file=.agw/probe.json"):
            response = client.get(f"{traversal_gateway.url}/api/ap/data?{raw}")
            assert response.status_code in (400, 404) and SECRET not in response.text, (raw, response.text)


def test_a_data_file_never_runs_as_a_page_of_the_gateway(traversal_gateway: GatewayServer) -> None:
    """An HTML or SVG file in the data folder was served inline as a page of the gateway's own
    origin, beside the web console; it now comes sandboxed and unsniffed, as artifacts do."""
    with httpx.Client(timeout=30) as client:
        response = client.get(f"{traversal_gateway.url}/api/ap/data", params={"file": "page.html"})
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("sandbox")


def test_symlinks_out_of_the_folder(traversal_gateway: GatewayServer) -> None:
    with httpx.Client(timeout=30) as client:
        base = traversal_gateway.url
        _refused(client.get(f"{base}/api/ap/data", params={"file": "link.txt"}), 400)
        _refused(client.get(f"{base}/api/ap/data", params={"file": "linkdir/secret.txt"}), 400)
        _refused(client.get(f"{base}/api/ap/viewport", params={"viewportKey": "evil"}), 404)  # rejected at load
        for response in (client.get(f"{base}/api/ap/chat", params={"chatId": "evil"}),
                         client.post(f"{base}/api/ap/query", json={"chatId": "evil", "message": "hi"})):
            _refused(response, 400, 404)
        listed = client.get(f"{base}/api/ap/chats").json()["data"]
        assert all(chat["chatId"] != "evil" for chat in listed) and SECRET not in str(listed)


# -- the _skill_run_script_ tool, called directly ------------------------------------------


@pytest.fixture
def skill_ctx(tmp_path: Path) -> Iterator[ToolContext]:
    deploy = tmp_path / "deploy"
    folder = deploy / "skills" / "math_basic"
    folder.mkdir(parents=True)
    for item in (REPO / "skills" / "math_basic").iterdir():
        if item.is_file():
            (folder / item.name).write_bytes(item.read_bytes())
    (folder / "scripts").mkdir()
    (folder / "scripts" / "ok.py").write_text("print('inside')\n", encoding="utf-8")
    (tmp_path / "evil.py").write_text(f"print('{SECRET}')\n", encoding="utf-8")
    os.symlink(tmp_path / "evil.py", folder / "scripts" / "link.py")
    os.symlink(tmp_path, folder / "linkdir")
    skill = SkillDefinition(id="math_basic", name="math", description="d", body="", folder=folder)
    agent_def = AgentDefinition(key="t", name="t", icon=None, description="", mode="REACT", stages={}, skills=(skill,))
    settings = load_settings(deploy, files=(), env={})
    ctx = ToolContext(settings=settings, catalog=Catalog(skills={"math_basic": skill}), agent=agent_def,
                      run_id="run_x", chat_id="chat_x", http=httpx.AsyncClient(), timeout_s=30.0)
    yield ctx


SCRIPT_ATTACKS = ["../../../evil.py", str(Path("/tmp/evil.py")), "scripts/../../evil.py", "scripts%2f..%2f..%2fevil.py",
                  "scripts/link.py", "linkdir/evil.py", "scripts/ok.py\x00.sh", "..\\evil.py", "~/evil.py"]
SKILL_ATTACKS = ["../math_basic", "/etc", "math_basic/../x", "..", "math%2fbasic", "math_basic\x00", "other"]


async def test_skill_script_paths(skill_ctx: ToolContext) -> None:
    ok = await run_skill_script({"skill": "math_basic", "script": "scripts/ok.py"}, skill_ctx)
    assert ok["stdout"].strip() == "inside"
    for script in SCRIPT_ATTACKS:
        with pytest.raises(ToolError):
            await run_skill_script({"skill": "math_basic", "script": script}, skill_ctx)
    for skill in SKILL_ATTACKS:
        with pytest.raises(ToolError):
            await run_skill_script({"skill": skill, "script": "scripts/ok.py"}, skill_ctx)
    bad_args: list[dict[str, Any]] = [{"skill": "math_basic", "script": "scripts/ok.py", "args": ["a\x00b"]},
                                      {"skill": "math_basic", "script": "scripts/ok.py", "args": "x"}]
    for args in bad_args:
        with pytest.raises(ToolError):
            await run_skill_script(args, skill_ctx)
