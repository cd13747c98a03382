"""Fenced, resumable workflows: named idempotent steps committed under a fencing token."""

from hacoord.workflow.engine import (
    Step,
    StepContext,
    Workflow,
    WorkflowEngine,
    WorkflowStore,
)
from hacoord.workflow.errors import (
    FencedOutError,
    StepFailedError,
    UnknownWorkflowError,
    WorkflowBusyError,
    WorkflowError,
)
from hacoord.workflow.record import Status, StepRecord, TakeOver, WorkflowRecord

__all__ = [
    "FencedOutError",
    "Status",
    "Step",
    "StepContext",
    "StepFailedError",
    "StepRecord",
    "TakeOver",
    "UnknownWorkflowError",
    "Workflow",
    "WorkflowBusyError",
    "WorkflowEngine",
    "WorkflowError",
    "WorkflowRecord",
    "WorkflowStore",
]
