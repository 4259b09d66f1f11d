"""Placeholder router (filled by the protocol adapter work)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
