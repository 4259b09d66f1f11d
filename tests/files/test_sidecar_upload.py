"""The desktop sidecar's ``chat.upload {path, chatId?}`` (SPEC §23, §10): a file of the local disk
becomes the same reference as over HTTP, in the same chat workspace."""

from __future__ import annotations

from pathlib import Path

from tests.files.support import sha256
from tests.support.sidecar import SidecarProcess


async def test_chat_upload_takes_a_file_from_the_desktop(deploy: Path, tmp_path: Path) -> None:
    desktop = tmp_path / "Desktop"
    desktop.mkdir()
    plan = desktop / "trip plan.txt"
    plan.write_bytes(b"Paris, then Rome.\n")
    sidecar = await SidecarProcess(deploy, tmp_path / "sidecar.stderr").start()
    try:
        data = await sidecar.result("chat.upload", {"path": str(plan)})
        chat_id, reference = data["chatId"], data["reference"]
        assert {k: reference[k] for k in ("id", "name", "type", "mimeType", "sizeBytes", "sha256", "path")} == {
            "id": "r01", "name": "trip_plan.txt", "type": "file", "mimeType": "text/plain", "sizeBytes": 18,
            "sha256": sha256(plan.read_bytes()), "path": "uploads/trip_plan.txt"}
        workspace = deploy / "data" / ".agw" / "workspaces" / chat_id
        assert (workspace / "uploads" / "trip_plan.txt").read_bytes() == plan.read_bytes()
        again = await sidecar.result("chat.upload", {"path": str(plan), "chatId": chat_id})
        assert (again["chatId"], again["reference"]["id"]) == (chat_id, "r02")
        history = await sidecar.result("chat.get", {"chatId": chat_id})
        assert [r["id"] for r in history["references"]] == ["r01", "r02"]
        missing = await sidecar.call("chat.upload", {"path": str(desktop / "nope.txt")})
        assert missing["error"]["data"]["code"] == 4040
        folder = await sidecar.call("chat.upload", {"path": str(desktop)})
        assert folder["error"]["code"] == -32602 and "not a regular file" in folder["error"]["message"]
        unknown_chat = await sidecar.call("chat.upload", {"path": str(plan), "chatId": "chat_nobody"})
        assert unknown_chat["error"]["data"]["code"] == 4040
    finally:
        await sidecar.stop()
