"""The chat files themselves: ``chats/{chatId}.json``, JSON Lines (SPEC §8).

Lines are only ever appended, never rewritten. A crash can leave a partial last
line: reading skips it (with a warning) and the next append first ends it with a
newline, so every later line starts clean. Runs on one chat never interleave
because the engine holds ``ChatStore.lock(chat_id)`` for a whole run.

Appends run on a writer thread (``app.writer``; the gateway's, shared with the usage ledger, or
the store's own), so the event loop never
waits for the disk and the lines of a chat reach the file in the order they were appended. Each
line is one ``write(2)`` of the whole line on an ``O_APPEND`` descriptor, so a crash
cuts at most the last line. While a run holds the chat's lock, the chat's file stays
open on the writer thread (one ``open`` per run instead of one per line: issue 13);
it is closed after the run's last lines (``run_ends=True``: no extra trip to the writer
thread), or else when the lock is released. An append outside a run opens and closes the
file itself. Opening refuses a symbolic link (``O_NOFOLLOW``) or anything but a regular
file (a directory, a FIFO: ``PathEscapeError``, as for a symlink) and ends a cut-short last
line. The read methods are synchronous (call them with ``asyncio.to_thread`` from a
handler when the file may be large); reading goes through ``jsonlines``.
"""

from __future__ import annotations

import asyncio
import codecs
import errno
import json
import logging
import os
import stat
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import jsonlines
import orjson

from app.errors import PathEscapeError
from app.memory.lines import ANONYMOUS_OWNER, LINE_QUERY, chat_name, timestamp_of
from app.writer import WriterThread
from app.paths import check_key

logger = logging.getLogger(__name__)

_SUFFIX = ".json"
#: how much of a file's end is read to find the last line's ``updatedAt``
_TAIL_BYTES = 64 * 1024
_UTF8_NAMES = frozenset({"utf-8", "utf-8-sig"})
#: at most this many chat files are kept open for running runs (beyond it: open per line)
MAX_OPEN_FILES = 512
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class ChatMeta:
    """What the chat list shows (SPEC §4 ``GET /api/ap/chats``); times are epoch ms.

    ``owner`` is the auth subject that started the chat (``"anonymous"`` when auth
    was off or the file predates owners); it is not part of the public payload.
    """

    chat_id: str
    chat_name: str
    first_agent_key: str | None
    created_at: int
    updated_at: int
    owner: str
    #: SPEC §20: ``{chatId, runId, position, node?}`` of the chat a fork was copied from (its first line)
    forked_from: dict[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "chatId": self.chat_id,
            "chatName": self.chat_name,
            "firstAgentKey": self.first_agent_key,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }
        if self.forked_from is not None:
            data["forkedFrom"] = self.forked_from
        return data


class ChatStore:
    """Append-only JSONL chat files under ``chats_dir`` (SPEC §8).

    Chat ids go through ``check_key``: a syntactically invalid id (``../x``, ``a/b``,
    NUL, too long…) raises ``PathEscapeError`` from every method taking one.
    Call ``close()`` when done (the gateway does it in its lifespan).
    """

    def __init__(self, chats_dir: Path, charset: str = "utf-8", writer: WriterThread | None = None) -> None:
        self._dir = Path(chats_dir)
        self._charset = codecs.lookup(charset).name  # LookupError for a bogus charset
        self._utf8 = self._charset in _UTF8_NAMES
        # a lock lives as long as someone holds or awaits it, then it is dropped
        self._locks: weakref.WeakValueDictionary[str, _RunLock] = weakref.WeakValueDictionary()
        #: the thread the files are written on: ``writer`` (its owner closes it after ``close``) or our own
        self._writer = writer if writer is not None else WriterThread("chat-store")
        self._owns_writer = writer is None
        self._closed = False
        #: chat id → descriptor of its file, kept open while a run holds the chat's lock (writer thread only)
        self._open: dict[str, int] = {}
        #: chats whose file the writer thread may hold open (event loop only): closed at the lock's release
        self._kept: set[str] = set()
        #: chat id → (its file's identity and size and mtime when read, its list entry): ``list_chats``
        #: reads only the files that changed since (replaced whole by each listing, on its thread)
        self._metas: dict[str, tuple[tuple[int, int, int], ChatMeta]] = {}

    @property
    def directory(self) -> Path:
        return self._dir

    def path(self, chat_id: str) -> Path:
        """The file of ``chat_id`` (``PathEscapeError`` for an id that could leave the folder).

        A chat file that is a symbolic link is refused too: it could point anywhere (SPEC §9).
        """
        path = self._dir / f"{check_key(chat_id, 'chatId')}{_SUFFIX}"
        if path.is_symlink():
            raise PathEscapeError(f"invalid chatId: {chat_id!r} (its file is a symbolic link)")
        return path

    def lock(self, chat_id: str) -> asyncio.Lock:
        """The one lock of this chat; the engine holds it for a whole run.

        While it is held, the chat's file stays open for the run's appends; releasing it
        closes the file (after the appends already queued).
        """
        check_key(chat_id, "chatId")
        lock = self._locks.get(chat_id)
        if lock is None:
            lock = _RunLock(self, chat_id)
            self._locks[chat_id] = lock
        return lock

    def exists(self, chat_id: str) -> bool:
        return self.path(chat_id).is_file()

    async def append(self, chat_id: str, *lines: dict[str, Any], run_ends: bool = False) -> None:
        """Append ``lines`` (written, not fsynced; several go in one ``write(2)``). Raises ``TypeError``
        for unserialisable data (nothing is written then), ``PathEscapeError`` for an invalid id or a
        chat file that is a symbolic link.

        ``run_ends``: these are the run's last lines; its file is closed right after them, on the
        same trip to the writer thread (else the lock's release sends the thread a close of its own).
        """
        check_key(chat_id, "chatId")
        if self._closed:
            raise RuntimeError("the chat store is closed")
        lock = self._locks.get(chat_id)
        # a run is on: its next lines follow soon
        keep_open = lock is not None and lock.locked() and not run_ends
        if keep_open:
            self._kept.add(chat_id)
        else:
            self._kept.discard(chat_id)  # the writer closes the file after these lines
        await self._writer.run(self._append_sync, chat_id, lines, keep_open)

    async def remove(self, chat_id: str) -> None:
        """Delete the chat's file once the appends already handed over are written (a line still
        queued would otherwise create the file again after it was deleted)."""
        check_key(chat_id, "chatId")
        if self._closed:
            raise RuntimeError("the chat store is closed")
        self._kept.discard(chat_id)
        await self._writer.run(self._remove_sync, chat_id)

    def close(self) -> None:
        """Close the files once the pending appends are written. With a writer thread of its own,
        stop it (returns when all is done); a shared one's owner closes it afterwards."""
        if self._closed:
            return
        self._closed = True
        if self._writer.started:  # files are only ever opened on the thread: none without it
            try:
                self._writer.submit(self._close_all)
            except RuntimeError:  # the shared thread was closed first: so were the files (at exit)
                logger.warning("the writer thread was closed before the chat store; files closed at exit")
        if self._owns_writer:
            self._writer.close()

    def _run_ended(self, chat_id: str) -> None:
        """The chat's lock was released: close its file (if still open) once the queued appends are written."""
        if chat_id not in self._kept:
            return  # the run's last append closed it, or it was never kept open
        self._kept.discard(chat_id)
        try:
            self._writer.submit(self._close_file, chat_id)
        except RuntimeError:  # the store is closed: so are its files
            pass

    def read_lines(self, chat_id: str) -> list[dict[str, Any]]:
        """Every well-formed line of the chat, in order; ``[]`` for a chat with no file.

        A malformed or partial line is skipped with a warning, never raised for.
        """
        path = self.path(chat_id)
        fp = self._open_for_reading(chat_id, path)
        if fp is None:
            return []
        with fp:
            return list(self._iter_lines(fp, path))

    def chat_meta(self, chat_id: str) -> ChatMeta | None:
        """The list entry of one chat, or ``None`` when it has no file.

        Reads from the top only up to the first query line (normally line 1) and the
        last 64 KiB for ``updatedAt`` (the file's mtime when no line there has one).
        """
        path = self.path(chat_id)
        fp = self._open_for_reading(chat_id, path)
        if fp is None:
            return None
        with fp:
            info = os.fstat(fp.fileno())
            mtime = int(info.st_mtime * 1000)
            first: dict[str, Any] | None = None
            query_line: dict[str, Any] | None = None
            for line in self._iter_lines(fp, path):
                if first is None:
                    first = line
                if line.get("_type") == LINE_QUERY:
                    query_line = line
                    break
            updated_at = _last_updated_at(fp, info.st_size, self._charset)
        query = query_line.get("query") if query_line else None
        query = query if isinstance(query, dict) else {}
        # the first run's owner; a chat an upload created (SPEC §23) has its owner on its first line
        owner = (query_line or first or {}).get("owner")
        agent_key = query.get("agentKey")
        created_at = timestamp_of(first.get("updatedAt"), mtime) if first else mtime
        source = first.get("source") if first is not None and first.get("_type") == "fork" else None
        return ChatMeta(
            chat_id=chat_id,
            chat_name=chat_name(query.get("message")),
            first_agent_key=agent_key if isinstance(agent_key, str) else None,
            created_at=created_at,
            updated_at=max(created_at, updated_at if updated_at is not None else mtime),
            owner=owner if isinstance(owner, str) and owner else ANONYMOUS_OWNER,
            forked_from=dict(source) if isinstance(source, dict) else None,
        )

    def list_chats(self, owner: str | None) -> list[ChatMeta]:
        """Every chat (``owner=None``) or the chats of one owner, newest ``updatedAt`` first.

        Only the files that changed since the last listing are read (``chat_meta``); the others
        cost one ``lstat``: every user's listing walks every user's chats to find their owners,
        and reading 100,000 files took 15 s each time."""
        try:
            entries = list(os.scandir(self._dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        known = self._metas
        seen: dict[str, tuple[tuple[int, int, int], ChatMeta]] = {}
        metas: list[ChatMeta] = []
        for entry in entries:
            if not entry.name.endswith(_SUFFIX) or not entry.is_file(follow_symlinks=False):
                continue
            chat_id = entry.name[: -len(_SUFFIX)]
            try:
                info = entry.stat(follow_symlinks=False)
                version = (info.st_ino, info.st_size, info.st_mtime_ns)
                cached = known.get(chat_id)
                meta = cached[1] if cached is not None and cached[0] == version else self.chat_meta(chat_id)
            except (PathEscapeError, FileNotFoundError):
                continue  # not a file we wrote, or one deleted meanwhile
            if meta is None:
                continue
            seen[chat_id] = (version, meta)  # a change after the stat: the next listing reads it again
            if owner is None or meta.owner == owner:
                metas.append(meta)
        self._metas = seen
        metas.sort(key=lambda m: (m.updated_at, m.created_at, m.chat_id), reverse=True)
        return metas

    # ---- file work (runs on the writer thread / the caller's thread) -------------

    def _dumps(self, obj: Any) -> bytes:
        data = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
        if self._utf8:
            return data
        try:
            return data.decode("utf-8").encode(self._charset)
        except UnicodeEncodeError:  # a character the charset lacks: escape everything
            return json.dumps(orjson.loads(data), ensure_ascii=True, separators=(",", ":")).encode(self._charset)

    def _append_sync(self, chat_id: str, lines: tuple[dict[str, Any], ...], keep_open: bool) -> None:
        fd = self._open.pop(chat_id, None)
        written = False
        try:
            data = b"".join([self._dumps(line) + b"\n" for line in lines])  # TypeError: the file is untouched
            if fd is not None and os.fstat(fd).st_nlink == 0:  # the file was removed meanwhile: a new one
                stale, fd = fd, None
                os.close(stale)
            if fd is None:
                fd = self._open_file(chat_id)
            _write_all(fd, data)
            written = True
        finally:
            if fd is not None:
                # after a failure the file is closed: a write that failed part-way (a full disk) may
                # have left half a line, and only opening the file again ends it before the next one
                if written and keep_open and len(self._open) < MAX_OPEN_FILES:
                    self._open[chat_id] = fd
                else:
                    os.close(fd)

    def _remove_sync(self, chat_id: str) -> None:
        self._close_file(chat_id)
        (self._dir / f"{chat_id}{_SUFFIX}").unlink(missing_ok=True)  # a symbolic link: the link itself

    def _open_file(self, chat_id: str) -> int:
        """Open the chat's file for appending; end a last line a crash cut short."""
        path = self._dir / f"{chat_id}{_SUFFIX}"
        try:
            fd = os.open(path, _OPEN_FLAGS, 0o666)
        except FileNotFoundError:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, _OPEN_FLAGS, 0o666)
        except OSError as exc:
            raise _open_error(chat_id, exc) from None
        try:
            _check_regular(chat_id, fd)
            end = os.fstat(fd).st_size
            if end > 0 and os.pread(fd, 1, end - 1) != b"\n":
                logger.warning("%s: last line was cut short (crash?); starting a new line", path.name)
                _write_all(fd, b"\n")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_for_reading(self, chat_id: str, path: Path) -> IO[bytes] | None:
        """The chat's file open for reading, or ``None`` when it has none. Never waits: a FIFO
        there would have held a worker thread for good (``O_NONBLOCK``); ``PathEscapeError`` for
        a symbolic link (``O_NOFOLLOW``: not even one swapped in after ``path``'s check), a
        directory or any other non-regular file."""
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _open_error(chat_id, exc) from None
        try:
            _check_regular(chat_id, fd)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def _close_file(self, chat_id: str) -> None:
        fd = self._open.pop(chat_id, None)
        if fd is not None:
            os.close(fd)

    def _close_all(self) -> None:
        for chat_id in list(self._open):
            self._close_file(chat_id)

    def _iter_lines(self, fp: IO[bytes], path: Path) -> Iterator[dict[str, Any]]:
        decoded = (raw.decode(self._charset, errors="replace") for raw in fp)
        reader = jsonlines.Reader(decoded, loads=orjson.loads)
        while True:
            try:
                value = reader.read(type=dict, skip_empty=True)
            except EOFError:
                return
            except jsonlines.InvalidLineError as exc:
                logger.warning("%s: line %d skipped: %s", path.name, exc.lineno, exc)
                continue
            yield value


class _RunLock(asyncio.Lock):
    """A chat's lock that tells its store when it is released (so the run's file is closed)."""

    def __init__(self, store: ChatStore, chat_id: str) -> None:
        super().__init__()
        self._store = store
        self._chat_id = chat_id

    def release(self) -> None:
        super().release()
        self._store._run_ended(self._chat_id)


def _open_error(chat_id: str, exc: OSError) -> Exception:
    """What opening a chat's file failed with, as the caller should see it."""
    if exc.errno == errno.ELOOP:
        return PathEscapeError(f"invalid chatId: {chat_id!r} (its file is a symbolic link)")
    if exc.errno == errno.EISDIR:
        return PathEscapeError(f"invalid chatId: {chat_id!r} (its file is not a regular file)")
    return exc


def _check_regular(chat_id: str, fd: int) -> None:
    """``PathEscapeError`` unless ``fd`` is a regular file: a directory, FIFO or device in the chats
    folder is nothing we wrote (reading it failed with a 500, or waited for ever)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise PathEscapeError(f"invalid chatId: {chat_id!r} (its file is not a regular file)")


def _write_all(fd: int, data: bytes) -> None:
    """One ``write(2)`` in practice (``O_APPEND``: the line lands whole at the end); loops on a short write."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _last_updated_at(fp: IO[bytes], size: int, charset: str) -> int | None:
    """``updatedAt`` of the last well-formed line within the file's last 64 KiB."""
    start = max(0, size - _TAIL_BYTES)
    fp.seek(start)
    pieces = fp.read(size - start).split(b"\n")
    if start > 0:
        pieces = pieces[1:]  # the first piece may be the tail of a longer line
    for raw in reversed(pieces):
        if not raw.strip():
            continue
        try:
            value = orjson.loads(raw.decode(charset, errors="replace"))
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            stamp = timestamp_of(value.get("updatedAt"), -1)
            if stamp >= 0:
                return stamp
    return None
