"""Errors a client call can raise (besides the refusals of :mod:`hacoord.coord.errors`)."""

from __future__ import annotations


class ClientError(Exception):
    """Base class of the client's own errors."""


class UnavailableError(ClientError):
    """No member could serve the call before its deadline; the message says what was tried."""


class OutcomeUnknownError(ClientError):
    """A write may or may not have been applied (only without exactly-once sessions)."""


class LeaseLostError(ClientError):
    """The lease behind a campaign, lock or leadership is gone."""
