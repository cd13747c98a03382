"""Publishing a primary's name in DNS (RFC 2136 dynamic update), fenced by a token.

Next to the record (A, AAAA or CNAME) lives a TXT record ``_hacoord-token.<record>``
holding the fencing token of the last publisher. :meth:`DnsPublisher.publish` reads
it, refuses to go backwards, and sends **one** UPDATE whose prerequisite is "the TXT
still holds what I read" (or "there is no TXT yet"): a compare-and-set, so a late
update from an old orchestrator can never overwrite a newer one, even in a race.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsigkeyring
import dns.update

TOKEN_PREFIX = "_hacoord-token"
_ADDRESS_TYPES = ("A", "AAAA", "CNAME")


class DnsError(Exception):
    """A DNS query or update failed; the message names the server, zone and reason."""


class StaleTokenError(DnsError):
    """The record was published with a newer token than this publisher's."""

    def __init__(self, name: str, token: int, current: int) -> None:
        super().__init__(
            f"{name}: published with token {current}; refusing to overwrite it with older"
            f" token {token}"
        )
        self.token = token
        self.current = current


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """Where and how to publish: server, zone, record name, TTL and TSIG key."""

    server: str
    zone: str
    record: str
    port: int = 53
    ttl: int = 5
    tsig_name: str | None = None
    tsig_secret: str | None = field(default=None, repr=False)
    tsig_algorithm: str = "hmac-sha256"
    timeout_s: float = 3.0

    def __post_init__(self) -> None:
        if not self.record or self.record.endswith("."):
            raise ValueError(f"dns record {self.record!r} must be a name inside the zone")
        if not self.zone:
            raise ValueError("dns zone must be set (e.g. 'db.example.')")
        if not 0 <= self.ttl <= 86400:
            raise ValueError(f"dns ttl must be 0..86400 seconds, got {self.ttl}")
        if not 0 < self.port < 65536:
            raise ValueError(f"dns port must be 1..65535, got {self.port}")
        if (self.tsig_name is None) != (self.tsig_secret is None):
            raise ValueError("dns tsig_name and tsig secret must be given together")
        if self.timeout_s <= 0:
            raise ValueError("dns timeout_s must be > 0")

    @property
    def origin(self) -> dns.name.Name:
        """The zone as an absolute name."""
        return dns.name.from_text(self.zone if self.zone.endswith(".") else self.zone + ".")

    @property
    def fqdn(self) -> str:
        """The record's absolute name."""
        return dns.name.from_text(self.record, self.origin).to_text()


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What the record pointed at before and after a publish."""

    address: str
    token: int
    previous_address: str | None
    previous_token: int | None


def _record_type(address: str) -> str:
    try:
        return "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
    except ValueError:
        return "CNAME"


class DnsPublisher:
    """Publishes one record of :class:`DnsSettings`, fenced by a token."""

    def __init__(self, settings: DnsSettings, max_attempts: int = 5) -> None:
        self.settings = settings
        self.max_attempts = max_attempts
        self._name = dns.name.from_text(settings.record, settings.origin)
        self._token_name = dns.name.from_text(TOKEN_PREFIX, self._name)
        self._keyring = (
            dns.tsigkeyring.from_text({settings.tsig_name: settings.tsig_secret})
            if settings.tsig_name and settings.tsig_secret
            else None
        )

    @property
    def _where(self) -> str:
        return f"{self.settings.server}:{self.settings.port}"

    async def _ask(self, message: dns.message.Message) -> dns.message.Message:
        try:
            return await dns.asyncquery.tcp(
                message, self.settings.server, self.settings.timeout_s, self.settings.port
            )
        except dns.exception.Timeout:
            raise DnsError(
                f"DNS server {self._where} did not answer within {self.settings.timeout_s} s"
            ) from None
        except (OSError, EOFError) as e:
            raise DnsError(f"DNS server {self._where}: {e}") from None
        except dns.exception.DNSException as e:
            raise DnsError(f"DNS server {self._where}: {type(e).__name__}: {e}") from None

    async def _lookup(self, name: dns.name.Name, rdtype: str) -> list[str]:
        response = await self._ask(dns.message.make_query(name, rdtype))
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            answer = dns.rcode.to_text(response.rcode())
            raise DnsError(f"DNS server {self._where}: {rdtype} {name} -> {answer}")
        wanted = dns.rdatatype.from_text(rdtype)
        return [
            rd.to_text()
            for rrset in response.answer
            if rrset.name == name and rrset.rdtype == wanted
            for rd in rrset
        ]

    async def current(self) -> tuple[str | None, int | None]:
        """What the server answers now: (address or CNAME target, token)."""
        address = None
        for rdtype in _ADDRESS_TYPES:
            found = await self._lookup(self._name, rdtype)
            if found:
                address = found[0]
                break
        texts = await self._lookup(self._token_name, "TXT")
        token = None
        if texts:
            try:
                token = int(texts[0].strip('"'))
            except ValueError:
                raise DnsError(f"{self._token_name}: not a token: {texts[0]}") from None
        return address, token

    async def publish(self, address: str, token: int) -> PublishResult:
        """Point the record at ``address`` (IP or name) unless a newer token is there."""
        if token < 1:
            raise ValueError(f"fencing tokens are >= 1, got {token}")
        rdtype = _record_type(address)
        target = address if rdtype != "CNAME" or address.endswith(".") else address + "."
        for _ in range(self.max_attempts):
            previous, current = await self.current()
            if current is not None and current > token:
                raise StaleTokenError(self.settings.fqdn, token, current)
            update = dns.update.UpdateMessage(
                self.settings.origin,
                keyring=self._keyring,
                keyname=dns.name.from_text(self.settings.tsig_name)
                if self.settings.tsig_name
                else None,
                keyalgorithm=self.settings.tsig_algorithm,
            )
            if current is None:
                update.absent(self._token_name, "TXT")
            else:
                update.present(self._token_name, "TXT", f'"{current}"')
            for old_type in _ADDRESS_TYPES:
                update.delete(self._name, old_type)
            update.add(self._name, self.settings.ttl, rdtype, target)
            update.replace(self._token_name, self.settings.ttl, "TXT", f'"{token}"')
            response = await self._ask(update)
            rcode = response.rcode()
            if rcode == dns.rcode.NOERROR:
                return PublishResult(target, token, previous, current)
            if rcode not in (dns.rcode.NXRRSET, dns.rcode.YXRRSET):
                raise DnsError(
                    f"DNS server {self._where} refused the update of {self.settings.fqdn}"
                    f" in zone {self.settings.zone}: {dns.rcode.to_text(rcode)}"
                )
            # Someone published between our read and our update: read again.
        raise DnsError(f"{self.settings.fqdn}: changed under every one of our updates")
