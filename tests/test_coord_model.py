"""Property test: the coordination state machine against a deliberately simple model.

Hypothesis drives random puts, deletes, transactions, leases, retries and
snapshot/restore cycles; after every step the state machine must agree with the
model on every key, every lease, the revision, and the watch history.
"""

from dataclasses import dataclass, field

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hacoord.coord import (
    Compare,
    CompareOp,
    CoordStateMachine,
    Delete,
    EventType,
    LeaseGrant,
    LeaseNotFoundError,
    LeaseRevoke,
    Put,
    Request,
    Target,
    Txn,
)
from hacoord.coord.errors import CoordError

KEYS = st.sampled_from(["a", "a/1", "a/2", "b", "b/1", "ab"])
PREFIXES = st.sampled_from(["", "a", "a/", "b", "c"])
VALUES = st.binary(max_size=4)


@dataclass
class ModelKey:
    value: bytes
    create: int
    mod: int
    version: int
    lease: int


@dataclass
class Model:
    keys: dict[str, ModelKey] = field(default_factory=dict)
    leases: set[int] = field(default_factory=set)
    revision: int = 0
    events: list[tuple[int, EventType, str]] = field(default_factory=list)

    def put(self, key: str, value: bytes, lease: int, rev: int) -> None:
        old = self.keys.get(key)
        if old is None:
            self.keys[key] = ModelKey(value, rev, rev, 1, lease)
        else:
            self.keys[key] = ModelKey(value, old.create, rev, old.version + 1, lease)
        self.revision = rev
        self.events.append((rev, EventType.PUT, key))

    def delete(self, keys: list[str], rev: int) -> None:
        for key in sorted(keys):
            del self.keys[key]
            self.revision = rev
            self.events.append((rev, EventType.DELETE, key))


class CoordMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sm = CoordStateMachine(history=1_000_000)
        self.model = Model()
        self.index = 0
        self.client_seq = 0
        self.last_request: tuple[Request, object] | None = None

    def _apply(self, cmd: object, client: bool = False) -> object:
        self.index += 1
        request = Request(cmd, 0, 0)  # type: ignore[arg-type]
        if client:
            self.client_seq += 1
            request = Request(cmd, 1, self.client_seq)  # type: ignore[arg-type]
        try:
            result: object = self.sm.apply_request(request, self.index)
        except CoordError as exc:
            result = exc
        if client:
            self.last_request = (request, result)
        return result

    def _live_lease(self, data: st.DataObject) -> int:
        choices = [*sorted(self.model.leases), 0, 0, 999_999]
        return data.draw(st.sampled_from(choices))

    @rule(key=KEYS, value=VALUES, data=st.data(), client=st.booleans())
    def put(self, key: str, value: bytes, data: st.DataObject, client: bool) -> None:
        lease = self._live_lease(data)
        result = self._apply(Put(key, value, lease), client)
        if lease and lease not in self.model.leases:
            assert isinstance(result, LeaseNotFoundError)
            return
        self.model.put(key, value, lease, self.index)

    @rule(prefix=PREFIXES, exact=KEYS, use_prefix=st.booleans())
    def delete(self, prefix: str, exact: str, use_prefix: bool) -> None:
        key = prefix if use_prefix else exact
        self._apply(Delete(key, use_prefix))
        doomed = [k for k in self.model.keys if (k.startswith(key) if use_prefix else k == key)]
        self.model.delete(doomed, self.index)

    @rule(key=KEYS, version=st.integers(0, 3), value=VALUES, other=KEYS)
    def txn_on_version(self, key: str, version: int, value: bytes, other: str) -> None:
        txn = Txn(
            compares=(Compare(key, Target.VERSION, CompareOp.EQUAL, version),),
            success=(Put(key, value),),
            failure=(Delete(other),),
        )
        result = self._apply(txn)
        current = self.model.keys.get(key)
        holds = (current.version if current else 0) == version
        assert result.succeeded == holds  # type: ignore[attr-defined]
        if holds:
            self.model.put(key, value, 0, self.index)
        elif other in self.model.keys:
            self.model.delete([other], self.index)

    @rule(ttl=st.integers(1000, 5000))
    def grant(self, ttl: int) -> None:
        result = self._apply(LeaseGrant(ttl))
        assert result.lease_id == self.index  # type: ignore[attr-defined]
        self.model.leases.add(self.index)

    @precondition(lambda self: self.model.leases)
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(sorted(self.model.leases)))
        self._apply(LeaseRevoke(lease))
        self.model.leases.discard(lease)
        self.model.delete([k for k, v in self.model.keys.items() if v.lease == lease], self.index)

    @precondition(lambda self: self.last_request is not None)
    @rule()
    def retry_last_client_request(self) -> None:
        assert self.last_request is not None
        request, first = self.last_request
        self.index += 1
        try:
            again: object = self.sm.apply_request(request, self.index)
        except CoordError as exc:
            again = exc
        if isinstance(first, CoordError):
            assert type(again) is type(first) and str(again) == str(first)
        else:
            assert again == first

    @rule()
    def snapshot_and_restore(self) -> None:
        copy = CoordStateMachine(history=1_000_000)
        copy.restore(self.sm.snapshot())
        self.sm = copy

    @invariant()
    def agrees_with_the_model(self) -> None:
        sm, model = self.sm, self.model
        actual = {
            kv.key: ModelKey(kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            for kv in sm.range("", prefix=True).kvs
        }
        assert actual == model.keys
        assert set(sm.leases.leases) == model.leases
        for lease_id, lease in sm.leases.leases.items():
            assert lease.keys == {k for k, v in model.keys.items() if v.lease == lease_id}
        assert sm.revision == model.revision
        events = [(e.revision, e.type, e.kv.key) for e in sm.events_since(1)]
        assert events == model.events


CoordMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestCoordAgainstModel = CoordMachine.TestCase
