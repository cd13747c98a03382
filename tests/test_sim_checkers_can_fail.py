"""The checkers must be able to fail: broken cores make them report violations."""

import contextlib
import dataclasses
import json
import random

import pytest

from hacoord.raft.config import CoreConfig
from hacoord.raft.core import RaftCore
from hacoord.raft.quorum import committed_index
from hacoord.raft.types import (
    ConfState,
    EntryKind,
    HardState,
    Message,
    MessageType,
    PersistedState,
    ReadState,
    Role,
)
from hacoord.sim.cluster import SimConfig, Simulation
from hacoord.sim.invariants import InvariantChecker
from harness import Cluster


class CommitsOldTermEntriesByCounting(RaftCore):
    """Breaks Raft section 5.4.2: commits any entry stored on a majority."""

    def _maybe_commit(self) -> bool:
        idx = committed_index(self.conf, self._self_match)
        if idx > self.log.committed:
            self.log.commit_to(idx)
            return True
        return False


class VotesForAnyLog(RaftCore):
    """Breaks the election restriction (section 5.4.1): ignores log up-to-dateness."""

    def _handle_vote_request(self, m: Message) -> None:
        m.index = m.log_term = 1 << 40
        super()._handle_vote_request(m)


def _figure8(core_class: type[RaftCore]) -> InvariantChecker:
    """The Raft paper's figure 8, scripted on five nodes."""
    checker = InvariantChecker()
    c = Cluster(
        5,
        core_class=core_class,
        checker=checker,
        pre_vote=False,
        check_quorum=False,
        max_msg_bytes=1024,
    )
    c.elect(1)
    for other in (3, 4, 5):
        c.cut(1, other)
    c.propose(1, b"x" * 1000)  # reaches node 2 only
    c.crash(1)
    c.heal()
    c.drop_if = lambda m: m.frm == 5 and m.type is MessageType.APPEND
    c.elect(5)  # with votes of 3 and 4; its no-op stays local
    c.crash(5)
    # The new term's no-op must reach nobody who could store it; probes that will be
    # rejected anyway may pass, so that the leader backs off and sends "x" alone.
    c.drop_if = lambda m: (
        m.type is MessageType.APPEND
        and any(e.kind is EntryKind.NOOP for e in m.entries)
        and c.cores[m.to].log.match_term(m.index, m.log_term)
    )
    c.start(1)
    for _ in range(3):
        c.cores[1].campaign()
        c.process()
    assert c.cores[1].role is Role.LEADER
    c.tick(1, times=3)  # "x" reaches 3 and 4, the new term's no-op reaches nobody
    c.crash(1)
    c.drop_if = lambda m: False
    c.start(5)
    for _ in range(3):  # node 5 needs a term above node 1's to win
        c.cores[5].campaign()
        # A broken core can livelock here (its followers "committed" an entry the
        # new leader does not have), so stop after a bounded number of rounds.
        with contextlib.suppress(AssertionError):
            c.process(max_rounds=200)
    return checker


def test_figure8_is_safe_with_the_real_core() -> None:
    assert _figure8(RaftCore).violations == []


def test_figure8_breaks_when_old_term_entries_commit_by_counting() -> None:
    violations = _figure8(CommitsOldTermEntriesByCounting).violations
    assert violations, "committing an old-term entry by counting must be caught"
    assert any("committed" in v or "state machine" in v for v in violations)


def test_forgetting_a_vote_on_restart_elects_two_leaders_in_one_term() -> None:
    checker = InvariantChecker()
    c = Cluster(3, checker=checker, pre_vote=False, check_quorum=False)
    c.cut(1, 2)
    c.cut(2, 3)
    c.dropped_types = {MessageType.APPEND}  # keep node 3's log as short as node 2's
    c.cores[1].campaign()  # node 3 votes for 1
    c.process()
    term = c.cores[1].term
    assert c.cores[1].role is Role.LEADER
    c.crash(3)
    hs = c.disks[3].hard_state
    c.disks[3].hard_state = HardState(hs.term, 0, hs.commit)  # the broken storage
    c.start(3)
    c.heal()
    c.cut(1, 3)
    c.cut(1, 2)
    c.cores[2].campaign()
    c.process()
    assert c.cores[2].term == term and c.cores[2].role is Role.LEADER
    assert any("election safety" in v for v in checker.violations)


def test_randomized_simulation_catches_a_broken_election_restriction() -> None:
    def factory(
        cfg: CoreConfig, conf: ConfState, rng: random.Random, persisted: PersistedState | None
    ) -> RaftCore:
        return VotesForAnyLog(cfg, conf, rng, persisted)

    caught = [
        seed
        for seed in range(20)
        if Simulation(seed, SimConfig(core_factory=factory)).run().violations
    ]
    assert caught, "20 seeds with a core that votes for any log reported no violation"


class ServesReadsWithoutConfirmingLeadership(RaftCore):
    """Breaks ReadIndex: answers local reads at once, without a heartbeat round."""

    def _leader_read(self, requester: int, context: bytes) -> None:
        if requester == self.id:
            self._read_states.append(ReadState(self.log.committed, context))
        else:
            super()._leader_read(requester, context)


def test_linearizability_checker_catches_unconfirmed_leader_reads() -> None:
    def factory(
        cfg: CoreConfig, conf: ConfState, rng: random.Random, persisted: PersistedState | None
    ) -> RaftCore:
        return ServesReadsWithoutConfirmingLeadership(cfg, conf, rng, persisted)

    # Without CheckQuorum an isolated leader keeps leading, and answering reads.
    results = [
        Simulation(seed, SimConfig(core_factory=factory, check_quorum=False)).run()
        for seed in range(40)
    ]
    caught = [r for r in results if r.violations]
    assert caught, "stale reads from a deposed leader went unnoticed in 40 seeds"
    assert all("linearizability" in r.violations[0] for r in caught)


def test_cli_exits_1_and_prints_the_replay_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from hacoord.sim import __main__ as cli

    real_config = cli._config

    def broken(args: argparse.Namespace) -> SimConfig:
        return dataclasses.replace(real_config(args), core_factory=VotesForAnyLog)

    monkeypatch.setattr(cli, "_config", broken)
    assert cli.main(["--seeds", "20"]) == 1
    captured = capsys.readouterr()
    assert "VIOLATION seed" in captured.err
    assert "replay: python -m hacoord.sim --seeds 1 --start " in captured.err
    summary = json.loads(captured.out.strip())
    assert summary["violations"] >= 1 and summary["failed_seeds"]
