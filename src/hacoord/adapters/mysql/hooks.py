"""Operator commands run at points of a workflow (e.g. to fence an unreachable primary)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HookResult:
    """How a hook command ended: exit status and the tail of its output."""

    argv: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.returncode == 0


async def run_hook(
    argv: Sequence[str], env: Mapping[str, str], timeout_s: float = 60.0
) -> HookResult:
    """Run ``argv`` with ``env`` added to the environment; a timeout counts as failure."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as e:
        return HookResult(tuple(argv), 127, f"cannot run {argv[0]!r}: {e}")
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return HookResult(tuple(argv), -1, f"timed out after {timeout_s} s")
    assert proc.returncode is not None
    return HookResult(tuple(argv), proc.returncode, out.decode(errors="replace")[-2000:])
