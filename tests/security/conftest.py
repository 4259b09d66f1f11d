"""Signing keys for the security tests (the gateway fixtures are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.security.support import KeyPair, rsa_pair


@pytest.fixture(scope="session")
def rsa_key() -> KeyPair:
    return rsa_pair("rsa-1")
