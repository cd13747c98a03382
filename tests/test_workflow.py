"""The workflow engine: steps committed under a fencing token, resumed by the next holder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from coordinator import local_client, single_member
from hacoord.client import Client
from hacoord.server.coordination import CoordinationService
from hacoord.workflow import (
    FencedOutError,
    Status,
    Step,
    StepContext,
    StepFailedError,
    UnknownWorkflowError,
    Workflow,
    WorkflowBusyError,
    WorkflowEngine,
    WorkflowError,
    WorkflowRecord,
    WorkflowStore,
)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[CoordinationService]:
    async with single_member(tmp_path) as s:
        yield s


@pytest.fixture
async def client(service: CoordinationService) -> AsyncIterator[Client]:
    async with local_client(service) as c:
        yield c


class Recorder:
    """Steps that log their runs; ``gate`` (if set) holds a step until released."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, int]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}

    def step(self, name: str, output: Mapping[str, Any] | None = None) -> Step:
        async def run(ctx: StepContext) -> Mapping[str, Any] | None:
            self.runs.append((name, ctx.token))
            if name in self.gates:
                self.entered[name].set()
                await self.gates[name].wait()
            return output

        return Step(name, run)

    def gate(self, name: str) -> None:
        self.gates[name] = asyncio.Event()
        self.entered[name] = asyncio.Event()


def three_steps(rec: Recorder) -> Workflow:
    return Workflow(
        "demo",
        (
            rec.step("discover", {"candidate": "db-2"}),
            rec.step("promote", {"gtid": "0-2-10"}),
            rec.step("publish"),
        ),
    )


async def test_steps_run_in_order_and_are_committed_with_the_token(client: Client) -> None:
    rec = Recorder()
    leadership = await client.election("orch").acquire(b"a", ttl_s=5)
    engine = WorkflowEngine(leadership, [three_steps(rec)], clock=iter(range(100)).__next__)
    record = await engine.start("demo", "db1", {"reason": "test"})
    assert record.status is Status.SUCCEEDED
    assert rec.runs == [(n, leadership.token) for n in ("discover", "promote", "publish")]
    stored = await WorkflowStore(client).get(record.id)
    assert stored == record
    assert [s.name for s in stored.steps] == ["discover", "promote", "publish"]
    assert all(s.token == leadership.token for s in stored.steps)
    assert stored.output("discover") == {"candidate": "db-2"} and stored.params["reason"] == "test"
    assert [s.duration_s for s in stored.steps] == [1, 1, 1]
    assert await engine.active("db1") is None, "a finished run frees its subject"
    assert [r.id for r in await engine.history()] == [record.id]


async def test_a_later_step_sees_earlier_outputs(client: Client) -> None:
    seen: list[Any] = []

    async def first(ctx: StepContext) -> Mapping[str, Any]:
        return {"pick": ctx.params["hosts"][1]}

    async def second(ctx: StepContext) -> None:
        seen.append(ctx.output("first")["pick"])

    leadership = await client.election("orch").acquire(b"a", ttl_s=5)
    engine = WorkflowEngine(leadership, [Workflow("w", (Step("first", first), Step("s", second)))])
    await engine.start("w", "db1", {"hosts": ["a", "b"]})
    assert seen == ["b"]


async def test_a_failing_step_is_recorded_and_frees_the_subject(client: Client) -> None:
    cleaned: list[str] = []

    async def boom(ctx: StepContext) -> None:
        raise RuntimeError("replica db-3 has a broken SQL thread")

    async def cleanup(ctx: StepContext, error: BaseException) -> None:
        cleaned.append(f"{ctx.step}: {error}")

    rec = Recorder()
    flow = Workflow("w", (rec.step("ok"), Step("check", boom), rec.step("never")), cleanup)
    leadership = await client.election("orch").acquire(b"a", ttl_s=5)
    engine = WorkflowEngine(leadership, [flow])
    with pytest.raises(StepFailedError, match="broken SQL thread") as info:
        await engine.start("w", "db1")
    failed = info.value.record
    assert failed.status is Status.FAILED and failed.failed_step == "check"
    assert failed.error is not None and "RuntimeError" in failed.error
    assert await engine.get(failed.id) == failed
    assert cleaned == ["check: replica db-3 has a broken SQL thread"]
    assert [name for name, _ in rec.runs] == ["ok"]
    assert await engine.active("db1") is None


async def test_one_run_per_subject_at_a_time(client: Client) -> None:
    rec = Recorder()
    leadership = await client.election("orch").acquire(b"a", ttl_s=5)
    engine = WorkflowEngine(leadership, [three_steps(rec)])
    first = await engine.create("demo", "db1")
    with pytest.raises(WorkflowBusyError, match=first.id):
        await engine.create("demo", "db1")
    other = await engine.create("demo", "db2")
    assert {r.id for r in await engine.running()} == {first.id, other.id}
    done = await engine.resume_all()
    assert [r.status for r in done] == [Status.SUCCEEDED, Status.SUCCEEDED]
    assert (await engine.create("demo", "db1")).status is Status.RUNNING


async def test_bad_input_is_refused_with_a_reason(client: Client) -> None:
    leadership = await client.election("orch").acquire(b"a", ttl_s=5)
    rec = Recorder()
    engine = WorkflowEngine(leadership, [three_steps(rec)])
    with pytest.raises(UnknownWorkflowError, match="known: demo"):
        await engine.create("failover", "db1")
    with pytest.raises(ValueError, match="subject"):
        await engine.create("demo", "a/b")
    with pytest.raises(UnknownWorkflowError):
        await engine.run("nope")
    with pytest.raises(ValueError, match="duplicate step names"):
        Workflow("w", (rec.step("a"), rec.step("a")))

    async def not_json(ctx: StepContext) -> Mapping[str, Any]:
        return {"when": object()}

    engine.workflows["bad"] = Workflow("bad", (Step("s", not_json),))
    with pytest.raises(StepFailedError, match="not JSON"):
        await engine.start("bad", "db9")
    with pytest.raises(WorkflowError, match="not a workflow record"):
        WorkflowRecord.from_json(b'{"id": 1}')


async def test_next_holder_resumes_and_the_old_holders_late_step_is_refused(
    client: Client, service: CoordinationService
) -> None:
    rec = Recorder()
    rec.gate("promote")
    election = client.election("orch")
    old = await election.acquire(b"old", ttl_s=1)
    old_engine = WorkflowEngine(old, [three_steps(rec)])
    created = await old_engine.create("demo", "db1")
    old_run = asyncio.create_task(old_engine.run(created.id))
    await rec.entered["promote"].wait()

    # The old runner hangs inside "promote"; its lease runs out; a new runner is elected.
    await old.lease.stop()
    async with local_client(service) as other:
        new = await other.election("orch").acquire(b"new", ttl_s=5)
        assert new.token > old.token
        old_gate = rec.gates.pop("promote")
        new_engine = WorkflowEngine(new, [three_steps(rec)])
        [finished] = await new_engine.resume_all()
        assert finished.status is Status.SUCCEEDED
        assert [(s.name, s.token) for s in finished.steps] == [
            ("discover", old.token),
            ("promote", new.token),
            ("publish", new.token),
        ]
        assert [(t.token, t.next_step) for t in finished.takeovers] == [(new.token, "promote")]
        assert rec.runs.count(("discover", new.token)) == 0, "committed steps are not rerun"

        # Release the old runner: its late commit is refused, nothing changes.
        old_gate.set()
        with pytest.raises(FencedOutError, match="fenced out"):
            await old_run
        assert await new_engine.get(created.id) == finished
        assert (await old_engine.run(created.id)).status is Status.SUCCEEDED, "nothing to do"
        with pytest.raises(FencedOutError, match="leadership ended"):
            await old_engine.create("demo", "db2")
