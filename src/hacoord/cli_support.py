"""What the adapters' CLI groups share: loading their TOML file, printing workflow history."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # annotations only: `hacoord` starts without the workflow engine
    from hacoord.workflow import WorkflowRecord


T = TypeVar("T")


def adapter_config(adapter: str, option: str, path: str | None, load: Callable[[Path], T]) -> T:
    """``load(path)``; on a missing ``option`` or any problem in the file, exit naming it.

    Every adapter's loader raises ``ValueError`` (or a subclass) naming the file and the
    setting, so the operator sees one line instead of a traceback.
    """
    if not path:
        raise SystemExit(f"hacoord {adapter}: {option} FILE is required for this command")
    try:
        return load(Path(path))
    except ValueError as e:
        raise SystemExit(f"hacoord {adapter}: configuration error: {e}") from None


def print_history(
    records: Iterable[WorkflowRecord],
    as_json: bool,
    line: Callable[[WorkflowRecord, str], str],
    steps_in_seconds: bool = False,
) -> None:
    """Print workflow records, one JSON object each or one ``line(record, steps)`` each
    (``steps``: every step with its duration) and the failed step under a failed one."""
    for record in records:
        if as_json:
            print(record.to_json().decode())
            continue
        if steps_in_seconds:
            steps = ", ".join(f"{s.name} {s.duration_s:.1f}s" for s in record.steps)
        else:
            steps = ", ".join(f"{s.name} {s.duration_s * 1000:.0f}ms" for s in record.steps)
        print(line(record, steps))
        if record.error:
            print(f"    failed at {record.failed_step}: {record.error}")
