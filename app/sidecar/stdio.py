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
import select
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
        theirs = _identity(other)
        if theirs is not None and theirs[:2] == mine[:2]:  # ``other == fd`` included: the same stream
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
    fd 1 or fd 2 — can put a byte on the protocol stream:

    * the protocol's descriptor is above 2 and not inherited (a closed stderr would otherwise
      make it fd 2, and ``dup2(2, 1)`` would put the protocol back on fd 1);
    * a closed stderr becomes ``/dev/null``;
    * a stderr that *is* the protocol stream (inetd and systemd's ``Accept=yes`` give one
      socket as fds 0, 1 and 2; a launcher's ``2>&1``) becomes ``/dev/null`` too: SPEC §10's
      stdout carries protocol lines only, and a log record could land inside a long line.
      Start the sidecar with stderr on a file of its own to keep its logs.

    ``OSError`` when stdout is not open.
    """
    if sys.stdout is not None:
        sys.stdout.flush()
    if os.name == "posix":
        import fcntl

        protocol_fd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)  # EBADF: started with stdout closed
    else:
        protocol_fd = os.dup(1)
    try:
        mine, theirs = _identity(protocol_fd), _identity(2)
        if theirs is None or (mine is not None and theirs[:2] == mine[:2]):
            if sys.stderr is not None:
                sys.stderr.flush()
            null = os.open(os.devnull, os.O_WRONLY)
            if null != 2:
                os.dup2(null, 2)
                os.close(null)
        os.dup2(2, 1)
    except BaseException:
        os.close(protocol_fd)
        raise
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=65536)


class Stdin:
    """The requests' stream as an ``asyncio.StreamReader`` (``reader``), without blocking the loop;
    ``close`` puts stdin's blocking mode back."""

    def __init__(self, reader: asyncio.StreamReader, restore: Callable[[], None] | None = None,
                 transport: asyncio.BaseTransport | None = None) -> None:
        self.reader = reader
        self._restore = restore
        self._transport = transport

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
                transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), twin)
                return cls(reader, restore, transport)
            except (ValueError, OSError) as exc:
                twin.close()
                restore()
                logger.debug("sidecar stdin: reading on a thread (%s)", exc)

        def pump() -> None:
            # the descriptor itself, not the buffered stream: a daemon thread blocked inside the
            # stream's read holds its lock, and the interpreter aborts when it finds it held at exit
            read = (lambda size: _read_blocking(fd, size)) if fd is not None else getattr(stream, "read1", stream.read)
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
        """Stop reading (the loop's transport is closed) and put stdin's blocking mode back."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._restore is not None:
            self._restore()
            self._restore = None


def _read_blocking(fd: int, size: int) -> bytes:
    """``os.read`` on a descriptor another holder may have left non-blocking: wait instead of
    taking ``EAGAIN`` for the end of input."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            wait_ready(fd, write=False)


def wait_ready(fd: int, *, write: bool) -> None:
    """Wait until ``fd`` can be read or written (``select`` with a timeout: macOS's ``poll`` does
    not take devices, and an error it reports at once would make the caller spin)."""
    if write:
        select.select([], [fd], [fd], 1.0)
    else:
        select.select([fd], [], [fd], 1.0)


__all__ = ["Stdin", "blocking_restorer", "loop_may_drive", "take_stdout", "wait_ready"]
