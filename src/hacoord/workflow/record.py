"""What the cluster stores about a workflow run, and its JSON form.

Records are JSON so that ``hacoord kv get`` shows them readably and any tool can read
the history. Step outputs must therefore be JSON values.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, replace
from typing import Any

from hacoord.workflow.errors import WorkflowError


class Status(enum.StrEnum):
    """Where a workflow run stands."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One completed step: who ran it (token), when, and what it reported."""

    name: str
    token: int
    started_at: float
    finished_at: float
    output: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """How long the step took on the runner that completed it."""
        return self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class TakeOver:
    """A runner with a newer token continued the workflow from this step."""

    token: int
    at: float
    next_step: str


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """A workflow run as committed to the cluster."""

    id: str
    kind: str
    subject: str
    params: dict[str, Any]
    status: Status
    token: int
    """The newest token that wrote this record; older ones are refused."""
    created_at: float
    steps: tuple[StepRecord, ...] = ()
    takeovers: tuple[TakeOver, ...] = ()
    finished_at: float | None = None
    error: str | None = None
    failed_step: str | None = None

    def output(self, step: str) -> dict[str, Any]:
        """The output of completed step ``step`` (``KeyError`` when not completed)."""
        for record in self.steps:
            if record.name == step:
                return record.output
        raise KeyError(f"workflow {self.id}: step {step!r} has not completed")

    def completed(self) -> set[str]:
        """Names of the completed steps."""
        return {s.name for s in self.steps}

    def with_step(self, step: StepRecord) -> WorkflowRecord:
        """This record with one more completed step, written under ``step.token``."""
        return replace(self, steps=(*self.steps, step), token=step.token)

    def to_json(self) -> bytes:
        """Encode for the KV store (raises :class:`WorkflowError` for non-JSON outputs)."""
        try:
            return json.dumps(_to_plain(self), separators=(",", ":"), sort_keys=True).encode()
        except (TypeError, ValueError) as e:
            raise WorkflowError(f"workflow {self.id}: params and outputs must be JSON: {e}") from e

    @staticmethod
    def from_json(data: bytes) -> WorkflowRecord:
        """Decode a record written by :meth:`to_json`; names what is wrong otherwise."""
        try:
            raw = json.loads(data)
            return WorkflowRecord(
                id=raw["id"],
                kind=raw["kind"],
                subject=raw["subject"],
                params=raw["params"],
                status=Status(raw["status"]),
                token=int(raw["token"]),
                created_at=float(raw["created_at"]),
                steps=tuple(StepRecord(**s) for s in raw["steps"]),
                takeovers=tuple(TakeOver(**t) for t in raw["takeovers"]),
                finished_at=raw["finished_at"],
                error=raw["error"],
                failed_step=raw["failed_step"],
            )
        except (ValueError, KeyError, TypeError) as e:
            raise WorkflowError(f"not a workflow record ({type(e).__name__}: {e})") from e


def _to_plain(record: WorkflowRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind,
        "subject": record.subject,
        "params": record.params,
        "status": record.status.value,
        "token": record.token,
        "created_at": record.created_at,
        "steps": [
            {
                "name": s.name,
                "token": s.token,
                "started_at": s.started_at,
                "finished_at": s.finished_at,
                "output": s.output,
            }
            for s in record.steps
        ],
        "takeovers": [
            {"token": t.token, "at": t.at, "next_step": t.next_step} for t in record.takeovers
        ],
        "finished_at": record.finished_at,
        "error": record.error,
        "failed_step": record.failed_step,
    }
