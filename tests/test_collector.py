"""The gateway's garbage-collector settings (issue 13): start-up heap frozen and full collections
rarer while it runs; the process's own settings back once it stops."""

from __future__ import annotations

import gc
from collections.abc import Callable

from app.collector import GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD, CollectorTuning
from tests.support.server import GatewayServer


def test_a_running_gateway_freezes_its_start_up_heap_and_restores_on_stop(
    start_gateway: Callable[..., GatewayServer],
) -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    server = start_gateway()
    assert gc.get_threshold() == (GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    assert gc.get_freeze_count() > 10_000  # modules, models, routes: out of every later collection
    server.stop()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_apply_and_restore_are_each_done_once() -> None:
    before = gc.get_threshold()
    tuning = CollectorTuning((1234, 5, 6))
    try:
        tuning.apply()
        tuning.apply()
        assert gc.get_threshold() == (1234, 5, 6)
        tuning.restore()
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        gc.set_threshold(999, 9, 9)
        tuning.restore()  # nothing to restore any more: leaves the settings alone
        assert gc.get_threshold() == (999, 9, 9)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
