"""Run workflows as named, idempotent steps, each committed under a fencing token.

A workflow (a failover, a switchover) is a list of :class:`Step`. The runner holds an
election (:class:`~hacoord.client.Leadership`); after each step it commits the step's
output to the cluster in a transaction that succeeds only while that leadership still
holds *and* nobody else wrote the record since. When the runner dies mid-way, the next
holder calls :meth:`WorkflowEngine.resume_all` and continues from the first step that
was not committed, under its own newer token; the old runner's late commit is refused
(:class:`FencedOutError`). Steps must be idempotent: a step may run again after a
runner died between doing it and committing it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hacoord.client.client import Client
from hacoord.client.election import Leadership
from hacoord.coord.commands import Compare, CompareOp, Delete, Put, Range, Target, Txn, TxnOp
from hacoord.coord.errors import FencingTokenError
from hacoord.coord.results import KeyValue, RangeResult
from hacoord.workflow.errors import (
    FencedOutError,
    StepFailedError,
    UnknownWorkflowError,
    WorkflowBusyError,
    WorkflowError,
)
from hacoord.workflow.record import Status, StepRecord, TakeOver, WorkflowRecord

log = logging.getLogger("hacoord.workflow")

WORKFLOW_PREFIX = "_hacoord/workflow/"

StepFn = Callable[["StepContext"], Awaitable[Mapping[str, Any] | None]]
FailureFn = Callable[["StepContext", BaseException], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Step:
    """A named, idempotent action; returns a JSON-able mapping recorded as its output."""

    name: str
    run: StepFn


@dataclass(frozen=True, slots=True)
class Workflow:
    """The definition of a kind of workflow: its steps in order.

    ``on_failure`` runs (best effort) when a step raises, before the failure is
    committed, e.g. to give a frozen primary its writes back.
    """

    kind: str
    steps: tuple[Step, ...]
    on_failure: FailureFn | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            raise ValueError("a workflow needs a kind")
        names = [s.name for s in self.steps]
        if not names:
            raise ValueError(f"workflow {self.kind!r} has no steps")
        if len(set(names)) != len(names):
            raise ValueError(f"workflow {self.kind!r} has duplicate step names: {names}")


@dataclass(slots=True)
class StepContext:
    """What a step sees: the run so far, its parameters and the runner's token."""

    record: WorkflowRecord
    step: str
    token: int
    leadership: Leadership
    """The leadership the runner holds (to make more fenced writes)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Per-run scratch space shared by the steps of one runner (not persisted)."""

    @property
    def params(self) -> dict[str, Any]:
        """The parameters the workflow was started with."""
        return self.record.params

    def output(self, step: str) -> dict[str, Any]:
        """The committed output of an earlier step."""
        return self.record.output(step)


class WorkflowStore:
    """Read access to workflow records: one run, the running ones, the history."""

    def __init__(self, client: Client, namespace: str = "default") -> None:
        if not namespace or "/" in namespace:
            raise ValueError(f"workflow namespace {namespace!r} must be non-empty without '/'")
        self.client = client
        self.namespace = namespace
        self._runs = f"{WORKFLOW_PREFIX}{namespace}/runs/"
        self._active = f"{WORKFLOW_PREFIX}{namespace}/active/"

    def run_key(self, workflow_id: str) -> str:
        """The key of a run's record."""
        return self._runs + workflow_id

    def active_key(self, subject: str) -> str:
        """The key naming the running workflow of ``subject`` (one at a time)."""
        return self._active + subject

    async def get(self, workflow_id: str) -> WorkflowRecord | None:
        """The record of run ``workflow_id`` (linearizable), or ``None``."""
        kv = await self.client.get(self.run_key(workflow_id))
        return None if kv is None else WorkflowRecord.from_json(kv.value)

    async def active(self, subject: str) -> str | None:
        """The id of the workflow running on ``subject``, or ``None``."""
        kv = await self.client.get(self.active_key(subject))
        return None if kv is None else kv.value.decode()

    async def history(self, subject: str | None = None, limit: int = 0) -> list[WorkflowRecord]:
        """Runs newest first (optionally only those of ``subject``; ``limit`` 0: all)."""
        result = await self.client.range(self._runs, prefix=True)
        kvs = sorted(result.kvs, key=lambda kv: kv.create_revision, reverse=True)
        records = [WorkflowRecord.from_json(kv.value) for kv in kvs]
        if subject is not None:
            records = [r for r in records if r.subject == subject]
        return records[:limit] if limit > 0 else records

    async def running(self) -> list[WorkflowRecord]:
        """Runs not finished yet, oldest first."""
        return [r for r in reversed(await self.history()) if r.status is Status.RUNNING]


class WorkflowEngine(WorkflowStore):
    """Starts and resumes workflows as the holder of ``leadership``."""

    def __init__(
        self,
        leadership: Leadership,
        workflows: Iterable[Workflow],
        namespace: str = "default",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(leadership.election.client, namespace)
        self.leadership = leadership
        self.workflows = {w.kind: w for w in workflows}
        self._clock = clock

    @property
    def token(self) -> int:
        """The fencing token this engine acts with."""
        return self.leadership.token

    def _holding(self) -> Compare:
        holder = self.leadership.holder
        return Compare(holder.key, Target.CREATE, CompareOp.EQUAL, holder.token)

    def _definition(self, kind: str) -> Workflow:
        try:
            return self.workflows[kind]
        except KeyError:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise UnknownWorkflowError(f"no workflow of kind {kind!r} (known: {known})") from None

    async def create(
        self,
        kind: str,
        subject: str,
        params: Mapping[str, Any] | None = None,
        workflow_id: str | None = None,
    ) -> WorkflowRecord:
        """Record a new run of ``kind`` on ``subject`` without running it.

        Raises :class:`WorkflowBusyError` while another run on ``subject`` is not
        finished, so two failovers of one database can never interleave.
        """
        self._definition(kind)
        if not subject or "/" in subject:
            raise ValueError(f"workflow subject {subject!r} must be non-empty without '/'")
        workflow_id = workflow_id or f"{kind}-{secrets.token_hex(6)}"
        record = WorkflowRecord(
            id=workflow_id,
            kind=kind,
            subject=subject,
            params=dict(params or {}),
            status=Status.RUNNING,
            token=self.token,
            created_at=self._clock(),
        )
        run_key, active_key = self.run_key(workflow_id), self.active_key(subject)
        txn = Txn(
            compares=(
                self._holding(),
                Compare(active_key, Target.CREATE, CompareOp.EQUAL, 0),
                Compare(run_key, Target.CREATE, CompareOp.EQUAL, 0),
            ),
            success=(Put(run_key, record.to_json()), Put(active_key, workflow_id.encode())),
            failure=(Range(self.leadership.holder.key), Range(active_key), Range(run_key)),
        )
        result = await self.client.txn(txn)
        if result.succeeded:
            log.info(
                "workflow %s (%s on %s) created, token %d", workflow_id, kind, subject, self.token
            )
            return record
        holder, active, existing = (_first(r) for r in result.results)
        self._check_holder(workflow_id, holder)
        if active is not None:
            raise WorkflowBusyError(subject, active.value.decode())
        assert existing is not None
        raise WorkflowError(f"workflow {workflow_id} already exists")

    async def start(
        self,
        kind: str,
        subject: str,
        params: Mapping[str, Any] | None = None,
        workflow_id: str | None = None,
    ) -> WorkflowRecord:
        """Create a run and carry it out; returns the finished record.

        Raises :class:`StepFailedError` (with the failed record) when a step fails and
        :class:`FencedOutError` when this runner lost its leadership on the way.
        """
        record = await self.create(kind, subject, params, workflow_id)
        return await self.run(record.id)

    async def resume_all(self) -> list[WorkflowRecord]:
        """Continue every unfinished run (call after winning the election).

        A failing run does not stop the others; its failure is in its record.
        """
        finished = []
        for record in await self.running():
            try:
                finished.append(await self.run(record.id))
            except StepFailedError as e:
                finished.append(e.record)
        return finished

    async def abandon(self, workflow_id: str, reason: str) -> WorkflowRecord:
        """Mark an unfinished run failed without running more steps (operator action)."""
        record, mod = await self._load(workflow_id)
        if record.status is not Status.RUNNING:
            return record
        record = replace(
            record,
            status=Status.FAILED,
            token=max(record.token, self.token),
            error=f"abandoned: {reason}",
            finished_at=self._clock(),
        )
        await self._commit(record, mod, finish=True)
        return record

    async def run(self, workflow_id: str) -> WorkflowRecord:
        """Carry out the steps of ``workflow_id`` not committed yet."""
        record, mod = await self._load(workflow_id)
        if record.status is not Status.RUNNING:
            return record
        definition = self._definition(record.kind)
        pending = [s for s in definition.steps if s.name not in record.completed()]
        if record.token != self.token:
            if record.token > self.token:
                raise FencedOutError(workflow_id, self.token, f"run by newer token {record.token}")
            next_step = pending[0].name if pending else "(finish)"
            log.warning(
                "workflow %s: taking over from token %d at step %s with token %d",
                workflow_id,
                record.token,
                next_step,
                self.token,
            )
            record = replace(
                record,
                token=self.token,
                takeovers=(*record.takeovers, TakeOver(self.token, self._clock(), next_step)),
            )
            mod = await self._commit(record, mod)
        extra: dict[str, Any] = {}
        for step in pending:
            if self.leadership.is_lost:
                raise FencedOutError(workflow_id, self.token, "the leadership's lease is lost")
            ctx = StepContext(record, step.name, self.token, self.leadership, extra)
            started = self._clock()
            try:
                output = dict(await step.run(ctx) or {})
                _check_json(workflow_id, step.name, output)
            except FencingTokenError as e:
                raise FencedOutError(workflow_id, self.token, str(e)) from e
            except (FencedOutError, asyncio.CancelledError):
                raise
            except Exception as e:
                log.error("workflow %s: step %s failed: %s", workflow_id, step.name, e)
                await self._on_failure(definition, ctx, e)
                record = replace(
                    record,
                    status=Status.FAILED,
                    error=f"{type(e).__name__}: {e}",
                    failed_step=step.name,
                    finished_at=self._clock(),
                )
                await self._commit(record, mod, finish=True)
                raise StepFailedError(record, step.name, e) from e
            step_record = StepRecord(step.name, self.token, started, self._clock(), output)
            record = record.with_step(step_record)
            mod = await self._commit(record, mod)
            log.info(
                "workflow %s: step %s done in %.3f s (token %d)",
                workflow_id,
                step.name,
                step_record.duration_s,
                self.token,
            )
        record = replace(record, status=Status.SUCCEEDED, finished_at=self._clock())
        await self._commit(record, mod, finish=True)
        log.info("workflow %s succeeded", workflow_id)
        return record

    async def _on_failure(self, definition: Workflow, ctx: StepContext, e: Exception) -> None:
        if definition.on_failure is None:
            return
        try:
            await definition.on_failure(ctx, e)
        except Exception as cleanup_error:
            log.error(
                "workflow %s: on_failure after %s failed too: %s",
                ctx.record.id,
                ctx.step,
                cleanup_error,
            )

    async def _load(self, workflow_id: str) -> tuple[WorkflowRecord, int]:
        kv = await self.client.get(self.run_key(workflow_id))
        if kv is None:
            raise UnknownWorkflowError(f"no workflow {workflow_id!r}")
        return WorkflowRecord.from_json(kv.value), kv.mod_revision

    async def _commit(self, record: WorkflowRecord, mod: int, finish: bool = False) -> int:
        """Write ``record`` if we still hold and nobody wrote it since ``mod``."""
        run_key = self.run_key(record.id)
        ops: tuple[TxnOp, ...] = (Put(run_key, record.to_json()),)
        if finish:
            ops += (Delete(self.active_key(record.subject)),)
        txn = Txn(
            compares=(self._holding(), Compare(run_key, Target.MOD, CompareOp.EQUAL, mod)),
            success=ops,
            failure=(Range(self.leadership.holder.key), Range(run_key)),
        )
        result = await self.client.txn(txn)
        if result.succeeded:
            return result.revision
        holder, current = (_first(r) for r in result.results)
        self._check_holder(record.id, holder)
        if current is not None:
            newer = WorkflowRecord.from_json(current.value)
            if newer.token > self.token:
                raise FencedOutError(record.id, self.token, f"run by newer token {newer.token}")
        raise WorkflowError(f"workflow {record.id} was changed by another writer with this token")

    def _check_holder(self, workflow_id: str, holder: KeyValue | None) -> None:
        if holder is None or holder.create_revision != self.token:
            raise FencedOutError(workflow_id, self.token, "the leadership ended")


def _check_json(workflow_id: str, step: str, output: dict[str, Any]) -> None:
    try:
        json.dumps(output)
    except (TypeError, ValueError) as e:
        raise WorkflowError(
            f"workflow {workflow_id}: output of step {step!r} is not JSON: {e}"
        ) from e


def _first(result: object) -> KeyValue | None:
    assert isinstance(result, RangeResult)
    return result.kvs[0] if result.kvs else None
