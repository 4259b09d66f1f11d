"""Ended runs stay attachable (SPEC §15 ``retention-seconds``) within count caps, on a real
``Gateway`` and the fake upstream: ``agent.runs.max-retained-per-user`` and ``max-retained``."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import load_settings
from app.contract.bodies import QueryRequest
from app.devtools import FakeUpstream
from app.devtools.script import text_script
from app.errors import NotFoundError
from app.gateway import Gateway
from tests.support.deployment import agent, make_deployment, write_agent


async def test_attack_many_short_runs_cannot_fill_the_memory_with_retained_logs(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    """Every ended run kept its whole event log (its query's message too, up to the body limit)
    for 300 s, with no cap: one user's stream of fast runs grew the memory by about 1 MB a run.
    Past a cap the oldest retained run goes first; one user's runs push out only that user's."""
    deploy = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(deploy, "plain", agent("ONESHOT"))
    settings = load_settings(deploy, files=(Path("application.yml"),), env={}, overrides={
        "agent": {"runs": {"max-retained-per-user": 3, "max-retained": 5}}})
    gateway = Gateway(settings)
    await gateway.__aenter__()
    try:
        runs = gateway.runs

        async def finished(owner: str) -> str:
            upstream.enqueue(text_script(["ok"]))
            run = await runs.start(QueryRequest(agentKey="plain", message="x" * 100_000), owner)
            await run.wait()
            return run.run_id

        bob = [await finished("bob") for _ in range(2)]
        alice = [await finished("alice") for _ in range(5)]
        for run_id in alice[:2]:  # alice's oldest went when she passed her own cap …
            with pytest.raises(NotFoundError):
                runs.get(run_id, "alice")
        assert all(runs.get(run_id, "alice").run_id == run_id for run_id in alice[2:])
        assert all(runs.get(run_id, "bob").run_id == run_id for run_id in bob)  # … and bob kept his
        carol = [await finished("carol") for _ in range(2)]  # past the global cap: the oldest of all go
        for run_id in bob:
            with pytest.raises(NotFoundError):
                runs.get(run_id, "bob")
        assert len(runs._runs) == 5 and len(runs._expiry) == 5
        assert all(runs.get(run_id, "carol") for run_id in carol)
    finally:
        await gateway.__aexit__(None, None, None)
