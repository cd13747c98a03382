"""The PySyncObj adapter of the comparison benchmark drives a real 3-process cluster."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.compare.pysyncobj_system import PySyncObjSystem  # noqa: E402


async def test_pysyncobj_system_failover_restart_and_embedded(tmp_path: Path) -> None:
    system = PySyncObjSystem()
    assert system.name == "pysyncobj"
    assert system.supports_leases is False
    await system.start(tmp_path, election_timeout_ms=300)
    try:
        pids = [system.pid(m) for m in range(3)]
        assert all(p is not None for p in pids), pids

        await system.put("alpha", b"one")
        assert await system.get("alpha") == b"one"
        assert await system.get("missing") is None

        first = await system.leader()
        assert first in (0, 1, 2)

        system.kill(first)
        assert system.pid(first) is None
        await system.put("beta", b"two")
        second = await system.leader()
        assert second in (0, 1, 2)
        assert second != first
        assert await system.get("beta") == b"two"
        assert await system.get("alpha") == b"one"

        system.restart(first)
        assert system.pid(first) is not None
        await system.wait_healthy(timeout_s=30.0)
        assert await system.leader() in (0, 1, 2)
        await system.put("gamma", b"three")
        assert await system.get("gamma") == b"three"

        rate = await system.embedded_rate(1.0, tmp_path / "emb")
        assert rate is not None
        assert rate > 0, rate
    finally:
        await system.stop()
    assert all(system.pid(m) is None for m in range(3))
