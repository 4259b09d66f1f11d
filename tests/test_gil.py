"""The gateway's thread switch interval (issue 13): 0.5 ms while it runs, so a helper thread
(the chat store's writer) gets the GIL soon even when the event loop is busy; the process's own
setting back once it stops."""

from __future__ import annotations

import sys
from collections.abc import Callable

from app.gil import SWITCH_INTERVAL_S, SwitchInterval
from tests.support.server import GatewayServer


def test_a_running_gateway_shortens_the_switch_interval_and_restores_it_on_stop(
    start_gateway: Callable[..., GatewayServer],
) -> None:
    original = sys.getswitchinterval()
    sys.setswitchinterval(0.004)  # a known setting of the process, whatever ran before
    try:
        server = start_gateway()
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S
        server.stop()
        assert sys.getswitchinterval() == 0.004
    finally:
        sys.setswitchinterval(original)


def test_apply_and_restore_are_each_done_once() -> None:
    before = sys.getswitchinterval()
    tuning = SwitchInterval(0.002)
    try:
        tuning.apply()
        tuning.apply()
        assert sys.getswitchinterval() == 0.002
        tuning.restore()
        assert sys.getswitchinterval() == before
        sys.setswitchinterval(0.003)
        tuning.restore()  # nothing to restore any more: leaves the setting alone
        assert sys.getswitchinterval() == 0.003
    finally:
        sys.setswitchinterval(before)
