"""Who a caller is, as far as every layer needs to know (SPEC §9)."""

from __future__ import annotations

#: the one user of auth-off mode and the owner of every chat written without auth; reserved,
#: so no token may claim it as its ``sub`` (SPEC §9)
ANONYMOUS = "anonymous"

__all__ = ["ANONYMOUS"]
