"""The gateway's own copy of every uploaded and published file (SPEC §23).

Layout, under the hidden state folder (``data/.agw/files``, never served by ``/api/ap/data``
and never visible to a sandboxed tool)::

    files/.incoming/<random>.part     a file being received (removed whatever happens)
    files/<chatId>/r01.bin            the bytes of upload r01 of the chat
    files/<chatId>/r01.json           what it is: StoredFile.to_meta()
    files/<chatId>/a01.bin, a01.json  published artifact a01

Ids are short and per chat: ``r01``, ``r02`` … for uploads, ``a01`` … for artifacts. An id is
claimed by hard-linking the finished incoming file to ``<id>.bin`` (``link`` fails when the
name exists, so two uploads never share an id, even from two processes); the metadata follows
with an atomic replace. The stored bytes never change: what a reference or an artifact link
serves is what was received or published, whatever a tool later does to its workspace copy.

``Incoming`` receives one file: written as it arrives, hashed (SHA-256) and counted against
its size limit (``PayloadTooLarge`` the moment it is passed); ``with`` removes it at the end
in every case — once claimed, the bytes live on under their id.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import orjson

from app.config import Settings
from app.errors import PayloadTooLarge
from app.files.kinds import HEAD_BYTES
from app.paths import check_key
from app.security.data_tokens import issue_data_token, verify_data_token

#: ``r01`` … (uploads) and ``a01`` … (artifacts)
FILE_ID = re.compile(r"^[ra][0-9]{2,6}$")
UPLOAD = "r"
ARTIFACT = "a"
#: the download route of SPEC §23
ARTIFACT_ROUTE = "/api/ap/artifact"
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: an incoming file nothing was written to for this long belongs to no live upload (a crash left it)
STALE_INCOMING_SECONDS = 6 * 3600


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One upload or artifact of a chat, as its metadata file records it."""

    id: str
    chat_id: str
    type: str
    name: str
    mime_type: str
    size_bytes: int
    sha256: str
    created_at: int
    #: where tools find it, relative to the chat's workspace (uploads: ``uploads/<name>``;
    #: artifacts: the workspace file that was published)
    path: str | None = None
    run_id: str | None = None
    description: str | None = None

    @property
    def is_upload(self) -> bool:
        return self.id.startswith(UPLOAD)

    def to_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": self.id, "chatId": self.chat_id, "type": self.type, "name": self.name,
            "mimeType": self.mime_type, "sizeBytes": self.size_bytes, "sha256": self.sha256,
            "createdAt": self.created_at,
        }
        for key, value in (("path", self.path), ("runId", self.run_id), ("description", self.description)):
            if value is not None:
                meta[key] = value
        return meta

    @classmethod
    def from_meta(cls, data: Any) -> StoredFile | None:
        """The record of a metadata object, or ``None`` when it is not one of ours."""
        if not isinstance(data, dict):
            return None
        file_id, chat_id, name = _str(data.get("id")), _str(data.get("chatId")), _str(data.get("name"))
        size, created = data.get("sizeBytes"), data.get("createdAt")
        if file_id is None or chat_id is None or name is None or not isinstance(size, int):
            return None
        return cls(
            id=file_id, chat_id=chat_id, type=_str(data.get("type")) or "file", name=name,
            mime_type=_str(data.get("mimeType")) or "application/octet-stream", size_bytes=size,
            sha256=_str(data.get("sha256")) or "", created_at=created if isinstance(created, int) else 0,
            path=_str(data.get("path")), run_id=_str(data.get("runId")), description=_str(data.get("description")),
        )

    def reference(self, url: str) -> dict[str, Any]:
        """The reference object of an upload (``POST /api/ap/upload``, ``request.query.references``)."""
        reference: dict[str, Any] = {
            "id": self.id, "type": self.type, "name": self.name, "mimeType": self.mime_type,
            "sizeBytes": self.size_bytes, "sha256": self.sha256, "url": url,
        }
        if self.path is not None:
            reference["path"] = self.path
        return reference

    def artifact(self, url: str) -> dict[str, Any]:
        """The ``artifact`` object of an ``artifact.publish`` event."""
        artifact: dict[str, Any] = {
            "type": self.type, "name": self.name, "mimeType": self.mime_type, "sizeBytes": self.size_bytes,
            "url": url, "sha256": self.sha256,
        }
        if self.description is not None:
            artifact["description"] = self.description
        return artifact


class Incoming:
    """One file being received (see the module docstring). Use it with ``with``."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = max_bytes
        self.path = directory / f"{secrets.token_hex(12)}.part"
        self.size = 0
        self.head = b""
        self._hash = hashlib.sha256()
        self._fd: int | None = os.open(self.path, _OPEN_FLAGS, 0o600)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes) -> None:
        """Append ``data`` (blocking); ``PayloadTooLarge`` when the file would pass its limit."""
        if not data:
            return
        if self.size + len(data) > self.max_bytes:
            raise PayloadTooLarge(f"the file is larger than the limit of {self.max_bytes} bytes (agent.upload.max-bytes)")
        assert self._fd is not None, "write after finish"
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._hash.update(data)
        if len(self.head) < HEAD_BYTES:
            self.head = (self.head + data)[:HEAD_BYTES]
        self.size += len(data)

    def finish(self) -> None:
        """No more data: close the file (its bytes are complete)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Close and remove the incoming file (claimed bytes live on under their id)."""
        self.finish()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Incoming:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.discard()


class FileStore:
    """The files of every chat under ``data/.agw/files`` (see the module docstring). Stateless:
    build one wherever needed from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.state_dir / "files"

    @property
    def incoming_dir(self) -> Path:
        return self.root / ".incoming"

    def incoming(self, max_bytes: int | None = None) -> Incoming:
        """A new incoming file limited to ``max_bytes`` (default ``agent.upload.max-bytes``).

        Incoming files a crashed gateway left behind (nothing written for ``STALE_INCOMING_SECONDS``)
        are removed first: an upload cut short by a crash leaves no partial file for long either.
        """
        limit = max_bytes if max_bytes is not None else self.settings.agent.upload.max_bytes
        self._sweep_incoming()
        return Incoming(self.incoming_dir, limit)

    def _sweep_incoming(self) -> None:
        cutoff = time.time() - STALE_INCOMING_SECONDS
        try:
            entries = list(os.scandir(self.incoming_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                if entry.name.endswith(".part") and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue

    def chat_dir(self, chat_id: str) -> Path:
        return self.root / check_key(chat_id, "chatId")

    def _path(self, chat_id: str, file_id: str, suffix: str) -> Path:
        assert FILE_ID.fullmatch(file_id), f"not a file id: {file_id!r}"
        return self.chat_dir(chat_id) / f"{file_id}{suffix}"

    def blob(self, chat_id: str, file_id: str) -> Path:
        return self._path(chat_id, file_id, ".bin")

    def claim(self, chat_id: str, prefix: str, incoming: Incoming) -> str:
        """Give the finished ``incoming`` file the chat's next free id of ``prefix`` (blocking)."""
        folder = self.chat_dir(chat_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        taken = [int(entry.name[1:-4]) for entry in os.scandir(folder)
                 if entry.name.endswith(".bin") and FILE_ID.fullmatch(entry.name[:-4]) and entry.name[0] == prefix]
        number = max(taken, default=0) + 1
        while True:
            file_id = f"{prefix}{number:02d}"
            try:
                os.link(incoming.path, folder / f"{file_id}.bin")
            except FileExistsError:
                number += 1
                continue
            return file_id

    def save(self, stored: StoredFile) -> None:
        """Write ``stored``'s metadata (atomically; blocking)."""
        final = self._path(stored.chat_id, stored.id, ".json")
        temporary = final.with_name(f".{final.name}.{secrets.token_hex(6)}")
        temporary.write_bytes(orjson.dumps(stored.to_meta()))
        os.replace(temporary, final)

    def release(self, chat_id: str, file_id: str) -> None:
        """Forget a claimed id whose upload or publication failed half-way (blocking)."""
        self._path(chat_id, file_id, ".json").unlink(missing_ok=True)
        self.blob(chat_id, file_id).unlink(missing_ok=True)

    def get(self, chat_id: str, file_id: str) -> StoredFile | None:
        """The file ``file_id`` of the chat, or ``None`` (blocking)."""
        if not isinstance(file_id, str) or not FILE_ID.fullmatch(file_id):
            return None
        try:
            data = orjson.loads(self._path(chat_id, file_id, ".json").read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        stored = StoredFile.from_meta(data)
        return stored if stored is not None and stored.id == file_id and stored.chat_id == chat_id else None

    # -- links

    @staticmethod
    def token_subject(chat_id: str, file_id: str) -> str:
        """What a download link's token signs. The leading NUL keeps it apart from every data-file
        name (``/api/ap/data`` refuses NUL), so a data link's token never opens a chat file."""
        return f"\x00artifact/{chat_id}/{file_id}"

    def url(self, chat_id: str, file_id: str, *, signed: bool = True) -> str:
        """``/api/ap/artifact?chatId=&artifactId=`` (with a ``token`` when signed links are on)."""
        params = {"chatId": chat_id, "artifactId": file_id}
        if signed:
            token = issue_data_token(self.settings.agent.chat_image_token, self.token_subject(chat_id, file_id))
            if token is not None:
                params["token"] = token
        return f"{ARTIFACT_ROUTE}?{urlencode(params)}"

    def verify_link(self, chat_id: str, file_id: str, token: str | None) -> None:
        """Accept a valid signed link for the file, else ``AuthError``/``ForbiddenError``."""
        verify_data_token(self.settings.agent.chat_image_token, self.token_subject(chat_id, file_id), token)


__all__ = ["ARTIFACT", "ARTIFACT_ROUTE", "FILE_ID", "UPLOAD", "FileStore", "Incoming", "StoredFile"]
