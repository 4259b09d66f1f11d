"""The sidecar's standard streams (SPEC §10): which ones the event loop may drive, stdin's reader,
and stdout reserved for the protocol.

asyncio drives a pipe by putting its open file description in non-blocking mode. That mode is
shared by every descriptor and every process holding the same description, so the loop drives
a stream only when nobody else here writes through it and the mode can be put back at the end:

* a pipe or a socket, on POSIX (Windows' proactor needs overlapped pipes, which a parent rarely
  gives);
* not a terminal: its description is usually stdin, stdout and stderr at once (and the shell's
  after we exit), so a thread writing the terminal would meet ``BlockingIOError``;
* not ``/dev/null`` (systemd's ``StandardInput=null``): asyncio accepts a character device, but
  epoll refuses it, and the error comes from a later callback: end of input would never be seen;
* not the same pipe or socket as another standard stream of ours: stderr merged into stdout
  would turn every log record into a possible ``BlockingIOError``, and one socket that is stdin
  and stdout at once (inetd, ``socat EXEC:``) cannot be asyncio's write transport, which watches
  a socket's write side for reading (to notice the reader leaving) and takes the requests
  arriving as that.

Everything else is read or written on a thread, in blocking mode. The mode the loop changed is
put back when the sidecar stops (a launcher that goes on writing to the same stdout after us
would otherwise fail with ``EAGAIN``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
import threading
from collections.abc import Callable
from typing import IO

logger = logging.getLogger(__name__)


def _identity(fd: int) -> tuple[int, int, int] | None:
    try:
        st = os.fstat(fd)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino, st.st_mode


def loop_may_drive(fd: int, *others: int) -> bool:
    """True when the event loop may drive ``fd`` in non-blocking mode: on POSIX, a pipe or a
    socket that is not also one of the descriptors ``others`` (see the module docstring)."""
    if os.name != "posix":
        return False
    mine = _identity(fd)
    if mine is None or not (stat.S_ISFIFO(mine[2]) or stat.S_ISSOCK(mine[2])):
        return False
    for other in others:
        theirs = _identity(other) if other != fd else None
        if theirs is not None and theirs[:2] == mine[:2]:
            return False
    return True


def blocking_restorer(fd: int) -> Callable[[], None]:
    """A function that puts ``fd``'s current blocking mode back (call it when the loop is done)."""
    was_blocking = os.get_blocking(fd)

    def restore() -> None:
        try:
            os.set_blocking(fd, was_blocking)
        except OSError:  # closed meanwhile: nothing to put back
            pass

    return restore


def take_stdout() -> IO[bytes]:
    """Reserve the real stdout for the protocol and point fd 1 (and ``sys.stdout``) at stderr.

    After this nothing else — a stray ``print``, a library, a child process inheriting
    fd 1 — can put a byte on the protocol stream. ``OSError`` when stdout is not open.
    """
    if sys.stdout is not None:
        sys.stdout.flush()
    protocol_fd = os.dup(1)  # EBADF: the sidecar was started with stdout closed
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=65536)


class Stdin:
    """The requests' stream as an ``asyncio.StreamReader`` (``reader``), without blocking the loop;
    ``close`` puts stdin's blocking mode back."""

    def __init__(self, reader: asyncio.StreamReader, restore: Callable[[], None] | None) -> None:
        self.reader = reader
        self._restore = restore

    @classmethod
    async def open(cls, stream: IO[bytes], limit: int, *, others: tuple[int, ...] = ()) -> Stdin:
        """Read ``stream`` from the loop when it may drive it (``loop_may_drive(fd, *others)``),
        else on a daemon thread (a terminal, ``/dev/null``, a regular file, Windows)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=limit)
        try:
            fd: int | None = stream.fileno()
        except (OSError, ValueError, AttributeError):
            fd = None
        if fd is not None and loop_may_drive(fd, *others):
            restore = blocking_restorer(fd)
            # the transport owns and closes its own descriptor; ours stays open to put the mode back
            twin = os.fdopen(os.dup(fd), "rb", buffering=0)
            try:
                await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), twin)
                return cls(reader, restore)
            except (ValueError, OSError) as exc:
                twin.close()
                restore()
                logger.debug("sidecar stdin: reading on a thread (%s)", exc)

        def pump() -> None:
            # the descriptor itself, not the buffered stream: a daemon thread blocked inside the
            # stream's read holds its lock, and the interpreter aborts when it finds it held at exit
            read = (lambda size: os.read(fd, size)) if fd is not None else getattr(stream, "read1", stream.read)
            try:
                while chunk := read(65536):
                    loop.call_soon_threadsafe(reader.feed_data, chunk)
            except (OSError, ValueError) as exc:  # closed under us: the same as its end
                logger.debug("sidecar stdin: %s", exc)
            except RuntimeError:  # the loop closed: nobody reads any more
                return
            try:
                loop.call_soon_threadsafe(reader.feed_eof)
            except RuntimeError:
                pass

        threading.Thread(target=pump, name="sidecar-stdin", daemon=True).start()
        return cls(reader, None)

    def close(self) -> None:
        if self._restore is not None:
            self._restore()
            self._restore = None


__all__ = ["Stdin", "blocking_restorer", "loop_may_drive", "take_stdout"]
