"""What the adapters' CLI groups share: loading their TOML file with a named exit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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
