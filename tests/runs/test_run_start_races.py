"""``RunService.start`` when two starts race (SPEC §15): what one start checks still holds when
the run goes live, on a real ``Gateway`` and the fake upstream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.config import load_settings
from app.contract.bodies import QueryRequest
from app.devtools import FakeUpstream
from app.devtools.script import text_script
from app.errors import RequestError
from app.gateway import Gateway
from app.runs import Run
from tests.support.deployment import agent, make_deployment, write_agent


async def test_attack_two_starts_naming_the_same_new_chat_cannot_both_write_into_it(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    """AG-UI names a new chat by its ``threadId``. Two starts with the same new id a moment apart
    (two users, or one retrying) both passed the "already exists" check, which reads the disk
    before any line is written, and the second user's run was written into the chat the first
    one created: its owner check is skipped for a new chat. The second start is now refused."""
    deploy = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(deploy, "plain", agent("ONESHOT"))
    upstream.enqueue(text_script(["for alice"]), text_script(["for mallory"]))
    gateway = Gateway(load_settings(deploy, files=(Path("application.yml"),), env={}))
    await gateway.__aenter__()
    try:
        query = QueryRequest(agentKey="plain", message="hello")
        outcomes = await asyncio.gather(gateway.runs.start(query, "alice", new_chat_id="chat_shared01"),
                                        gateway.runs.start(query, "mallory", new_chat_id="chat_shared01"),
                                        return_exceptions=True)
        started = [outcome for outcome in outcomes if isinstance(outcome, Run)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, RequestError)]
        assert len(started) == 1 and len(refused) == 1 and "already exists" in str(refused[0])
        await started[0].wait()  # (whichever of the two got there first)
        owners = {line.get("owner") for line in gateway.chats.read_lines("chat_shared01") if line["_type"] == "query"}
        assert owners == {started[0].owner}
        with pytest.raises(RequestError, match="already exists"):  # and once it is on disk, as before
            await gateway.runs.start(query, "mallory", new_chat_id="chat_shared01")
    finally:
        await gateway.__aexit__(None, None, None)
