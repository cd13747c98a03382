"""Linearizability checking for key-value register histories.

The simulator records every client operation as an :class:`Operation` with its
invocation and response times (virtual time). :func:`check_history` decides whether
some total order of the operations exists that

* respects real time: if ``a`` completed before ``b`` was invoked, ``a`` comes first;
* is legal for a register per key that starts absent (``None``): PUT stores a value,
  GET returns the current value, CAS stores its new value iff the current value
  equals its expected value (and reports ``ok`` accordingly).

Linearizability is compositional, so every key's sub-history is checked on its own.
Each check is a Wing-Gong / Lowe style depth-first search over partial
linearizations, memoized on (set of linearized operations, register value).

Operations whose outcome is unknown (``complete is None``) are handled as follows:
GETs are dropped, since they have no effect; PUTs and CASes may take effect at any
point after their invocation, or never, so linearizing them is optional (a pending
CAS takes effect only if its expected value matches at that point).

Search reductions, all of which keep the search complete:

* a completed read-only operation (a GET, or a CAS that reported failure) that may
  come next and agrees with the register is linearized immediately, without
  branching: moving it earlier in any valid linearization keeps that valid;
* an operation with unknown outcome is only linearized directly before an operation
  that observes the register (a GET, a CAS): in any valid linearization, a pending
  write followed by a PUT (or by nothing) can be deleted;
* a register value that no remaining operation refers to is treated as one value,
  and pending PUTs of such values that may already come next are interchangeable:
  only how many of them are left matters;
* a state is refuted without exploring it if an already refuted state offers at
  least the same ways out: one with more of those spare PUTs left, without the
  obligation to observe the register next, or with no pending operation linearized.
"""

from __future__ import annotations

import enum
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CheckResult",
    "LinearizabilityTimeout",
    "OpKind",
    "Operation",
    "check_history",
]


class OpKind(enum.Enum):
    """The kind of a client operation on one key."""

    PUT = "put"
    GET = "get"
    CAS = "cas"


@dataclass(slots=True)
class Operation:
    """One client operation on one key, as observed by the client.

    ``complete is None`` means the outcome is unknown (the client timed out or
    crashed); ``value`` and ``ok`` are then ignored for GETs and CASes respectively.
    """

    client: int
    kind: OpKind
    key: str
    invoke: float
    """Invocation time (virtual time)."""
    complete: float | None
    """Response time; ``None`` when the outcome is unknown."""
    value: str | None = None
    """PUT: value written; CAS: new value; GET: value observed (``None`` = absent)."""
    expected: str | None = None
    """CAS: the expected current value (``None`` = expects the key to be absent)."""
    ok: bool | None = None
    """CAS: whether it succeeded (only meaningful when completed)."""


@dataclass(slots=True)
class CheckResult:
    """Outcome of :func:`check_history`."""

    ok: bool
    """Whether the history is linearizable."""
    ops_checked: int
    """Operations fed to the per-key searches (GETs with unknown outcome excluded).

    When ``ok`` is false this counts the keys checked up to the failing one."""
    key: str | None = None
    """The first key (in order of first appearance) whose sub-history is not linearizable."""
    explanation: str = ""
    """Human-readable description of the operations that could not be ordered."""


class LinearizabilityTimeout(RuntimeError):
    """The search for one key's linearization exceeded its state budget.

    The history is then neither accepted nor rejected.
    """

    def __init__(self, key: str, sub_history_ops: int, history_ops: int, states: int) -> None:
        self.key = key
        self.sub_history_ops = sub_history_ops
        self.history_ops = history_ops
        self.states = states
        super().__init__(
            f"linearizability check of key {key!r} gave up after exploring {states} "
            f"states (sub-history of {sub_history_ops} ops, history of {history_ops} ops); "
            "raise max_states or check a shorter history"
        )


def check_history(ops: Sequence[Operation], max_states: int = 2_000_000) -> CheckResult:
    """Check whether ``ops`` is a linearizable history of per-key registers.

    Keys are checked one at a time in order of first appearance; the first key whose
    sub-history cannot be linearized is reported in the result with an explanation.
    ``max_states`` bounds the search states explored per key; exceeding it raises
    :class:`LinearizabilityTimeout`. Raises :class:`ValueError` for malformed
    operations (a response before the invocation, a completed CAS without ``ok``).
    """
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        if op.complete is not None:
            if op.complete < op.invoke:
                raise ValueError(f"operation completes before it is invoked: {_describe(op)}")
            if op.kind is OpKind.CAS and op.ok is None:
                raise ValueError(f"completed CAS without a result (ok=None): {_describe(op)}")
        elif op.kind is OpKind.GET:
            continue  # a read with unknown outcome constrains nothing
        by_key.setdefault(op.key, []).append(op)
    checked = 0
    for key, sub in by_key.items():
        checked += len(sub)
        search = _KeySearch(key, sub)
        explanation = search.run(max_states, len(ops))
        if explanation is not None:
            return CheckResult(False, checked, key, explanation)
    return CheckResult(True, checked)


# Kinds of completed operations inside the search.
_GET = 0
_PUT = 1
_CAS_OK = 2
_CAS_FAIL = 3

_Move = tuple[int, int, int]
"""(completed op index or -1, bit of the pending op linearized or 0, register value after)."""

_Key = tuple[int, int, int, int, bool]
"""Memo key: (lowest unlinearized completed op, the completed-op bits from there,
pending-op bits other than spare ones, register value id, whether the next op must
observe the register). The number of spare pending ops left completes a state."""

_DEAD = -1
"""Register value id standing for any value that no unlinearized operation refers to.

All such values behave alike for the rest of the search: no remaining GET returns
them, no remaining CAS expects them."""

_TAIL = 6
"""How many of the last linearized steps an explanation shows."""

_STUCK = 8
"""How many of the operations that could not come next an explanation shows."""


def _low_zero(bits: int) -> int:
    """Index of the lowest clear bit."""
    return (~bits & (bits + 1)).bit_length() - 1


class _Frame:
    """A search state on the DFS stack, with its untried moves."""

    __slots__ = (
        "ccdone",
        "cdone",
        "key",
        "left",
        "move",
        "moves",
        "next",
        "pdone",
        "raw",
        "value",
    )

    def __init__(
        self,
        cdone: int,
        ccdone: int,
        pdone: int,
        value: int,
        raw: int,
        key: _Key,
        left: int,
        moves: list[_Move],
        move: _Move | None,
    ) -> None:
        self.cdone = cdone  # completed ops linearized, bit i = i-th in invocation order
        self.ccdone = ccdone  # the same set, bit i = i-th in completion order
        self.pdone = pdone  # pending (unknown outcome) ops linearized
        self.value = value  # register value id, _DEAD if no remaining op refers to it
        self.raw = raw  # the actual register value id, for explanations
        self.key = key
        self.left = left  # spare pending ops left
        self.moves = moves
        self.next = 0
        self.move = move  # the move that led here


class _KeySearch:
    """WGL search over the sub-history of one key."""

    def __init__(self, key: str, ops: list[Operation]) -> None:
        self.key = key
        self.size = len(ops)
        self.names: list[str | None] = [None]
        self._ids: dict[str | None, int] = {None: 0}

        completed = sorted(
            (op for op in ops if op.complete is not None),
            key=lambda op: (op.invoke, op.complete),
        )
        pending = sorted((op for op in ops if op.complete is None), key=lambda op: op.invoke)
        self.c_ops = completed
        self.c_inv = [op.invoke for op in completed]
        self.c_kind: list[int] = []
        self.c_val: list[int] = []
        self.c_exp: list[int] = []
        for op in completed:
            if op.kind is OpKind.GET:
                kind = _GET
            elif op.kind is OpKind.PUT:
                kind = _PUT
            else:
                kind = _CAS_OK if op.ok else _CAS_FAIL
            self.c_kind.append(kind)
            self.c_val.append(self._id(op.value))
            self.c_exp.append(self._id(op.expected))
        order = sorted(range(len(completed)), key=lambda i: (completed[i].complete, i))
        self.cpos = [0] * len(completed)
        for pos, i in enumerate(order):
            self.cpos[i] = pos
        self.cc_time: list[float] = []
        for i in order:
            complete = completed[i].complete
            assert complete is not None
            self.cc_time.append(complete)

        self.p_ops = pending
        self.p_inv = [op.invoke for op in pending]
        self.p_is_cas = [op.kind is OpKind.CAS for op in pending]
        self.p_val = [self._id(op.value) for op in pending]
        self.p_exp = [self._id(op.expected) for op in pending]
        self.p_by_val: dict[int, list[int]] = {}
        for j, vid in enumerate(self.p_val):
            self.p_by_val.setdefault(vid, []).append(j)

        # Which operations refer to each value (bit masks over completed / pending ops).
        self.ref_c = [0] * len(self.names)
        self.ref_p = [0] * len(self.names)
        for i, kind in enumerate(self.c_kind):
            self.ref_c[self.c_val[i] if kind == _GET else self.c_exp[i]] |= 1 << i
        for j, is_cas in enumerate(self.p_is_cas):
            if is_cas:
                self.ref_p[self.p_exp[j]] |= 1 << j
        self.p_referenced = [bool(self.ref_c[v] or self.ref_p[v]) for v in self.p_val]
        # Pending PUTs of values no pending CAS expects, with the index of the last
        # completed op referring to the value (-1 if none).
        self.p_put_last_ref = [
            (j, self.ref_c[self.p_val[j]].bit_length() - 1)
            for j in range(len(pending))
            if not self.p_is_cas[j] and not self.ref_p[self.p_val[j]]
        ]
        self._spare_cache: dict[tuple[int, int], int] = {}

    def _id(self, value: str | None) -> int:
        vid = self._ids.get(value)
        if vid is None:
            vid = len(self.names)
            self._ids[value] = vid
            self.names.append(value)
        return vid

    # ------------------------------------------------------------------ search

    def _window(self, cdone: int, ccdone: int) -> tuple[int, int, float]:
        """Completed ops that may come next lie in ``[lo, hi)`` (invocation order).

        An op may come next iff no unlinearized completed op finished before it was
        invoked, i.e. iff it was invoked no later than ``deadline``.
        """
        lo = _low_zero(cdone)
        deadline = self.cc_time[_low_zero(ccdone)]
        return lo, bisect_right(self.c_inv, deadline, lo), deadline

    def _spare(self, lo: int, ccdone: int) -> int:
        """Bits of the interchangeable pending ops of states with this ``lo`` and
        ``ccdone``: PUTs that may already come next and whose values nothing remaining
        refers to.

        They can be linearized from now on in every state, and all they can do is put
        in an unreferenced value, so which of them are left does not matter, only how
        many.
        """
        top = bisect_right(self.p_inv, self.cc_time[_low_zero(ccdone)])
        spare = self._spare_cache.get((lo, top))
        if spare is None:
            spare = 0
            for j, last_ref in self.p_put_last_ref:
                if j < top and last_ref < lo:
                    spare |= 1 << j
            self._spare_cache[lo, top] = spare
        return spare

    def _live(self, value: int, cdone: int, pdone: int) -> bool:
        """Whether some unlinearized operation refers to ``value``."""
        return bool(self.ref_c[value] & ~cdone or self.ref_p[value] & ~pdone)

    def _canon(self, value: int, cdone: int, pdone: int) -> int:
        if value == _DEAD or self._live(value, cdone, pdone):
            return value
        return _DEAD

    def _moves(self, cdone: int, ccdone: int, pdone: int, value: int, flagged: bool) -> list[_Move]:
        """Moves out of a state; ``flagged`` means the last move was a pending write,
        so the next operation must observe the register."""
        lo, hi, deadline = self._window(cdone, ccdone)
        kinds, vals, exps = self.c_kind, self.c_val, self.c_exp
        moves: list[_Move] = []
        blocked: list[int] = []  # completed ops that need another register value
        for i in range(lo, hi):
            if cdone >> i & 1:
                continue
            kind = kinds[i]
            if kind == _GET:
                if vals[i] == value:
                    return [(i, 0, value)]
                blocked.append(i)
            elif kind == _CAS_FAIL:
                if exps[i] != value:
                    return [(i, 0, value)]
                blocked.append(i)
            elif kind == _PUT:
                if not flagged:
                    moves.append((i, 0, vals[i]))
            elif exps[i] == value:
                moves.append((i, 0, vals[i]))
            else:
                blocked.append(i)
        if self.p_ops:
            self._pending_moves(cdone, pdone, value, deadline, blocked, not flagged, moves)
        return moves

    def _pending_moves(
        self,
        cdone: int,
        pdone: int,
        value: int,
        deadline: float,
        blocked: list[int],
        allow_put: bool,
        moves: list[_Move],
    ) -> None:
        """Append the pending writes worth linearizing next.

        A pending write is only tried if some operation that may come after it would
        observe the value it writes. A blocked failed CAS only needs the register to
        change, so any other value will do; writes of values that nothing remaining
        refers to are then interchangeable, and only the latest-invoked one of each
        kind is tried (keeping earlier ones, usable in more states, for later).
        """
        top = bisect_right(self.p_inv, deadline)
        if not top:
            return
        kinds, vals, exps = self.c_kind, self.c_val, self.c_exp
        p_is_cas, p_exp, p_val = self.p_is_cas, self.p_exp, self.p_val
        wanted = {exps[i] if kinds[i] == _CAS_OK else vals[i] for i in blocked}
        for j in range(top):
            if p_is_cas[j] and not pdone >> j & 1:
                wanted.add(p_exp[j])
        candidates: set[int] = set()
        for v in wanted:
            for j in self.p_by_val.get(v, ()):
                if j < top:
                    candidates.add(j)
        if any(kinds[i] == _CAS_FAIL for i in blocked):
            dead_put = dead_cas = -1
            for j in range(top - 1, -1, -1):
                if pdone >> j & 1 or j in candidates:
                    continue
                if self.p_referenced[j] and self._live(p_val[j], cdone, pdone):
                    candidates.add(j)
                elif not p_is_cas[j]:
                    if dead_put < 0:
                        dead_put = j
                elif dead_cas < 0 and p_exp[j] == value:
                    dead_cas = j
            candidates.update(j for j in (dead_put, dead_cas) if j >= 0)
        for j in sorted(candidates):
            if (
                pdone >> j & 1
                or p_val[j] == value  # changes nothing: never needed
                or (p_exp[j] != value if p_is_cas[j] else not allow_put)
            ):
                continue
            moves.append((-1, 1 << j, p_val[j]))

    def run(self, max_states: int, history_ops: int) -> str | None:
        """Search for a linearization; return ``None`` if one exists, else an explanation."""
        nc = len(self.c_ops)
        if nc == 0:
            return None
        full = (1 << nc) - 1
        root_value = self._canon(0, 0, 0)
        root_left = self._spare(0, 0).bit_count() if self.p_ops else 0
        root_moves = self._moves(0, 0, 0, root_value, False)
        root = _Frame(
            0, 0, 0, root_value, 0, (0, 0, 0, root_value, False), root_left, root_moves, None
        )
        stack = [root]
        # Fully explored states (none led to a linearization), mapped to the most spare
        # pending ops any of them had left. Every visited state not on the stack is
        # refuted, and states on the stack are ancestors of the current one, which has
        # more ops linearized; so this also serves as the set of visited states.
        refuted: dict[_Key, int] = {}
        states = 1
        best, best_done = root, 0
        best_tail: list[_Move] = []
        while stack:
            frame = stack[-1]
            if frame.next == len(frame.moves):
                stack.pop()
                if refuted.get(frame.key, -1) < frame.left:
                    refuted[frame.key] = frame.left
                continue
            move = frame.moves[frame.next]
            frame.next += 1
            c, pbits, raw = move
            cdone, ccdone = frame.cdone, frame.ccdone
            if c >= 0:
                cdone |= 1 << c
                if cdone == full:
                    return None
                ccdone |= 1 << self.cpos[c]
            pdone = frame.pdone | pbits
            value = self._canon(raw, cdone, pdone)
            if raw == _DEAD:
                raw = frame.raw
            lo = _low_zero(cdone)
            rest = cdone >> lo
            flagged = c < 0
            pkey, left = pdone, 0
            if self.p_ops:
                spare = self._spare(lo, ccdone)
                pkey, left = pdone & ~spare, (spare & ~pdone).bit_count()
            # Prune the state if a refuted one offers at least the same ways out: the
            # same state, or one with more spare pending ops left, or without the
            # obligation to observe the register next, or with no pending op linearized.
            key = (lo, rest, pkey, value, flagged)
            if refuted.get(key, -1) >= left:
                continue
            if flagged and refuted.get((lo, rest, pkey, value, False), -1) >= left:
                continue
            if pdone and refuted.get((lo, rest, 0, self._canon(raw, cdone, 0), False), -1) >= left:
                continue
            states += 1
            if states > max_states:
                raise LinearizabilityTimeout(self.key, self.size, history_ops, states - 1)
            moves = self._moves(cdone, ccdone, pdone, value, flagged)
            child = _Frame(cdone, ccdone, pdone, value, raw, key, left, moves, move)
            stack.append(child)
            done = cdone.bit_count()
            if done > best_done:
                best, best_done = child, done
                best_tail = [f.move for f in stack[-_TAIL:] if f.move is not None]
        return self._explain(best, best_done, best_tail)

    # ------------------------------------------------------------- reporting

    def _explain(self, best: _Frame, done: int, tail: list[_Move]) -> str:
        nc, npending = len(self.c_ops), len(self.p_ops)
        lo, hi, _ = self._window(best.cdone, best.ccdone)
        stuck = [self.c_ops[i] for i in range(lo, hi) if not best.cdone >> i & 1]
        text = f"the {nc} completed ops on key {self.key!r}"
        if npending:
            plural = "s" if npending != 1 else ""
            text += f" (plus {npending} write{plural} with unknown outcome)"
        text += f" cannot be linearized. The longest consistent order found places {done}"
        if tail:
            steps: list[str] = []
            for c, pbits, _ in tail:
                steps.extend(_describe(self.p_ops[j]) for j in range(npending) if pbits >> j & 1)
                if c >= 0:
                    steps.append(_describe(self.c_ops[c]))
            text += ", ending with: " + "; ".join(steps)
        text += f". The register then holds {self.names[best.raw]!r}, and none of the "
        text += "operations that may come next leads to a linearization: "
        text += "; ".join(_describe(op) for op in stuck[:_STUCK])
        if len(stuck) > _STUCK:
            text += f"; ... ({len(stuck) - _STUCK} more)"
        return text


def _describe(op: Operation) -> str:
    """One-line description of an operation for explanations."""
    end = "?" if op.complete is None else f"{op.complete:g}"
    span = f"[{op.invoke:g}, {end}]"
    if op.kind is OpKind.GET:
        what = f"GET -> {op.value!r}"
    elif op.kind is OpKind.PUT:
        what = f"PUT {op.value!r}"
    else:
        what = f"CAS {op.expected!r} -> {op.value!r}"
        if op.complete is not None:
            what += " ok" if op.ok else " failed"
    if op.complete is None:
        what += " (outcome unknown)"
    return f"client {op.client} {what} {span}"
