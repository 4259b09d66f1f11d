"""The interpreter's thread switch interval while a gateway runs (issue 13).

The gateway's event loop shares the GIL with a few helper threads: the chat store's writer,
the usage ledger's writer, ``asyncio.to_thread`` work (history reads, file references) and
the file watcher. A thread that wants the GIL while the loop is busy waits until the loop
drops it, and CPython asks the running thread to drop it only after the switch interval,
5 ms by default. A run awaits the chat store's write of its query line before it calls the
model, so under load that wait landed in the time to first token: with 200 paced streams
flowing, a new stream's first token came 6.1 ms after its request (p50; the direct path
0.7 ms), and 4.1 ms with a 0.5 ms interval (docs/DECISIONS.md, "Hot path").

``SwitchInterval.apply()`` (the gateway calls it at start-up, with ``CollectorTuning``) sets
``SWITCH_INTERVAL_S``; ``restore()`` (at the gateway's close) puts the previous value back, so
a process that starts several gateways (the tests) keeps its own setting. The cost: a helper
thread that computes for long now shares the GIL in slices of 0.5 ms instead of 5 ms; the
helpers here mostly wait on I/O.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

#: seconds a thread may hold the GIL while another waits for it (CPython's default: 0.005)
SWITCH_INTERVAL_S = 0.0005


@dataclass(slots=True)
class SwitchInterval:
    """The switch interval of one running gateway; ``apply`` then ``restore``, each at most once."""

    seconds: float = SWITCH_INTERVAL_S
    _previous: float | None = field(default=None, init=False)

    def apply(self) -> None:
        if self._previous is not None:
            return
        self._previous = sys.getswitchinterval()
        sys.setswitchinterval(self.seconds)

    def restore(self) -> None:
        if self._previous is None:
            return
        sys.setswitchinterval(self._previous)
        self._previous = None


__all__ = ["SWITCH_INTERVAL_S", "SwitchInterval"]
