"""``POST /api/ap/upload`` over real HTTP (SPEC §23): references, limits, names, types, owners.

Every test runs the real gateway on loopback; what is on disk after a refused or interrupted
upload is read from the deployment folder itself.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.files.support import (
    BOUNDARY,
    PNG,
    envelope,
    eventually,
    files_under,
    leftovers,
    multipart,
    raw_upload,
    sha256,
    upload,
)
from tests.security.support import ISSUER, KeyPair, mint, rsa_pair
from tests.support.server import GatewayServer

SMALL_LIMIT = {"agent": {"upload": {"max-bytes": 1024}}}


def workspace(deploy: Path, chat_id: str) -> Path:
    return deploy / "data" / ".agw" / "workspaces" / chat_id


async def test_upload_without_chat_creates_the_callers_chat_and_puts_the_file_in_its_workspace(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway()
    content = b"city,temp\nParis,21\n"
    data = envelope(await upload(client, gw, "weather.csv", content, content_type="text/csv"))
    chat_id, reference = data["chatId"], data["reference"]
    assert reference == {
        "id": "r01", "type": "file", "name": "weather.csv", "mimeType": "text/csv", "sizeBytes": len(content),
        "sha256": sha256(content), "url": f"/api/ap/artifact?chatId={chat_id}&artifactId=r01",
        "path": "uploads/weather.csv",
    }
    assert (workspace(deploy, chat_id) / "uploads" / "weather.csv").read_bytes() == content
    # the chat is the caller's: listed, with the upload in its history
    chats = envelope(await client.get(f"{gw.url}/api/ap/chats"))
    assert [chat["chatId"] for chat in chats] == [chat_id]
    history = envelope(await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id}))
    assert history["references"] == [reference]
    assert [(e["type"], e["upload"]["id"]) for e in history["events"]] == [("request.upload", "r01")]
    # a second upload of the same name into the same chat: the next id, a free name, the same folder
    again = envelope(await upload(client, gw, "weather.csv", b"other", chat_id=chat_id))
    assert again["chatId"] == chat_id
    assert (again["reference"]["id"], again["reference"]["path"]) == ("r02", "uploads/weather-2.csv")
    assert (workspace(deploy, chat_id) / "uploads" / "weather.csv").read_bytes() == content
    # the reference's url downloads the same bytes
    response = await client.get(gw.url + reference["url"])
    assert response.status_code == 200 and response.content == content and sha256(response.content) == reference["sha256"]
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["x-content-type-options"] == "nosniff"


async def chunked(body: bytes) -> AsyncIterator[bytes]:
    """``body`` sent without a Content-Length (chunked transfer encoding), 512 bytes at a time."""
    for start in range(0, len(body), 512):
        yield body[start:start + 512]


async def test_oversize_upload_is_413_and_leaves_nothing_on_disk(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway(SMALL_LIMIT)
    chat_id = envelope(await upload(client, gw, "ok.txt", b"x" * 1024))["chatId"]  # at the limit: accepted
    before = leftovers(deploy)
    assert len(before) == 4  # the gateway's copy, its metadata, the workspace copy, the chat file
    # declared too big: refused before the body is read
    declared = await raw_upload(client, gw, multipart(b"big.txt", b"x" * 70_000))
    assert (declared.status_code, declared.json()["code"]) == (413, 4013)
    # no Content-Length: cut off at the first byte over the limit, into a new chat and into the existing one
    for fields in ({}, {"chatId": chat_id}):
        streamed = await client.post(
            f"{gw.url}/api/ap/upload", content=chunked(multipart(b"big.txt", b"y" * 5000, fields=fields)),
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
        assert (streamed.status_code, streamed.json()["code"]) == (413, 4013), streamed.text
        assert "agent.upload.max-bytes" in streamed.json()["msg"]
    assert leftovers(deploy) == before  # nothing new anywhere, no partial file
    assert files_under(deploy / "data" / ".agw" / "files" / ".incoming") == []
    assert [c["chatId"] for c in envelope(await client.get(f"{gw.url}/api/ap/chats"))] == [chat_id]


async def test_interrupted_upload_leaves_no_partial_file(
    deploy: Path, start_gateway: Callable[..., GatewayServer]
) -> None:
    """The client sends half its body and goes away: the half-written incoming file is removed."""
    gw = start_gateway()
    incoming = deploy / "data" / ".agw" / "files" / ".incoming"
    body = multipart(b"half.bin", b"h" * 400_000)
    sent = body[: len(body) // 2]
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write((f"POST /api/ap/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode() + sent)
    await writer.drain()
    # the upload is under way: its incoming file is on disk and growing
    await eventually(lambda: any(p.stat().st_size > 100_000 for p in files_under(incoming)), "a partial file")
    writer.close()
    await writer.wait_closed()
    await eventually(lambda: files_under(incoming) == [], "the partial file removed")
    assert leftovers(deploy) == []
    reader.feed_eof()


async def test_attack_an_upload_that_trickles_in_is_cut_off_and_leaves_nothing(
    deploy: Path, start_gateway: Callable[..., GatewayServer]
) -> None:
    """A body sent a byte every few seconds held its incoming file (and a request) open for as long
    as the client liked: enough of them fill the disk. Past ``agent.upload.timeout-seconds`` the
    upload is refused with 408 and its partial file removed."""
    gw = start_gateway({"agent": {"upload": {"timeout-seconds": 1}}})
    incoming = deploy / "data" / ".agw" / "files" / ".incoming"
    body = multipart(b"slow.bin", b"s" * 10_000)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write((f"POST /api/ap/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode() + body[:200])
    await writer.drain()
    answer = asyncio.create_task(reader.read(65536))
    try:
        for byte in body[200:260]:  # one byte at a time, until the gateway answers (the bound: 60 of them)
            if answer.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.wait({answer}, timeout=0.2)
        head = await asyncio.wait_for(answer, 30)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408") and b"agent.upload.timeout-seconds" in head
    await eventually(lambda: files_under(incoming) == [], "the partial file removed")
    assert leftovers(deploy) == []


@pytest.mark.parametrize(("sent", "stored"), [
    (b"../../etc/passwd", "passwd"),
    (b"..", "upload"),
    (b"/absolute/dir/report.txt", "report.txt"),
    (b"C:\\Users\\me\\plan.txt", "plan.txt"),
    (b"a\x00b.txt", "a_b.txt"),
    (b"-rf", "rf"),
    (b".bashrc", "bashrc"),
    ("報告 2024.csv".encode(), "報告_2024.csv"),
    ("évil\u202etxt.exe".encode(), "évil_txt.exe"),
    ("..／..／secret.txt".encode(), "secret.txt"),
    (b"x" * 1000 + b".txt", "x" * 116 + ".txt"),
])
async def test_attack_hostile_file_names_are_sanitised(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient, sent: bytes, stored: str
) -> None:
    gw = start_gateway()
    data = envelope(await raw_upload(client, gw, multipart(sent, b"payload")))
    reference = data["reference"]
    assert reference["name"] == stored and reference["path"] == f"uploads/{stored}"
    assert len(stored.encode()) <= 120
    # the only file written is the one in the chat's uploads folder (and the gateway's own copy)
    uploads = workspace(deploy, data["chatId"]) / "uploads"
    assert [p.name for p in files_under(workspace(deploy, data["chatId"]))] == [stored]
    assert (uploads / stored).read_bytes() == b"payload"
    assert not (deploy / "etc").exists() and not (deploy / "data" / "secret.txt").exists()


async def test_type_is_taken_from_the_bytes_and_mislabelled_images_are_415(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway()
    image = envelope(await upload(client, gw, "photo.png", PNG, content_type="image/png"))["reference"]
    assert (image["type"], image["mimeType"]) == ("image", "image/png")
    unnamed = envelope(await upload(client, gw, "blob.bin", PNG))["reference"]
    assert (unnamed["type"], unnamed["mimeType"]) == ("image", "image/png")  # the bytes decide
    before = leftovers(deploy)
    for name, declared in (("photo.png", "application/octet-stream"), ("notes.txt", "image/jpeg")):
        response = await upload(client, gw, name, b"not an image at all", content_type=declared)
        assert (response.status_code, response.json()["code"]) == (415, 4015), (name, response.text)
    assert leftovers(deploy) == before


async def test_allowed_types_refuse_other_files(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway({"agent": {"upload": {"allowed-types": ".csv, image/*"}}})
    assert envelope(await upload(client, gw, "a.csv", b"a,b\n"))["reference"]["mimeType"] == "text/csv"
    assert envelope(await upload(client, gw, "p.png", PNG))["reference"]["type"] == "image"
    refused = await upload(client, gw, "notes.txt", b"text")
    assert (refused.status_code, refused.json()["code"]) == (415, 4015)
    assert "allowed-types" in refused.json()["msg"]


async def test_bad_upload_requests_are_clear_4xx(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway()
    url = f"{gw.url}/api/ap/upload"
    cases: list[tuple[dict[str, Any], int]] = [
        ({"json": {"file": "x"}}, 415),  # not multipart
        ({"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 400),  # no boundary
        ({"content": multipart(b"a.txt", b"x", closed=False),
          "headers": {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}}, 400),  # never closed
        ({"data": {"chatId": "c"}, "files": {"other": ("a.txt", b"x")}}, 400),  # no 'file' part
        ({"data": {"chatId": "../x"}, "files": {"file": ("a.txt", b"x")}}, 400),  # a chat id leaving its folder
        ({"data": {"chatId": "chat_unknown"}, "files": {"file": ("a.txt", b"x")}}, 404),
    ]
    for kwargs, status in cases:
        response = await client.post(url, **kwargs)
        assert response.status_code == status, (kwargs, response.text)
        assert response.json()["code"] > 0
    download = await client.get(f"{gw.url}/api/ap/artifact", params={"chatId": "chat_x", "artifactId": "../etc"})
    assert download.status_code == 400
    assert leftovers(deploy) == []


@pytest.fixture
def rsa_key() -> KeyPair:
    return rsa_pair()


def bearer(pair: KeyPair, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(pair, sub)}"}


async def test_attack_upload_into_another_users_chat_is_403(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    gw = start_gateway({"agent": {"auth": {"enabled": True, "local-public-key": rsa_key.public_pem,
                                           "issuer": ISSUER}}})
    alice, bob = bearer(rsa_key, "alice"), bearer(rsa_key, "bob")
    data = envelope(await upload(client, gw, "secret.txt", b"alice's", headers=alice))
    chat_id, url = data["chatId"], data["reference"]["url"]
    refused = await upload(client, gw, "mine.txt", b"bob's", chat_id=chat_id, headers=bob)
    assert (refused.status_code, refused.json()["code"]) == (403, 4030)
    assert (await client.get(gw.url + url, headers=bob)).status_code == 403
    assert (await client.get(gw.url + url, headers=alice)).content == b"alice's"
    assert (await client.get(gw.url + url)).status_code == 401
    assert envelope(await client.get(f"{gw.url}/api/ap/chats", headers=bob)) == []
    assert [c["chatId"] for c in envelope(await client.get(f"{gw.url}/api/ap/chats", headers=alice))] == [chat_id]
    assert [p.name for p in files_under(workspace(deploy, chat_id))] == ["secret.txt"]


async def test_attack_uploads_link_planted_in_the_workspace_is_not_followed(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A tool replaced ``uploads`` by a link to a folder outside: the next upload is refused, never written there."""
    gw = start_gateway()
    chat_id = envelope(await upload(client, gw, "first.txt", b"1"))["chatId"]
    uploads = workspace(deploy, chat_id) / "uploads"
    outside = tmp_path / "outside"
    outside.mkdir()
    for child in uploads.iterdir():
        child.unlink()
    uploads.rmdir()
    uploads.symlink_to(outside)
    response = await upload(client, gw, "second.txt", b"2", chat_id=chat_id)
    assert (response.status_code, response.json()["code"]) == (409, 4090)
    assert list(outside.iterdir()) == []
    store = deploy / "data" / ".agw" / "files" / chat_id
    assert sorted(p.name for p in store.iterdir()) == ["r01.bin", "r01.json"]  # r02 was taken back


#: a tool of the chat, as a process beside the gateway: every new temporary file in ``uploads``
#: is replaced by a symbolic link to ``target`` (a file of the gateway the sandbox hides)
_SWAPPER = """
import os, sys
uploads, target, stop = sys.argv[1:4]
seen = set()
while not os.path.exists(stop):
    for name in os.listdir(uploads):
        if name.startswith(".") and name.endswith(".part") and name not in seen:
            seen.add(name)
            try:
                os.symlink(target, os.path.join(uploads, "x" + name))
                os.rename(os.path.join(uploads, "x" + name), os.path.join(uploads, name))
            except OSError:
                pass
"""


async def test_attack_tool_swaps_the_uploads_temporary_file_for_a_link_to_a_gateway_file(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The workspace copy of an upload was written under a temporary name and then hard-linked by
    that name, following links: a tool that swapped the name for a symbolic link while the copy
    was written got any file of the gateway's file system (application.yml, the credentials,
    other users' chats) hard-linked into its workspace, readable and writable. Now the link is
    never followed and must be the very file written, else 409 and nothing is placed."""
    gw = start_gateway({"agent": {"upload": {"max-bytes": 32 * 1024 * 1024}}})
    chat_id = envelope(await upload(client, gw, "first.txt", b"1"))["chatId"]
    secret = deploy / "application.yml"
    before = secret.read_bytes()
    stop = tmp_path / "stop"
    swapper = subprocess.Popen([sys.executable, "-c", _SWAPPER, str(workspace(deploy, chat_id) / "uploads"),
                                str(secret), str(stop)])
    try:
        # the swap must land while the copy is written (a 24 MiB copy gives it time); until one
        # does, an upload is simply placed, and another one is tried
        for _ in range(10):
            response = await upload(client, gw, "big.bin", os.urandom(24 * 1024 * 1024), chat_id=chat_id)
            if response.status_code != 200:
                break
            placed = workspace(deploy, chat_id) / response.json()["data"]["reference"]["path"]
            assert not _same_inode(placed, secret), "the gateway's file was hard-linked into the workspace"
    finally:
        stop.touch()
        swapper.wait(timeout=60)
    assert (response.status_code, response.json()["code"]) == (409, 4090), response.text
    assert secret.read_bytes() == before and secret.stat().st_nlink == 1
    assert not any(_same_inode(p, secret) for p in workspace(deploy, chat_id).rglob("*"))


def _same_inode(path: Path, other: Path) -> bool:
    """Whether the name ``path`` itself (a link is not followed) is the file ``other``."""
    mine, theirs = path.lstat(), other.stat()
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


async def test_signed_reference_link_opens_without_a_jwt(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    gw = start_gateway({"agent": {
        "auth": {"enabled": True, "local-public-key": rsa_key.public_pem, "issuer": ISSUER},
        "chat-image-token": {"secret": "s3cret", "ttl-seconds": 60},
    }})
    reference = envelope(await upload(client, gw, "a.txt", b"signed", headers=bearer(rsa_key, "alice")))["reference"]
    token = parse_qs(urlsplit(reference["url"]).query)["token"][0]
    assert (await client.get(gw.url + reference["url"])).content == b"signed"  # the link is the credential
    chat_id = parse_qs(urlsplit(reference["url"]).query)["chatId"][0]
    other = await client.get(f"{gw.url}/api/ap/artifact", params={"chatId": chat_id, "artifactId": "r02",
                                                                   "token": token})
    assert other.status_code == 403  # a token opens its own file only
    data_route = await client.get(f"{gw.url}/api/ap/data", params={"file": "a.txt", "token": token})
    assert data_route.status_code == 403  # nor a data file


async def test_partial_file_a_crash_left_behind_is_removed_by_the_next_upload(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    incoming = deploy / "data" / ".agw" / "files" / ".incoming"
    incoming.mkdir(parents=True)
    crashed, recent = incoming / "0123abcd.part", incoming / "4567ef01.part"
    crashed.write_bytes(b"half of an upload")
    recent.write_bytes(b"an upload still under way")
    os.utime(crashed, (1_000_000_000, 1_000_000_000))  # nothing written to it for years
    gw = start_gateway()
    envelope(await upload(client, gw, "a.txt", b"a"))
    assert files_under(incoming) == [recent]
