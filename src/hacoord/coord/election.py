"""Elections and locks as keys bound to leases, with fencing tokens.

A candidate creates ``<prefix><name>/<lease id>`` attached to its lease. The holder
is the candidate whose key has the lowest create revision; that revision is its
fencing token. Later candidates' keys are created at higher revisions, so a token
only ever grows, across leader changes and restarts. Losing the lease deletes the
key and hands the election to the next candidate in line.
"""

from __future__ import annotations

from dataclasses import dataclass

from hacoord.coord.commands import Compare, CompareOp, Delete, Put, Range, Target, Txn, TxnOp
from hacoord.coord.results import KeyValue

ELECTION_PREFIX = "_hacoord/election/"
LOCK_PREFIX = "_hacoord/lock/"


def _check_name(name: str) -> None:
    if not name or name.startswith("/") or name.endswith("/"):
        raise ValueError(f"election name {name!r} must be non-empty without leading/trailing /")


def candidates_prefix(name: str, prefix: str = ELECTION_PREFIX) -> str:
    """The key prefix under which the candidates of election ``name`` live."""
    _check_name(name)
    return f"{prefix}{name}/"


def candidate_key(name: str, lease_id: int, prefix: str = ELECTION_PREFIX) -> str:
    """The key of the candidate holding ``lease_id``."""
    if lease_id < 1:
        raise ValueError(f"a candidate needs a lease, got lease id {lease_id}")
    return f"{candidates_prefix(name, prefix)}{lease_id:016x}"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds an election or lock, and the fencing token of that grant."""

    key: str
    value: bytes
    token: int
    lease: int


def holder_of(candidates: list[KeyValue] | tuple[KeyValue, ...]) -> Holder | None:
    """The holder among the keys under an election's prefix (lowest create revision)."""
    if not candidates:
        return None
    kv = min(candidates, key=lambda c: c.create_revision)
    return Holder(kv.key, kv.value, kv.create_revision, kv.lease)


def campaign_txn(name: str, lease_id: int, value: bytes, prefix: str = ELECTION_PREFIX) -> Txn:
    """Join the line of candidates (idempotent: a retry finds the key already there)."""
    key = candidate_key(name, lease_id, prefix)
    return Txn(
        compares=(Compare(key, Target.CREATE, CompareOp.EQUAL, 0),),
        success=(Put(key, value, lease_id),),
        failure=(Range(key),),
    )


def while_holding(holder: Holder, ops: tuple[TxnOp, ...]) -> Txn:
    """Run ``ops`` only if ``holder`` still holds: its key exists with the same token.

    This is the fenced compare-and-set: a holder that lost its lease (or resigned)
    gets ``succeeded=False`` and nothing changes.
    """
    return Txn(
        compares=(Compare(holder.key, Target.CREATE, CompareOp.EQUAL, holder.token),),
        success=ops,
    )


def proclaim_txn(holder: Holder, value: bytes) -> Txn:
    """Change the value published by the holder, only while it still holds."""
    return while_holding(holder, (Put(holder.key, value, holder.lease),))


def resign_txn(holder: Holder) -> Txn:
    """Give up the election or lock (no-op if it was already lost)."""
    return while_holding(holder, (Delete(holder.key),))
