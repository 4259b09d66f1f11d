"""Ended runs stay attachable (SPEC §15 ``retention-seconds``) within count caps, on a real
``Gateway`` and the fake upstream: ``agent.runs.max-retained-per-user``, ``max-retained`` and
``max-retained-events``."""

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


async def test_attack_a_few_long_runs_cannot_fill_the_memory_with_retained_logs(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    """The count caps alone let 2,000 ended runs keep their whole logs, and one long run holds up to
    ``max-response-deltas`` events a model call: gigabytes within the caps. Past
    ``max-retained-events`` the oldest retained runs go first, and a run whose log alone is past it
    is not kept at all."""
    deploy = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(deploy, "plain", agent("ONESHOT"))
    settings = load_settings(deploy, files=(Path("application.yml"),), env={}, overrides={
        "agent": {"runs": {"max-retained-events": 100}}})
    gateway = Gateway(settings)
    await gateway.__aenter__()
    try:
        runs = gateway.runs

        async def finished(deltas: int) -> tuple[str, int]:
            upstream.enqueue(text_script(["d"] * deltas))
            run = await runs.start(QueryRequest(agentKey="plain", message="x"), "alice")
            await run.wait()
            return run.run_id, run.log.last_seq

        kept = [await finished(20) for _ in range(3)]
        assert sum(events for _, events in kept) <= 100
        assert all(runs.get(run_id, "alice") for run_id, _ in kept)
        longer = await finished(40)  # past the budget together: the oldest go until it fits
        assert runs.get(longer[0], "alice")
        gone = [run_id for run_id, _ in kept if run_id not in runs._runs]
        assert gone and gone == [run_id for run_id, _ in kept][:len(gone)]  # oldest first
        assert runs._retained_events == sum(events for run_id, events in [*kept, longer] if run_id in runs._runs)
        assert runs._retained_events <= 100
        before = dict(runs._expiry)
        huge = await finished(150)  # alone past the budget: not kept, and nothing else lost for it
        with pytest.raises(NotFoundError):
            runs.get(huge[0], "alice")
        assert runs._expiry.keys() == before.keys() and runs._retained_events <= 100
    finally:
        await gateway.__aexit__(None, None, None)
