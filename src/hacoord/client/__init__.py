"""The hacoord client: ``async with hacoord.client.connect([...]) as client``."""

from hacoord.client.client import Client, connect
from hacoord.client.election import Election, Leadership
from hacoord.client.errors import ClientError, LeaseLostError, OutcomeUnknownError, UnavailableError
from hacoord.client.leases import Lease

__all__ = [
    "Client",
    "ClientError",
    "Election",
    "Leadership",
    "Lease",
    "LeaseLostError",
    "OutcomeUnknownError",
    "UnavailableError",
    "connect",
]
