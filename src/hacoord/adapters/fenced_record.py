"""Publish a watchable record only while holding a leadership, never over a newer one.

Adapters publish small records that clients act on (the MySQL primary, the Kafka
topology). Each write must (1) happen only while its writer still holds the election that
gave it its fencing token, checked inside the same transaction, and (2) never replace a
record that a newer holder already wrote. :func:`publish_fenced` does both with a
compare-and-swap loop on the record's revision; the caller says what "newer" means.
"""

from __future__ import annotations

from collections.abc import Callable

from hacoord.client.election import Leadership
from hacoord.coord.commands import Compare, CompareOp, Put, Range, Target, Txn
from hacoord.coord.results import RangeResult
from hacoord.workflow.errors import FencedOutError

RefuseOver = Callable[[bytes], str | None]
"""Given the stored record, why the new one must not replace it (``None``: it may)."""


async def publish_fenced(
    leadership: Leadership, key: str, value: bytes, refuse_over: RefuseOver, workflow: str = ""
) -> int:
    """Write ``value`` at ``key`` while holding ``leadership``; returns the write's revision.

    ``refuse_over`` sees the stored record (when there is one) and returns why ``value``
    must not replace it. Raises :class:`FencedOutError` (with ``workflow`` and the token)
    when it refuses or when the leadership has ended.
    """
    client = leadership.election.client
    holder = leadership.holder
    while True:
        current = await client.range(key)
        mod = current.kvs[0].mod_revision if current.kvs else 0
        if current.kvs:
            why = refuse_over(current.kvs[0].value)
            if why is not None:
                raise FencedOutError(workflow or key, holder.token, why)
        result = await client.txn(
            Txn(
                compares=(
                    Compare(holder.key, Target.CREATE, CompareOp.EQUAL, holder.token),
                    Compare(key, Target.MOD, CompareOp.EQUAL, mod),
                ),
                success=(Put(key, value),),
                failure=(Range(holder.key),),
            )
        )
        if result.succeeded:
            return result.revision
        held = result.results[0]
        assert isinstance(held, RangeResult)
        if not held.kvs or held.kvs[0].create_revision != holder.token:
            raise FencedOutError(workflow or key, holder.token, "the leadership ended")
        # The record changed between our read and write: look again.
