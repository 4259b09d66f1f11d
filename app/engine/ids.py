"""Id formats of SPEC §6."""

from __future__ import annotations

import secrets
import uuid


def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex[:20]


def new_chat_id() -> str:
    return "chat_" + uuid.uuid4().hex[:20]


def _hex8() -> str:
    return secrets.token_hex(4)


def frontend_tool_id() -> str:
    return "t_" + _hex8()


def action_id() -> str:
    return "a_" + _hex8()


def msg_id() -> str:
    return "m_" + _hex8()


def plan_id() -> str:
    return "p_" + _hex8()
