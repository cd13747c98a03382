"""Every benchmark under benchmarks/ runs end to end at a tiny size and reports sane figures.

Each test runs one benchmark as ``python -m benchmarks.<name>`` in a subprocess from the
repository root and checks the JSON it prints: the counts asked for, figures that agree
with one another, and nothing acknowledged lost. No performance is asserted (figures
belong in benchmarks/RESULTS.md). ``benchmarks.compare`` has its own test,
tests/test_bench_compare.py.

The MySQL benchmarks need MariaDB and BIND9: they skip without them, except under
CI=true, where a missing one is a failure.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hacoord.adapters.dns_testbed import Bind9UnavailableError, ensure_bind9_installed
from hacoord.adapters.mysql.testbed import MariaDBUnavailableError, ensure_mariadb_installed

ROOT = Path(__file__).parent.parent


def _run_benchmark(name: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run ``benchmarks.<name>`` with ``args``; its exit status must be 0 and its stdout
    one JSON object, which is returned."""
    out = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout[-2000:]}\nstderr:\n{out.stderr[-3000:]}"
    result = json.loads(out.stdout)
    assert isinstance(result, dict), out.stdout
    return result


def _need_site_services() -> None:
    """Skip (fail under CI=true) unless MariaDB and BIND9 are, or can be, installed."""
    try:
        ensure_mariadb_installed()
        ensure_bind9_installed()
    except (MariaDBUnavailableError, Bind9UnavailableError) as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"MariaDB and BIND9 are required when CI=true: {e}")
        pytest.skip(str(e))


@pytest.mark.timeout(180)
def test_failover_benchmark_reports_one_sample_per_kill() -> None:
    result = _run_benchmark("failover", "--kills", "3", "--election-timeout-ms", "150", timeout=150)
    assert result["benchmark"] == "failover"
    assert result["kills"] == 3
    assert result["election_timeout_ms"] == 150
    assert result["heartbeat_ms"] == 30  # the default: a fifth of the election timeout
    samples = result["samples_ms"]
    assert len(samples) == 3
    assert all(0 < s < 30_000 for s in samples), samples  # 30 s: the benchmark's deadline
    figures = result["failover_ms"]
    assert figures["p50"] == pytest.approx(statistics.median(samples), abs=0.1)
    assert figures["max"] == max(samples)
    assert figures["p50"] <= figures["p99"] <= figures["max"]
    for q in ("p50", "p99", "max"):
        assert result["x_election_timeout"][q] == pytest.approx(figures[q] / 150, abs=0.01), q


@pytest.mark.timeout(120)
def test_storage_benchmark_reports_every_entry_size_and_batch() -> None:
    result = _run_benchmark("storage", "--seconds", "0.05", timeout=90)
    assert result["benchmark"] == "storage"
    raw = result["raw_fdatasync_per_s"]
    assert raw > 0
    sizes, batches = (64, 1024), (1, 16, 256)
    assert set(result["wal"]) == {f"{s}B_batch{b}" for s in sizes for b in batches}
    for size in sizes:
        for batch in batches:
            name = f"{size}B_batch{batch}"
            run = result["wal"][name]
            assert run["batches_per_s"] > 0, name
            # appends/s is rounded to 1, batches/s to 0.1: allow for both roundings.
            assert run["appends_per_s"] == pytest.approx(
                run["batches_per_s"] * batch, abs=0.5 + 0.05 * batch
            ), name
            assert run["mb_per_s"] == pytest.approx(run["appends_per_s"] * size / 1e6, abs=0.006), (
                name
            )
            if batch == 256:
                assert run["fraction_of_fsync_bound"] == pytest.approx(
                    run["appends_per_s"] / (raw * 256), abs=0.006
                ), name
            else:
                assert "fraction_of_fsync_bound" not in run, name


@pytest.mark.timeout(300)
def test_memory_benchmark_holds_and_reopens_every_key() -> None:
    result = _run_benchmark("memory", "--keys", "20000", "--leases", "200", timeout=120)
    assert (result["keys"], result["leases"], result["keys_after_restart"]) == (20000, 200, 20000)
    key_bytes = len("/bench/keys/0000000000")
    assert result["raw_bytes"] == 20000 * (key_bytes + 64)
    assert result["rss_loaded_bytes"] > result["rss_empty_bytes"]
    assert result["rss_ratio"] == pytest.approx(
        (result["rss_loaded_bytes"] - result["rss_empty_bytes"]) / result["raw_bytes"], abs=0.01
    )
    assert result["snapshot_bytes"] > result["raw_bytes"]  # every key and value is in it
    for figure in ("snapshot_s", "serialize_on_loop_s", "restore_s", "restart_s"):
        assert result[figure] > 0, figure


def test_mysql_failover_benchmark_loses_no_acknowledged_write() -> None:
    _need_site_services()
    result = _run_benchmark("mysql_failover", "--kills", "1", timeout=270)
    assert result["kills"] == 1
    assert result["settings"] == {
        "probe_interval_s": 0.5,
        "probe_timeout_s": 1.0,
        "failures_to_confirm": 3,
        "block_period_s": 3600.0,
        "semi_sync": "AFTER_SYNC",
    }
    samples = result["samples_s"]
    assert {k: len(v) for k, v in samples.items()} == {"detection": 1, "writable": 1, "dns": 1}
    (detected,), (writable,), (dns,) = samples["detection"], samples["writable"], samples["dns"]
    assert 0 < detected < 60, samples
    # The new primary takes writes and DNS names it only once the failure was detected.
    assert writable >= detected and dns >= detected, samples
    for key, sample in (
        ("detection", detected),
        ("new_primary_writable", writable),
        ("dns_answers_new_primary", dns),
    ):
        for q in ("p50_ms", "p99_ms", "max_ms"):
            assert result[key][q] == pytest.approx(sample * 1000, abs=1), (key, q)
    # It waits for 50 writes on the old primary and 1 on the new one.
    assert result["acknowledged_writes"] >= 51
    assert result["acknowledged_writes_lost"] == 0


@pytest.mark.timeout(300)
def test_mysql_soak_quick_kills_members_without_failover_or_loss() -> None:
    _need_site_services()
    result = _run_benchmark("mysql_soak", "--quick", "--kills", "2", timeout=270)
    assert result["quick"] is True
    assert result["member_kills"] == 2
    assert result["failovers"] == 0
    verdicts = result["verdicts_seen_after_kills"]
    assert all(isinstance(v, str) and n > 0 for v, n in verdicts.items()), verdicts
    assert sum(verdicts.values()) <= 2, verdicts  # at most one read per kill
    assert result["acknowledged_writes"] > 0
    assert result["acknowledged_writes_lost"] == 0


def test_k8s_rollout_benchmark_keeps_a_quorum_with_the_adapter_and_not_without() -> None:
    result = _run_benchmark("k8s_rollout", timeout=420)
    assert result["benchmark"] == "k8s_rollout"
    adapted, plain = result["adapter"], result["baseline"]
    for scenario in ("rollout", "drain_two_zones"):
        assert adapted[scenario]["fewest_up"] == 2, adapted[scenario]  # one member down at most
        assert adapted[scenario]["writes_lost"] == 0
        assert adapted[scenario]["writes_acked"] > 0
    assert len(adapted["rollout"]["replacements_s"]) == 3
    assert len(adapted["drain_two_zones"]["replacements_s"]) == 2
    assert adapted["webhook"]["evictions_denied"] >= 2
    # Each cluster's own tools take their members down together.
    assert plain["rollout"]["fewest_up"] < 2
    assert plain["drain_two_zones"]["fewest_up"] < 2


@pytest.mark.timeout(240)
def test_kafka_failover_benchmark_quick_loses_nothing_and_measures_every_phase() -> None:
    # Imported here so that this test stays self-contained: Java and the Kafka jars are
    # checked (and fetched) first, a skip without them, a failure under CI=true.
    from hacoord.adapters.kafka.testbed import KafkaUnavailableError, resolve_jvm
    from kafka_support import unavailable

    try:
        resolve_jvm()
    except KafkaUnavailableError as e:
        unavailable(e)
    result = _run_benchmark("kafka_failover", "--quick", timeout=200)
    assert result["benchmark"] == "kafka_failover"
    assert result["quick"] is True
    assert result["machine"]["cpus"] >= 1
    failover = result["failover"]
    assert failover["kills"] == 1
    (sample,) = failover["samples"]
    assert sample["killed"] != sample["new_primary"]
    # The control plane decides before anything moves; both paths moved within the
    # benchmark's 60 s deadline.
    for path in ("embedded", "proxy"):
        first_ack = sample[f"first_ack_{path}_s"]
        assert 0 < sample["detection_s"] <= first_ack < 60, sample
        for q in ("p50_ms", "p99_ms", "max_ms"):
            assert failover[f"first_ack_{path}"][q] == pytest.approx(first_ack * 1000, abs=1)
    assert 0 < sample["topology_seen_s"] < 60, sample
    delivery = result["delivery"]
    assert delivery["acknowledged"]["embedded"] > 0
    assert delivery["acknowledged"]["proxy"] > 0
    assert delivery["lost"] == 0, delivery["lost_ids"]
    assert delivery["acknowledged_twice"] == 0
    # Read back with the consumer's dedup off: every acknowledged id, and each extra copy
    # counted once.
    assert delivery["consumed_unique"] >= sum(delivery["acknowledged"].values())
    assert delivery["consumed_copies"] == delivery["consumed_unique"] + delivery["duplicate_copies"]
    throughput = result["throughput"]
    assert len(throughput["rounds"]) == 4 * throughput["runs_each"]
    producers = {r["producer"] for r in throughput["rounds"]}
    assert producers == {"ha", "plain", "ha_many", "plain_batch"}
    assert throughput["ha_msgs_per_s"] > 0 and throughput["plain_msgs_per_s"] > 0
    assert throughput["ha_many_msgs_per_s"] > 0 and throughput["plain_batch_msgs_per_s"] > 0
    assert throughput["batch_ratio"] == pytest.approx(
        throughput["ha_many_msgs_per_s"] / throughput["plain_batch_msgs_per_s"], abs=0.001
    )
    assert throughput["ratio"] == pytest.approx(
        throughput["ha_msgs_per_s"] / throughput["plain_msgs_per_s"], abs=0.001
    )
    assert throughput["ratio"] > 0
    stall = result["stall"]
    for consumer in ("with_commit", "without_commit"):
        figures = stall[consumer]
        assert figures["max_gap_ms_after_kill"] > 0, figures
        assert isinstance(figures["goal_met"], bool), figures
    assert stall["with_commit"]["commit_max_ms_after_kill"] > 0, stall["with_commit"]
    # Nothing waits on the dead cluster, not even commit(): the live ones go on delivering
    # to both consumers, and the committing one's commits after the kill keep answering.
    live = {"k1", "k2", "k3"} - {stall["killed"]}
    for consumer in ("with_commit", "without_commit"):
        assert live <= set(stall[consumer]["delivered_after_kill"]), stall
    assert stall["with_commit"]["commits_after_kill"] > 1, stall["with_commit"]
    assert stall["with_commit"]["commits_refused_after_kill"].get(stall["killed"], 0) > 0
