from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.devtools import FakeUpstream


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream
