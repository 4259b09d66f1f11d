"""``_artifact_publish_`` and ``GET /api/ap/artifact`` (SPEC §23): a script's output handed to the
user, the link's bytes, its owner, signed links, and what a hostile workspace cannot make it do."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.engine.helpers import call, first, of_type
from tests.files.support import FILE_TOOLS, envelope, sha256, upload
from tests.security.support import ISSUER, KeyPair, mint, rsa_pair
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect

SHELL = {"agent": {"tools": {"bash": {"allowed-commands": "printf,cat", "shell-features-enabled": True}}}}
REPORT = b"city,temp\nParis,21\nRome,25\n"
WRITE_REPORT = "printf 'city,temp\\nParis,21\\nRome,25\\n' > out/report.csv"


def publishing_script() -> list[Any]:
    return [
        call("c0", "_bash_", {"command": "printf '' > placeholder"}),
        call("c1", "_bash_", {"command": WRITE_REPORT}),
        call("c2", "_artifact_publish_", {"artifacts": [{"path": "out/report.csv", "name": "Weather report.csv",
                                                         "description": "temperatures by city"}]}),
        text_script(["Here is your report."]),
    ]


def workspace(deploy: Path, chat_id: str) -> Path:
    return deploy / "data" / ".agw" / "workspaces" / chat_id


async def test_script_output_is_published_and_its_link_downloads_the_same_bytes(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "reporter", agent("REACT", tools=FILE_TOOLS, max_steps=8))
    gw = start_gateway(SHELL)
    chat_id = envelope(await upload(client, gw, "input.txt", b"raw"))["chatId"]
    (workspace(deploy, chat_id) / "out").mkdir()
    upstream.enqueue(*publishing_script())
    events = await collect(client, f"{gw.url}/api/ap/query",
                           {"agentKey": "reporter", "chatId": chat_id, "message": "report please"})
    assert events[-1]["type"] == "run.complete", events[-1]
    assert (workspace(deploy, chat_id) / "out" / "report.csv").read_bytes() == REPORT  # the script wrote it
    published = first(events, "artifact.publish")
    run_id = first(events, "run.start")["runId"]
    artifact = published["artifact"]
    assert {k: published[k] for k in ("artifactId", "chatId", "runId")} == {
        "artifactId": "a01", "chatId": chat_id, "runId": run_id}
    assert artifact == {
        "type": "file", "name": "Weather_report.csv", "mimeType": "text/csv", "sizeBytes": len(REPORT),
        "url": f"/api/ap/artifact?chatId={chat_id}&artifactId=a01", "sha256": sha256(REPORT),
        "description": "temperatures by city",
    }
    # during the call: after its arguments, before its result
    kinds = [(e["type"], e.get("toolId")) for e in events if e["type"].startswith(("tool.", "artifact."))]
    at = kinds.index(("artifact.publish", None))
    assert kinds[at - 1] == ("tool.end", "c2") and kinds[at + 1] == ("tool.result", "c2")
    result = first([e for e in events if e.get("toolId") == "c2"], "tool.result")["result"]
    assert result == {"ok": True, "artifacts": [{"artifactId": "a01", "path": "out/report.csv", "artifact": artifact}]}
    # the link: the same bytes, as an attachment under the artifact's name
    response = await client.get(gw.url + artifact["url"])
    assert response.status_code == 200 and sha256(response.content) == artifact["sha256"]
    assert response.content == REPORT
    assert 'filename="Weather_report.csv"' in response.headers["content-disposition"]
    # what was published stays as published, whatever the workspace does later
    (workspace(deploy, chat_id) / "out" / "report.csv").write_bytes(b"changed")
    assert (await client.get(gw.url + artifact["url"])).content == REPORT
    # the history keeps the event, in place, and lists the artifact
    history = envelope(await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id}))
    replayed = [(e["type"], e.get("toolId")) for e in history["events"]
                if e["type"] in ("tool.snapshot", "tool.result", "artifact.publish")]
    assert replayed[-3:] == [("tool.snapshot", "c2"), ("artifact.publish", None), ("tool.result", "c2")]
    again = first(history["events"], "artifact.publish")
    assert {k: again[k] for k in ("artifactId", "chatId", "runId", "artifact")} == {
        "artifactId": "a01", "chatId": chat_id, "runId": run_id, "artifact": artifact}
    assert history["artifact"] == {"items": [{"artifactId": "a01", "runId": run_id, **artifact}]}


def bearer(pair: KeyPair, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(pair, sub)}"}


async def test_attack_another_user_cannot_download_an_artifact_but_a_signed_link_can(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    keys = rsa_pair()
    write_agent(deploy, "reporter", agent("REACT", tools=FILE_TOOLS, max_steps=8))
    gw = start_gateway({"agent": {
        **SHELL["agent"],
        "auth": {"enabled": True, "local-public-key": keys.public_pem, "issuer": ISSUER},
        "chat-image-token": {"secret": "s3cret", "ttl-seconds": 300},
    }})
    alice, bob = bearer(keys, "alice"), bearer(keys, "bob")
    chat_id = envelope(await upload(client, gw, "input.txt", b"raw", headers=alice))["chatId"]
    (workspace(deploy, chat_id) / "out").mkdir()
    upstream.enqueue(*publishing_script())
    async with httpx.AsyncClient(timeout=30, headers=alice) as as_alice:
        events = await collect(as_alice, f"{gw.url}/api/ap/query",
                               {"agentKey": "reporter", "chatId": chat_id, "message": "report please"})
    link = first(events, "artifact.publish")["artifact"]["url"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert set(params) == {"chatId", "artifactId", "token"}  # signed links are on
    plain = f"{gw.url}/api/ap/artifact?" + urlencode({"chatId": chat_id, "artifactId": "a01"})
    assert (await client.get(plain, headers=bob)).status_code == 403
    assert (await client.get(plain, headers=alice)).content == REPORT
    assert (await client.get(plain)).status_code == 401
    assert (await client.get(gw.url + link)).content == REPORT  # the signed link needs no JWT
    forged = await client.get(f"{gw.url}/api/ap/artifact", params={**params, "token": params["token"][:-2] + "xx"})
    assert forged.status_code == 403
    history = await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id}, headers=bob)
    assert history.status_code == 403


async def test_attack_workspace_links_fifos_and_paths_outside_are_never_published(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    """What a tool can plant in its workspace (links to the host, a FIFO, a folder) and paths
    leaving it: each call is a tool error naming the problem; nothing is published."""
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST-SECRET-MARKER")
    write_agent(deploy, "reporter", agent("REACT", tools=FILE_TOOLS, max_steps=12))
    gw = start_gateway({"agent": {"upload": {"max-bytes": 64}}})
    chat_id = envelope(await upload(client, gw, "input.txt", b"raw"))["chatId"]
    ws = workspace(deploy, chat_id)
    (ws / "leak.txt").symlink_to(secret)
    (ws / "hostdir").symlink_to(tmp_path)
    os.mkfifo(ws / "pipe.txt")
    (ws / "folder").mkdir()
    (ws / "big.bin").write_bytes(b"b" * 65)
    attempts = {
        "leak.txt": "symbolic link", "hostdir/host-secret.txt": "symbolic link", "pipe.txt": "not a regular file",
        "folder": "not a regular file", "../other/x.txt": "inside your workspace", str(secret): "outside your workspace",
        "missing.txt": "no such file", "big.bin": "over the limit",
    }
    script = [call(f"p{n}", "_artifact_publish_", {"artifacts": [{"path": path}]}) for n, path in enumerate(attempts)]
    upstream.enqueue(*script, text_script(["Nothing to give."]))
    events = await collect(client, f"{gw.url}/api/ap/query",
                           {"agentKey": "reporter", "chatId": chat_id, "message": "publish"})
    assert events[-1]["type"] == "run.complete", events[-1]
    results = [e["result"] for e in of_type(events, "tool.result")]
    assert len(results) == len(attempts)
    for (path, reason), result in zip(attempts.items(), results, strict=True):
        assert result["ok"] is False and reason in result["error"], (path, result)
    assert of_type(events, "artifact.publish") == []
    assert "HOST-SECRET-MARKER" not in str(events)
    store = deploy / "data" / ".agw" / "files" / chat_id
    assert sorted(p.name for p in store.iterdir()) == ["r01.bin", "r01.json"]  # no artifact
    assert (await client.get(f"{gw.url}/api/ap/artifact", params={"chatId": chat_id, "artifactId": "a01"})
            ).status_code == 404


def test_attack_publishing_from_a_deep_tree_holds_one_folder_descriptor_at_a_time(tmp_path: Path) -> None:
    """A tool can make its workspace thousands of folders deep; the copy opened one descriptor per
    level and held them all, so ``d/d/…/report.txt`` 1,500 deep failed with "Too many open files"
    under the common 1,024 limit (confirmed on a real gateway), and whatever else the gateway
    opened meanwhile failed too. Run in a child process whose descriptor limit is 64."""
    code = (
        "import os, resource, sys\n"
        "from pathlib import Path\n"
        "from app.files.store import Incoming\n"
        "from app.files.workspace import read_into\n"
        "root = Path(sys.argv[1])\n"
        "workspace = root / 'workspace'\n"
        "workspace.mkdir()\n"
        "fd = os.open(workspace, os.O_RDONLY)\n"
        "for _ in range(200):\n"
        "    os.mkdir('d', dir_fd=fd)\n"
        "    child = os.open('d', os.O_RDONLY, dir_fd=fd)\n"
        "    os.close(fd)\n"
        "    fd = child\n"
        "os.write(os.open('report.txt', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), b'hello')\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "with Incoming(root / 'incoming', 1024) as incoming:\n"
        "    print(read_into(workspace, 'd/' * 200 + 'report.txt', incoming).count('/'), incoming.size)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.split() == ["200", "5"]
