"""Child processes for the latency benchmark, and their CPU and memory from ``/proc``.

Children get ``PR_SET_PDEATHSIG`` (SIGTERM when the benchmark dies), their own log file,
and are stopped with SIGTERM then SIGKILL — by pid, never by name.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

_PR_SET_PDEATHSIG = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None,
          stdin_pipe: bool = False, stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
    """Start a child that dies with us; stderr (and stdout unless piped) go to ``log``."""
    handle = log.open("ab")
    try:
        return subprocess.Popen(
            list(argv), cwd=cwd, env=env, preexec_fn=_die_with_parent,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else handle, stderr=handle,
        )
    finally:
        handle.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    if proc.stdin is not None:
        proc.stdin.close()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers (any status below 500) or fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: {tail(log)}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s: {tail(log)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- /proc -------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (by ppid, one scan of /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree.extend(frontier)
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants (fields 14 and 15 of /proc/<pid>/stat)."""
    total = 0
    for member in _descendants(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True, slots=True)
class Memory:
    rss_kib: int
    hwm_kib: int


def memory(pid: int) -> Memory:
    """VmRSS and VmHWM summed over ``pid`` and its descendants."""
    members = _descendants(pid)
    return Memory(sum(_status_kib(m, "VmRSS") for m in members), sum(_status_kib(m, "VmHWM") for m in members))
