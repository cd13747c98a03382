"""EtcdSystem drives a real 3-member etcd cluster: writes, failover, restart, leases."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

# ``benchmarks`` lives at the repository root, which plain ``pytest`` does not put on
# sys.path (``python -m pytest`` does).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.compare.etcd_system import EtcdSystem, ensure_etcd  # noqa: E402


def _etcd_binary() -> str:
    try:
        return ensure_etcd()
    except RuntimeError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"etcd is required under CI=true but is unavailable: {exc}")
        pytest.skip(f"etcd is not installed and could not be installed: {exc}")


async def _leader_other_than(system: EtcdSystem, old: int, timeout_s: float = 10.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    seen = -1
    while loop.time() < deadline:
        seen = await system.leader()
        if seen not in (-1, old):
            return seen
        await asyncio.sleep(0.05)
    return seen


async def test_start_rejects_election_timeout_below_five_heartbeats(tmp_path: Path) -> None:
    system = EtcdSystem(binary="/nonexistent/etcd")
    with pytest.raises(ValueError, match="5x heartbeat"):
        await system.start(tmp_path, 40)


async def test_etcd_system_failover_restart_and_leases(tmp_path: Path) -> None:
    system = EtcdSystem(binary=_etcd_binary())
    assert system.name == "etcd"
    assert system.supports_leases is True

    await system.start(tmp_path, 300)
    try:
        assert all(system.pid(m) is not None for m in range(3))
        assert await system.embedded_rate(1.0, tmp_path) is None

        await system.put("alpha", b"one")
        assert await system.get("alpha") == b"one"
        assert await system.get("never-written") is None
        await system.put("empty", b"")
        assert await system.get("empty") == b""

        old = await system.leader()
        assert old in (0, 1, 2)
        system.kill(old)
        assert system.pid(old) is None

        await system.put("alpha", b"two")
        assert await system.get("alpha") == b"two"
        new = await _leader_other_than(system, old)
        assert new in {0, 1, 2} - {old}, f"leader after killing {old}: {new}"

        system.restart(old)
        assert system.pid(old) is not None
        await system.wait_healthy(30.0)
        assert await system.leader() in (0, 1, 2)
        # Round-robin sends these reads to every member, the restarted one included.
        for _ in range(3):
            assert await system.get("alpha") == b"two"

        lease = await system.lease_grant(30)
        assert lease > 0
        await system.lease_keepalive(lease)
        ids = await system.lease_ids()
        assert lease in ids
        assert lease + 1 not in ids
        with pytest.raises(RuntimeError, match="does not exist"):
            await system.lease_keepalive(lease + 1)
    finally:
        await system.stop()

    assert all(system.pid(m) is None for m in range(3))
    await system.stop()  # stopping twice is harmless
