"""Run ``python -m app …`` with the garbage collector's pauses recorded (the latency benchmark's gateways).

``python bench/latency_gcprobe.py OUT.json <agw arguments>``: registers a ``gc.callbacks`` hook,
runs the gateway's command line in this process, and when it returns (SIGTERM → graceful stop)
writes every collection as ``[start_ns, wall_ns, cpu_ns, generation, collected]`` to ``OUT.json``
(``start_ns`` on ``time.monotonic_ns()``, the system-wide clock the benchmark's phases use; ``cpu_ns``
the collecting thread's CPU time, which a busy machine's preemption does not inflate), with
the collector's thresholds and the number of frozen objects at the end. The hook costs four clock
reads per collection; the gateway itself is unchanged (its code comes from ``PYTHONPATH``).
"""

from __future__ import annotations

import gc
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson


class PauseRecorder:
    """``gc.callbacks`` hook: one record per collection."""

    def __init__(self) -> None:
        self.records: list[tuple[int, int, int, int, int]] = []
        self._started = self._cpu = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started, self._cpu = time.monotonic_ns(), time.thread_time_ns()
        else:
            self.records.append((self._started, time.monotonic_ns() - self._started,
                                 time.thread_time_ns() - self._cpu, info["generation"], info.get("collected", 0)))


def main() -> int:
    out = Path(sys.argv[1])
    recorder = PauseRecorder()
    gc.callbacks.append(recorder)
    # uvicorn stops gracefully on SIGTERM, then raises the signal again for the handler it found:
    # this one turns it into SystemExit, so the record below is still written
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    sys.argv = ["agw", *sys.argv[2:]]
    from app.cli import main as agw

    try:
        code = agw()
    finally:
        gc.callbacks.remove(recorder)
        out.write_bytes(orjson.dumps({"collections": recorder.records, "threshold": gc.get_threshold(),
                                      "frozen": gc.get_freeze_count()}))
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
