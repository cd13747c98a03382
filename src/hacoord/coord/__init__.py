"""The coordination layer: the replicated state machine behind elections and locks.

:class:`CoordStateMachine` holds keys with revisions, leases and client sessions;
:mod:`hacoord.coord.election` builds elections and locks with fencing tokens on it;
:class:`FencedResource` enforces tokens at the resource; :class:`LeaseClock` is the
leader's in-memory lease timer.
"""

from hacoord.coord.commands import (
    Compare,
    CompareOp,
    Delete,
    LeaseCheckpoint,
    LeaseExpire,
    LeaseGrant,
    LeaseRevoke,
    Limits,
    Put,
    Range,
    Request,
    Target,
    Txn,
    check_limits,
    decode_request,
    encode_request,
)
from hacoord.coord.election import Holder, campaign_txn, holder_of, while_holding
from hacoord.coord.errors import (
    CompactedError,
    CoordError,
    FencingTokenError,
    InvalidCommandError,
    LeaseNotFoundError,
    StaleSequenceError,
)
from hacoord.coord.fencing import FencedResource
from hacoord.coord.lease_clock import LeaseClock
from hacoord.coord.results import (
    DeleteResult,
    Event,
    EventType,
    KeyValue,
    LeaseGrantResult,
    LeaseRevokeResult,
    PutResult,
    RangeResult,
    TxnResult,
)
from hacoord.coord.state_machine import CoordStateMachine

__all__ = [
    "CompactedError",
    "Compare",
    "CompareOp",
    "CoordError",
    "CoordStateMachine",
    "Delete",
    "DeleteResult",
    "Event",
    "EventType",
    "FencedResource",
    "FencingTokenError",
    "Holder",
    "InvalidCommandError",
    "KeyValue",
    "LeaseCheckpoint",
    "LeaseClock",
    "LeaseExpire",
    "LeaseGrant",
    "LeaseGrantResult",
    "LeaseNotFoundError",
    "LeaseRevoke",
    "LeaseRevokeResult",
    "Limits",
    "Put",
    "PutResult",
    "Range",
    "RangeResult",
    "Request",
    "StaleSequenceError",
    "Target",
    "Txn",
    "TxnResult",
    "campaign_txn",
    "check_limits",
    "decode_request",
    "encode_request",
    "holder_of",
    "while_holding",
]
