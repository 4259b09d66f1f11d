"""The scheduler tests' fake upstream (`echo_or_fail`): an echo of the query's message, or a 500 for one that says "fail"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.devtools import FakeUpstream
from tests.support.responders import echo_or_fail


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(responder=echo_or_fail) as fake:
        yield fake
