"""Reading and writing inside a chat's sandbox workspace without following anything a tool planted.

A workspace is writable by the chat's tools, so any name in it may be a symbolic link (to
``/etc``, to the gateway's state), a FIFO, or a folder where a file is expected. Every step
here therefore goes through open folder descriptors with ``O_NOFOLLOW`` (``openat``): a
symbolic link anywhere on the way is refused, never followed, and nothing can be swapped
between a check and a use.

* ``place_upload(workspace, source, name)`` copies a stored upload to ``uploads/<name>``
  (``uploads/<name>-2.ext`` … when taken), never replacing anything: written to a temporary
  name, then hard-linked without following a link, and checked to be the very file written (a
  tool may swap the temporary name for a link to a file of the gateway meanwhile);
* ``read_into(workspace, path, incoming)`` copies a workspace file (a regular file only) into
  an ``Incoming``;
* ``remove_upload(workspace, path)`` takes back what ``place_upload`` wrote.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from contextlib import ExitStack
from pathlib import Path, PurePosixPath

from app.errors import ConflictError, ToolError
from app.files.names import numbered
from app.files.store import Incoming

UPLOADS = "uploads"
#: alternatives tried for a taken name (``report-2.csv`` … ``report-999.csv``)
MAX_ALTERNATIVES = 999
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024


def _open_dir(name: str | Path, dir_fd: int | None, stack: ExitStack) -> int:
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    stack.callback(os.close, fd)
    return fd


def place_upload(workspace: Path, source: Path, name: str) -> str:
    """Copy ``source`` into ``workspace/uploads`` under ``name`` (or its first free alternative).

    Returns the path relative to the workspace. ``ConflictError`` when the workspace's
    ``uploads`` is not a plain folder (a tool replaced it by a link or a file). Blocking.
    """
    with ExitStack() as stack:
        root = _open_dir(workspace, None, stack)
        try:
            os.mkdir(UPLOADS, 0o700, dir_fd=root)
        except FileExistsError:
            pass
        try:
            folder = _open_dir(UPLOADS, root, stack)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ConflictError(
                    "the chat's workspace has an 'uploads' that is not a plain folder (a link or a file); "
                    "remove it to upload") from exc
            raise
        temporary = f".{secrets.token_hex(8)}.part"
        target = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=folder)
        stack.callback(_unlink_quietly, temporary, folder)  # after the link below, or on failure
        with os.fdopen(target, "wb") as out, source.open("rb") as data:
            shutil.copyfileobj(data, out, _CHUNK)
            written = os.fstat(out.fileno())
        for n in range(1, MAX_ALTERNATIVES + 1):
            candidate = name if n == 1 else numbered(name, n)
            try:
                # never follow: a tool may have swapped the temporary name for a link to any file the
                # gateway can reach (its credentials, other users' chats), which would be linked here
                os.link(temporary, candidate, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
            except FileExistsError:
                continue
            except FileNotFoundError as exc:  # the temporary name was removed
                raise _replaced(name) from exc
            try:
                linked = os.stat(candidate, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise _replaced(name) from exc
            if (linked.st_dev, linked.st_ino) != (written.st_dev, written.st_ino):
                _unlink_quietly(candidate, folder)
                raise _replaced(name)
            return f"{UPLOADS}/{candidate}"
        raise ConflictError(f"the workspace already holds {MAX_ALTERNATIVES} files named like {name!r}")


def _replaced(name: str) -> ConflictError:
    return ConflictError(f"the copy of {name!r} in the workspace's 'uploads' was removed or replaced while it "
                         "was written (by a tool of the chat?); nothing was placed, try again")


def _unlink_quietly(name: str, folder: int) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass


def remove_upload(workspace: Path, relative: str) -> None:
    """Take back a file ``place_upload`` wrote (an upload that failed later); best effort, blocking."""
    folder_name, _, name = relative.partition("/")
    if folder_name != UPLOADS or not name or "/" in name:
        return
    with ExitStack() as stack:
        try:
            folder = _open_dir(UPLOADS, _open_dir(workspace, None, stack), stack)
            os.unlink(name, dir_fd=folder)
        except OSError:
            pass


def workspace_parts(workspace: Path, path: str) -> list[str]:
    """The parts of a workspace path given by a model: relative (``report.csv``, ``out/a.png``)
    or absolute inside the workspace (tools see it at its real path); ``ToolError`` otherwise."""
    if not isinstance(path, str) or not path.strip():
        raise ToolError("'path' must be a non-empty string: a file of your workspace")
    if "\x00" in path:
        raise ToolError(f"invalid path: {path!r}")
    pure = PurePosixPath(path.strip())
    if pure.is_absolute():
        try:
            pure = pure.relative_to(PurePosixPath(str(workspace)))
        except ValueError:
            raise ToolError(f"{path!r} is outside your workspace; give a path inside it (e.g. 'report.csv')") from None
    parts = [part for part in pure.parts if part != "."]
    if not parts or any(part == ".." for part in parts):
        raise ToolError(f"{path!r} does not name a file inside your workspace")
    return parts


def _walk(workspace: Path, folders: list[str], stack: ExitStack) -> int:
    """An open descriptor of ``workspace/<folders…>`` (registered on ``stack``), no link followed.

    One descriptor is open at a time: a tool can make a tree thousands of folders deep, and one
    descriptor per level held the gateway's whole descriptor limit (1024 is a common default)
    while the file was copied, failing everything else it opened meanwhile.
    """
    fd = os.open(workspace, _DIR_FLAGS)
    try:
        for part in folders:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    stack.callback(os.close, fd)
    return fd


def read_into(workspace: Path, path: str, incoming: Incoming) -> str:
    """Copy the workspace file ``path`` into ``incoming``; returns its normalised relative path.

    ``ToolError`` for a path outside the workspace, a missing file, a symbolic link on the
    way, anything but a regular file, or a file over the limit. Blocking.
    """
    parts = workspace_parts(workspace, path)
    relative = "/".join(parts)
    with ExitStack() as stack:
        try:
            folder = _walk(workspace, parts[:-1], stack)
            # O_NONBLOCK: a FIFO planted under the name must not hang the gateway on open
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
        except FileNotFoundError:
            raise ToolError(f"no such file in your workspace: {relative}") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ToolError(f"{relative} goes through a symbolic link or a non-folder; publish the file "
                                "itself") from None
            raise ToolError(f"cannot open {relative}: {os.strerror(exc.errno or 0)}") from None
        stack.callback(os.close, fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"{relative} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as data:
            if info.st_size > incoming.max_bytes:
                raise ToolError(f"{relative} is {info.st_size} bytes, over the limit of {incoming.max_bytes} "
                                "bytes (agent.upload.max-bytes)")
            while chunk := data.read(_CHUNK):
                incoming.write(chunk)
    return relative


__all__ = ["UPLOADS", "place_upload", "read_into", "remove_upload", "workspace_parts"]
