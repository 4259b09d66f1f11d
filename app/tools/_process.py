"""Running a child process safely for ``_bash_`` and ``_skill_run_script_`` (SPEC §3.3).

No shell is involved here: ``argv`` is executed directly. The child gets a minimal
environment (never the gateway's secrets), a closed stdin, its own process group
(killed as a whole on timeout or cancellation) and capped output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.errors import ToolError

logger = logging.getLogger(__name__)

#: per stream; the rest is read and dropped so the child never blocks on a full pipe
MAX_OUTPUT_BYTES = 64 * 1024
_READ_CHUNK = 64 * 1024
#: after the child exits, how long its pipes may stay open (grandchildren) before we kill the group
_DRAIN_GRACE_S = 1.0
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class ProcessResult:
    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool
    timed_out: bool


def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``PATH``, ``LANG`` and ``HOME`` only (plus ``extra``): nothing else of the gateway's environment."""
    # only absolute PATH entries: a relative one ("." or "") would let a file in the
    # working directory shadow a whitelisted command
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if os.path.isabs(p))
    env = {
        "PATH": path or _DEFAULT_PATH,
        "LANG": "C.UTF-8",
        "HOME": os.environ.get("HOME") or "/tmp",
    }
    if extra:
        env.update(extra)
    return env


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(_READ_CHUNK):
        room = limit - len(kept)
        if room > 0:
            kept += chunk[:room]
        if len(chunk) > max(room, 0):
            truncated = True
    return bytes(kept), truncated


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    max_output_bytes: int = MAX_OUTPUT_BYTES,
    preexec_fn: Callable[[], None] | None = None,
) -> ProcessResult:
    """Run ``argv`` in ``cwd``; kill its whole process group after ``timeout_s``.

    ``preexec_fn`` runs in the child before ``exec`` (the sandbox sets its resource limits there).

    Raises ``ToolError`` when the program cannot be started.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(cwd),
            env=dict(env) if env is not None else minimal_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
    except FileNotFoundError as exc:
        raise ToolError(f"cannot run {argv[0]!r}: program not found") from exc
    except PermissionError as exc:
        raise ToolError(f"cannot run {argv[0]!r}: permission denied") from exc
    except OSError as exc:
        raise ToolError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc

    assert proc.stdout is not None and proc.stderr is not None
    readers = asyncio.gather(
        _read_capped(proc.stdout, max_output_bytes), _read_capped(proc.stderr, max_output_bytes)
    )
    timed_out = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), timeout=max(timeout_s, 0.001))
        except TimeoutError:
            timed_out = True
            logger.info("process %s timed out after %.3fs; killing its group", argv[0], timeout_s)
            _kill_group(proc.pid)
            await proc.wait()
        try:
            (out, out_cut), (err, err_cut) = await asyncio.wait_for(asyncio.shield(readers), _DRAIN_GRACE_S)
        except TimeoutError:
            # a grandchild still holds the pipes open: end it, then collect what we have
            _kill_group(proc.pid)
            (out, out_cut), (err, err_cut) = await readers
    except BaseException:
        # cancelled (run cancelled, client gone) or an unexpected failure: leave nothing running
        _kill_group(proc.pid)
        readers.cancel()
        with contextlib.suppress(BaseException):
            await readers
        raise
    return ProcessResult(
        exit_code=proc.returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        truncated=out_cut or err_cut,
        timed_out=timed_out,
    )
