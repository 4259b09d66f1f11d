"""The sidecar's standard streams as launchers really give them (SPEC §10; ``app.sidecar.stdio``):
one socket for stdin and stdout (inetd, ``socat EXEC:``), stderr merged into stdout, a terminal,
``/dev/null`` as stdin (systemd's default), stdout closed, and a stdout nobody reads on the
writer thread's path. Real subprocesses; the parent keeps its own copy of each descriptor it
hands over, so it sees the open file description's blocking mode as every other holder does.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import subprocess
import sys
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.support.deployment import REPO, agent, make_deployment, write_agent

#: a generous bound that only turns a hang into a failure
HANG = 60

Launch = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def deploy(tmp_path: Path) -> Path:
    # no model is called: gateway.health answers from the gateway itself
    root = make_deployment(tmp_path / "deploy", "http://127.0.0.1:9")
    write_agent(root, "plain", agent("ONESHOT"))
    return root


@pytest.fixture
def launch(deploy: Path) -> Iterator[Launch]:
    """Starts ``agw sidecar`` on the given descriptors; whatever is still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*, stdin: int, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "app", "sidecar", "--dir", str(deploy)],
                                stdin=stdin, stdout=stdout, stderr=stderr, cwd=str(REPO))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _health(request_id: int) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": "gateway.health"}) + b"\n"


def _read_replies(fd: int, count: int) -> list[dict[str, object]]:
    """Read until ``count`` JSON-RPC replies have arrived (other lines, logs, are skipped), or give
    up after ``HANG`` seconds without a byte: a sidecar that never answers fails the test instead
    of leaving a reader thread blocked for ever."""
    buffer, replies = b"", []
    while len(replies) < count:
        if not select.select([fd], [], [], HANG)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            line = line.strip()
            if line.startswith(b"{") and b'"jsonrpc"' in line:
                replies.append(orjson.loads(line))
    return replies


async def _exit_status(proc: subprocess.Popen[bytes]) -> int:
    try:
        return await asyncio.wait_for(asyncio.to_thread(proc.wait), HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_one_socket_as_stdin_and_stdout_still_gets_its_answers(launch: Launch, tmp_path: Path) -> None:
    """inetd, ``socat EXEC:`` and systemd's ``Accept=yes`` give the sidecar one socket as stdin and
    stdout. asyncio's write transport watches a socket for reading (the reader leaving) and took
    the first request arriving for that: every answer after it was dropped."""
    ours, theirs = socket.socketpair()
    with ours, open(tmp_path / "stderr", "wb") as stderr:
        proc = launch(stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=stderr.fileno())
        theirs.close()
        ours.sendall(b"".join(_health(n) for n in range(1, 4)))
        replies = await asyncio.to_thread(_read_replies, ours.fileno(), 3)
        assert sorted(r["id"] for r in replies) == [1, 2, 3]  # type: ignore[type-var]
        assert all(r["result"]["status"] == "UP" for r in replies), replies  # type: ignore[index]
        ours.shutdown(socket.SHUT_WR)  # end of input
        assert await _exit_status(proc) == 0
    assert "Traceback" not in (tmp_path / "stderr").read_text(errors="replace")


async def test_stderr_merged_into_stdout_stays_blocking_and_the_mode_is_put_back_after(launch: Launch) -> None:
    """``stderr=STDOUT``: a non-blocking protocol stream would make every log record a possible
    ``BlockingIOError`` (dropped, or cut into a JSON line); and the modes the sidecar changed on
    its pipes must be put back when it exits (a launcher writing the same stdout afterwards
    failed with EAGAIN)."""
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    try:
        proc = launch(stdin=in_read, stdout=out_write, stderr=out_write)
        os.write(in_write, _health(1))
        replies = await asyncio.to_thread(_read_replies, out_read, 1)
        assert replies[0]["id"] == 1
        assert os.get_blocking(out_write), "the merged stdout/stderr was made non-blocking"
        os.close(in_write)
        in_write = -1
        status_task = asyncio.ensure_future(_exit_status(proc))
        while not status_task.done():  # keep reading its logs, so it never waits for us
            readable, _, _ = await asyncio.to_thread(select.select, [out_read], [], [], 0.1)
            if readable:
                os.read(out_read, 65536)
        assert await status_task == 0
        assert os.get_blocking(in_read), "stdin's pipe was left non-blocking"
        assert os.get_blocking(out_write)
    finally:
        for fd in (in_read, in_write, out_read, out_write):
            if fd >= 0:
                os.close(fd)


async def test_own_pipes_are_driven_by_the_loop_and_left_blocking_after_exit(launch: Launch, tmp_path: Path) -> None:
    """The desktop case (a pipe each): the loop drives them in non-blocking mode while the sidecar
    runs, and puts the mode back when it stops."""
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    try:
        with open(tmp_path / "stderr", "wb") as stderr:
            proc = launch(stdin=in_read, stdout=out_write, stderr=stderr.fileno())
        os.write(in_write, _health(1))
        replies = await asyncio.to_thread(_read_replies, out_read, 1)
        assert replies[0]["id"] == 1
        assert not os.get_blocking(out_write) and not os.get_blocking(in_read)  # the loop's own I/O
        os.close(in_write)
        in_write = -1
        assert await _exit_status(proc) == 0
        assert os.get_blocking(in_read) and os.get_blocking(out_write)
    finally:
        for fd in (in_read, in_write, out_read, out_write):
            if fd >= 0:
                os.close(fd)


async def test_a_terminal_as_stdin_and_stdout_gets_every_answer_and_stays_blocking(
        launch: Launch, tmp_path: Path) -> None:
    """A terminal's stdin, stdout and stderr are one open file description: reading stdin from the
    loop made the writer thread's terminal non-blocking, and a burst lost its answers silently."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        with open(tmp_path / "stderr", "wb") as stderr:
            proc = launch(stdin=slave, stdout=slave, stderr=stderr.fileno())
        count = 200
        os.write(master, b"".join(_health(n) for n in range(1, count + 1)))
        await asyncio.sleep(0.5)  # the answers pile up in the terminal while nobody reads them
        replies = await asyncio.to_thread(_read_replies, master, count)
        assert sorted(r["id"] for r in replies) == list(range(1, count + 1))  # type: ignore[type-var]
        assert os.get_blocking(slave), "the terminal was made non-blocking"
        proc.terminate()  # a raw terminal has no end-of-input character: SIGTERM ends the sidecar
        assert await _exit_status(proc) == 0
        assert os.get_blocking(slave)
    finally:
        os.close(master)
        os.close(slave)


async def test_stdin_from_dev_null_ends_at_once(launch: Launch, tmp_path: Path) -> None:
    """systemd's ``StandardInput=null``: epoll refuses ``/dev/null``, asyncio reported that from a
    later callback, and the sidecar never saw the end of its input."""
    with open(tmp_path / "stderr", "wb") as stderr:
        proc = launch(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr.fileno())
    assert await _exit_status(proc) == 0
    assert "Traceback" not in (tmp_path / "stderr").read_text(errors="replace")


async def test_a_closed_stdout_is_a_clear_error_not_a_traceback(deploy: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", f'exec "{sys.executable}" -m app sidecar --dir "{deploy}" >&-',
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(REPO))
    _, err = await asyncio.wait_for(proc.communicate(), HANG)
    assert proc.returncode == 2
    assert b"stdout is not open" in err and b"Traceback" not in err, err


async def test_a_stdout_nobody_reads_on_the_writer_thread_does_not_keep_the_sidecar_alive(
        launch: Launch, tmp_path: Path) -> None:
    """A terminal nobody reads (a paused one) takes the writer thread's path: once the reader has
    taken nothing for ``CLOSE_TIMEOUT_S``, the sidecar exits all the same (it used to wait for
    the blocked write for ever, even on SIGTERM)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    in_read, in_write = os.pipe()
    try:
        with open(tmp_path / "stderr", "wb") as stderr:
            proc = launch(stdin=in_read, stdout=slave, stderr=stderr.fileno())
        os.close(in_read)
        in_read = -1
        os.write(in_write, _health(0))
        assert (await asyncio.to_thread(_read_replies, master, 1))[0]["id"] == 0
        for start in range(1, 4001, 500):  # about 200 KB of answers: far more than a terminal holds
            await asyncio.to_thread(os.write, in_write, b"".join(_health(n) for n in range(start, start + 500)))
        os.close(in_write)
        in_write = -1
        assert await _exit_status(proc) == 0
        assert "dropping the rest" in (tmp_path / "stderr").read_text(errors="replace")
    finally:
        for fd in (master, slave, in_read, in_write):
            if fd >= 0:
                os.close(fd)
