"""Errors of the workflow engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hacoord.workflow.record import WorkflowRecord


class WorkflowError(Exception):
    """Base class of the workflow engine's errors."""


class UnknownWorkflowError(WorkflowError):
    """No workflow of that id, or no definition of that kind, exists."""


class WorkflowBusyError(WorkflowError):
    """Another workflow on the same subject is still running."""

    def __init__(self, subject: str, running: str) -> None:
        super().__init__(
            f"{subject}: workflow {running} is still running; finish or abandon it first"
        )
        self.subject = subject
        self.running = running


class FencedOutError(WorkflowError):
    """This runner's fencing token is no longer the newest: it must stop acting.

    Raised when the leadership behind the token has ended, or when a runner with a
    newer token has taken the workflow over. Nothing was committed.
    """

    def __init__(self, workflow_id: str, token: int, reason: str) -> None:
        super().__init__(f"workflow {workflow_id}: token {token} is fenced out: {reason}")
        self.workflow_id = workflow_id
        self.token = token


class StepFailedError(WorkflowError):
    """A step raised; the workflow is recorded as failed with this message."""

    def __init__(self, record: WorkflowRecord, step: str, cause: BaseException) -> None:
        super().__init__(f"workflow {record.id}: step {step!r} failed: {cause}")
        self.record = record
        self.workflow_id = record.id
        self.step = step
        self.cause = cause
