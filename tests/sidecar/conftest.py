"""The sidecar as a real subprocess on the module's ``deploy`` folder (each module defines its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.sidecar import SidecarProcess


@pytest.fixture
async def sidecar(deploy: Path, tmp_path: Path) -> AsyncIterator[SidecarProcess]:
    process = await SidecarProcess(deploy, tmp_path / "sidecar.stderr").start()
    try:
        yield process
    finally:
        await process.stop()
