"""The sidecar's standard streams as launchers really give them (SPEC §10; ``app.sidecar.stdio``):
one socket for stdin and stdout (inetd, ``socat EXEC:``), stderr merged into stdout, a terminal,
``/dev/null`` as stdin (systemd's default), stdout closed, and a stdout nobody reads on the
writer thread's path. Real subprocesses; the parent keeps its own copy of each descriptor it
hands over, so it sees the open file description's blocking mode as every other holder does.
"""

from __future__ import annotations

import asyncio
import fcntl
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

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from app.logs import StderrQueue
from tests.support.deployment import REPO, agent, make_deployment, write_agent
from tests.support.sidecar import SidecarProcess

#: a generous bound that only turns a hang into a failure
HANG = 60
#: fcntl's F_SETPIPE_SZ (Linux; the module names it from Python 3.10 on some platforms only)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

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


async def _output_until_exit(proc: subprocess.Popen[bytes], fd: int) -> bytes:
    """Everything ``fd`` carries until ``proc`` has exited (read as it comes, so it never waits for us)."""
    status = asyncio.ensure_future(_exit_status(proc))
    data = b""
    while True:
        done = status.done()
        readable, _, _ = await asyncio.to_thread(select.select, [fd], [], [], 0 if done else 0.1)
        if readable:
            chunk = os.read(fd, 65536)
            data += chunk
            if chunk:
                continue
        if done:
            break
    await status
    return data


def _only_protocol_lines(data: bytes) -> list[dict[str, object]]:
    lines = [line for line in data.split(b"\n") if line.strip()]
    messages = [orjson.loads(line) for line in lines]  # a log line is not JSON: it fails here
    assert all(message["jsonrpc"] == "2.0" for message in messages), messages
    return messages


async def test_stderr_merged_into_stdout_keeps_logs_off_the_protocol_and_the_mode_is_put_back(
        launch: Launch) -> None:
    """``2>&1``: SPEC §10's stdout carries protocol lines only, and a log record written into a
    non-blocking protocol pipe could be dropped or cut into a long JSON line; the sidecar sends
    its logs to ``/dev/null`` instead. The mode the loop changed on each pipe is put back when it
    exits (a launcher writing the same stdout afterwards failed with EAGAIN)."""
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    try:
        proc = launch(stdin=in_read, stdout=out_write, stderr=out_write)
        os.write(in_write, _health(1))
        os.close(in_write)
        in_write = -1
        messages = _only_protocol_lines(await _output_until_exit(proc, out_read))
        assert proc.returncode == 0
        assert [m["id"] for m in messages] == [1]
        assert os.get_blocking(in_read), "stdin's pipe was left non-blocking"
        assert os.get_blocking(out_write), "stdout's pipe was left non-blocking"
    finally:
        for fd in (in_read, in_write, out_read, out_write):
            if fd >= 0:
                os.close(fd)


async def test_inetd_one_socket_as_stdin_stdout_and_stderr_carries_protocol_lines_only(launch: Launch) -> None:
    """inetd and systemd's ``Accept=yes`` give one socket as fds 0, 1 and 2: the INFO logs
    ("sidecar ready", …) went to the JSON-RPC client among its answers."""
    ours, theirs = socket.socketpair()
    with ours:
        proc = launch(stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=theirs.fileno())
        theirs.close()
        ours.sendall(_health(1) + _health(2))
        ours.shutdown(socket.SHUT_WR)
        messages = _only_protocol_lines(await _output_until_exit(proc, ours.fileno()))
    assert proc.returncode == 0
    assert sorted(m["id"] for m in messages) == [1, 2]  # type: ignore[type-var]


def test_a_closed_stderr_cannot_put_the_protocol_back_on_fd_1_or_2(tmp_path: Path) -> None:
    """Started with stderr closed, ``os.dup(1)`` returned 2 and ``dup2(2, 1)`` made fd 1 the
    protocol again: anything writing fd 1 or 2 (a child process, C code) wrote into it."""
    script = ("import os\n"
              "from app.sidecar.stdio import take_stdout\n"
              "out = take_stdout()\n"
              "assert out.fileno() > 2 and not os.get_inheritable(out.fileno())\n"
              "os.write(1, b'stray on fd 1\\n')\n"
              "os.write(2, b'stray on fd 2\\n')\n"
              "out.write(b'PROTOCOL\\n')\n"
              "out.flush()\n")
    result = subprocess.run(["/bin/sh", "-c", f'exec "{sys.executable}" -c "$0" 2>&-', script],
                            capture_output=True, cwd=str(REPO), timeout=HANG)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"PROTOCOL\n"


async def test_a_terminal_another_holder_left_non_blocking_is_read_not_taken_for_the_end(
        launch: Launch, tmp_path: Path) -> None:
    """stdin a terminal (read on a thread) whose description someone else made non-blocking: the
    reader took ``EAGAIN`` for the end of input and the sidecar stopped before reading anything."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(slave, False)  # our copy shares the description with the sidecar's stdin
    out_read, out_write = os.pipe()
    try:
        with open(tmp_path / "stderr", "wb") as stderr:
            proc = launch(stdin=slave, stdout=out_write, stderr=stderr.fileno())
        for _ in range(HANG * 20):  # the reader starts with the sidecar: it meets an empty terminal first
            if b"sidecar ready" in (tmp_path / "stderr").read_bytes() or proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert proc.poll() is None, "the sidecar took the empty terminal for the end of its input"
        os.write(master, _health(7))
        replies = await asyncio.to_thread(_read_replies, out_read, 1)
        assert [r["id"] for r in replies] == [7]
        proc.terminate()
        assert await _exit_status(proc) == 0
    finally:
        for fd in (master, slave, out_read, out_write):
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


def _small_pipe() -> tuple[int, int]:
    """A pipe whose buffer is one page: a few log lines fill it."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    return read_end, write_end


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ shrinks the pipe (Linux)")
async def test_unread_stderr_never_blocks_protocol_replies(tmp_path: Path, upstream: FakeUpstream) -> None:
    """A host that pipes stderr and never reads it (Node's ``spawn`` default): once the pipe was
    full, the next log record blocked the event loop in ``write`` and no request was answered
    again. Each run logs two lines here; the pipe holds a page."""
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT"))
    read_end, write_end = _small_pipe()
    sidecar = await SidecarProcess(root, write_end, extra_args=("--log-level", "DEBUG")).start()
    os.close(write_end)
    try:
        for n in range(30):
            upstream.enqueue(text_script([f"answer {n}"]))
            result = await asyncio.wait_for(await sidecar.send("agent.query", {"agentKey": "plain", "message": "x"}),
                                            HANG)
            assert result["result"]["status"] == "complete", result
        assert (await asyncio.wait_for(await sidecar.send("gateway.health"), HANG))["result"]["status"] == "UP"
        assert select.select([read_end], [], [], 0)[0]  # the logs are waiting in the full pipe
        # the logs were kept for when stderr is read: every run's lines arrive, then the exit
        closing = asyncio.ensure_future(sidecar.close_stdin())
        logs = await asyncio.to_thread(_read_to_end, read_end)
        assert await closing == 0
        assert logs.count(b"started: chat=") == 30 and b"sidecar: stopped" in logs
    finally:
        os.close(read_end)
        await sidecar.stop()


def _read_to_end(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return data


def test_a_full_stderr_queue_drops_lines_and_reports_how_many() -> None:
    """``StderrQueue`` never blocks its caller: past its capacity lines are dropped and counted,
    and the count is written once stderr is read again."""
    read_end, write_end = _small_pipe()
    sink = StderrQueue(write_end, capacity=4)
    sink.start()
    try:
        for n in range(200):  # far more than the pipe and the queue hold; returns at once
            sink.put(f"line {n:03d} " + "x" * 200 + "\n")
        data = b""
        while b"dropped" not in data:
            assert select.select([read_end], [], [], HANG)[0], data[-300:]
            data += os.read(read_end, 65536)
        sink.close(timeout_s=HANG)
        dropped = int(data.split(b" log record(s) dropped")[0].rsplit(b" ", 1)[-1])
        written = data.count(b"line ")
        assert dropped > 0 and written + dropped <= 200
        assert b"line 000" in data  # the first lines were kept, the later ones dropped
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_line_logged_after_the_queue_closed_still_reaches_stderr() -> None:
    """At the sidecar's exit the queue's thread is gone; a line logged then (a thread winding down)
    was queued to nobody and lost. It is written directly, and a stderr nobody reads costs the
    exit one bounded wait, not a hang."""
    read_end, write_end = _small_pipe()
    sink = StderrQueue(write_end, capacity=4)
    sink.start()
    try:
        sink.put("before close\n")
        sink.close(timeout_s=HANG)
        assert os.read(read_end, 65536) == b"before close\n"  # the one-page pipe is empty again
        sink.put("after close\n")
        assert select.select([read_end], [], [], HANG)[0]
        assert os.read(read_end, 65536) == b"after close\n"
        while select.select([], [write_end], [], 0)[1]:  # nobody reads stderr from here on
            os.write(write_end, b"y" * 512)
        sink.put("lost\n")  # waits once, then gives up
        sink.put("lost too\n")  # at once
        assert b"lost" not in os.read(read_end, 1 << 20)
    finally:
        os.close(read_end)
        os.close(write_end)
