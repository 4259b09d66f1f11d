"""Fixtures for the catalog tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import Deployment


@pytest.fixture
def deploy(tmp_path: Path) -> Deployment:
    return Deployment(tmp_path)
