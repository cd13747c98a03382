"""Publishing a primary's name in DNS (RFC 2136 dynamic update), fenced by a token.

Next to the record (A, AAAA or CNAME) lives a TXT record ``_hacoord-token.<record>``
holding the fencing token of the last publisher. :meth:`DnsPublisher.publish` reads
it (over TCP, from the configured server itself, not through a resolver), refuses to
go backwards, and sends **one** UPDATE message whose prerequisite section is "the TXT
RRset is exactly what I read" (or "there is no such TXT RRset yet") and whose update
section replaces the address record and the token together. The server applies all of
it or nothing: a compare-and-set, so an old orchestrator's late update can never
overwrite a newer one, even when both race. A failed prerequisite (NXRRSET/YXRRSET)
means someone published between our read and our update: read again and decide again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.tsig
import dns.update

log = logging.getLogger(__name__)

TOKEN_PREFIX = "_hacoord-token"
"""The token TXT of ``<record>`` lives at ``_hacoord-token.<record>``."""

DEFAULT_MAX_ATTEMPTS = 5
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME)
_CAS_FAILED = (dns.rcode.NXRRSET, dns.rcode.YXRRSET)
# TSIG errors come back as rcode NOTAUTH with the TSIG error in the TSIG record
# (RFC 8945 section 5.3.2); dnspython raises these before the rcode can be seen.
_TSIG_ERRORS: dict[type[dns.tsig.PeerError], str] = {
    dns.tsig.PeerBadKey: "BADKEY (the server does not know this key name/algorithm)",
    dns.tsig.PeerBadSignature: "BADSIG (wrong TSIG secret)",
    dns.tsig.PeerBadTime: "BADTIME (clocks differ by more than the fudge)",
    dns.tsig.PeerBadTruncation: "BADTRUNC",
}
_TSIG_ALGORITHMS = frozenset(
    alg for alg in dns.tsig.mac_sizes if alg != dns.name.from_text("gss-tsig")
)


class DnsError(Exception):
    """A DNS query or update failed; the message names the server, zone and reason."""


class StaleTokenError(DnsError):
    """The record was published with a newer token than this publisher's."""

    def __init__(self, name: str, token: int, current: int) -> None:
        super().__init__(
            f"{name}: published with token {current}; refusing to overwrite it with older"
            f" token {token}"
        )
        self.name = name
        self.token = token
        self.current = current


def _absolute(text: str, what: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text if text.endswith(".") else text + ".")
    except dns.exception.DNSException as e:
        raise ValueError(f"dns {what} {text!r} is not a valid DNS name: {e}") from None


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """Where and how to publish: server, zone, record name, TTL and TSIG key.

    ``zone`` is made absolute (a trailing dot is added). ``record`` is a name inside the
    zone (``"primary"`` -> ``primary.<zone>``); an absolute name below the zone is
    accepted too and stored relative. ``tsig_secret`` is the base64 secret as in
    ``named.conf``; it never appears in ``repr`` or in error messages.
    """

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
        try:
            ipaddress.ip_address(self.server)
        except ValueError:
            raise ValueError(
                f"dns server must be an IP address (the zone's primary server), got {self.server!r}"
            ) from None
        if not 0 < self.port < 65536:
            raise ValueError(f"dns port must be 1..65535, got {self.port}")
        if not self.zone or self.zone == ".":
            raise ValueError("dns zone must be set (e.g. 'db.example.')")
        origin = _absolute(self.zone, "zone")
        object.__setattr__(self, "zone", origin.to_text())
        if not self.record or not self.record.strip(".") or self.record == "@":
            raise ValueError(
                f"dns record {self.record!r} must be a non-empty name inside the zone"
                " (e.g. 'primary')"
            )
        if self.record.endswith("."):
            absolute = _absolute(self.record, "record")
            if not absolute.is_subdomain(origin) or absolute == origin:
                raise ValueError(f"dns record {self.record!r} is not inside zone {self.zone}")
            object.__setattr__(self, "record", absolute.relativize(origin).to_text())
        else:
            _absolute(f"{self.record}.{self.zone}", "record")
        if not 0 <= self.ttl <= 86400:
            raise ValueError(f"dns ttl must be 0..86400 seconds, got {self.ttl}")
        if (self.tsig_name is None) != (self.tsig_secret is None):
            raise ValueError(
                "dns tsig_name and tsig_secret must be given together (or neither, for an"
                " unsigned update)"
            )
        if self.tsig_name is not None:
            _absolute(self.tsig_name, "tsig_name")
            try:
                base64.b64decode(self.tsig_secret or "", validate=True)
            except (binascii.Error, ValueError):
                # Never echo the secret itself.
                raise ValueError(
                    f"dns tsig_secret of key {self.tsig_name!r} is not base64"
                ) from None
            if _absolute(self.tsig_algorithm, "tsig_algorithm") not in _TSIG_ALGORITHMS:
                known = ", ".join(sorted(a.to_text(True).lower() for a in _TSIG_ALGORITHMS))
                raise ValueError(
                    f"dns tsig_algorithm {self.tsig_algorithm!r} is not one of: {known}"
                )
        if not self.timeout_s > 0:
            raise ValueError(f"dns timeout_s must be > 0, got {self.timeout_s}")

    @property
    def origin(self) -> dns.name.Name:
        """The zone as an absolute name."""
        return dns.name.from_text(self.zone)

    @property
    def name(self) -> dns.name.Name:
        """The record as an absolute name."""
        return dns.name.from_text(self.record, self.origin)

    @property
    def fqdn(self) -> str:
        """The record's absolute name as text (``primary.db.example.``)."""
        return self.name.to_text()

    @property
    def token_name(self) -> dns.name.Name:
        """The absolute name of the token TXT record."""
        return dns.name.from_text(TOKEN_PREFIX, self.name)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What the record pointed at before and after a publish.

    ``address`` is as the server will answer it (an IP address in canonical form, or
    an absolute CNAME target). ``attempts`` counts UPDATE messages sent: more than one
    means another publisher changed the record between a read and an update.
    """

    address: str
    token: int
    previous_address: str | None
    previous_token: int | None
    attempts: int = 1


def _target(address: str) -> tuple[dns.rdatatype.RdataType, str]:
    """The record type and canonical text for ``address`` (IPv4, IPv6 or a name)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        pass
    else:
        return (dns.rdatatype.A if ip.version == 4 else dns.rdatatype.AAAA), str(ip)
    if not address or not address.strip(".") or any(c.isspace() for c in address):
        raise ValueError(f"not an IP address or a host name: {address!r}")
    return dns.rdatatype.CNAME, _absolute(address, "CNAME target").to_text()


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One read of the record: its address and the token TXT RRset, as answered."""

    address: str | None
    token: int | None
    token_rdatas: tuple[dns.rdata.Rdata, ...]


class DnsPublisher:
    """Publishes the record of :class:`DnsSettings`, fenced by a token.

    Each call opens fresh TCP connections to the server; a publisher holds no
    connection and may be shared by tasks.
    """

    def __init__(self, settings: DnsSettings, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.settings = settings
        self.max_attempts = max_attempts
        self._name = settings.name
        self._token_name = settings.token_name
        self._key = (
            dns.tsig.Key(settings.tsig_name, settings.tsig_secret, settings.tsig_algorithm)
            if settings.tsig_name is not None and settings.tsig_secret is not None
            else None
        )

    def __repr__(self) -> str:
        return f"DnsPublisher({self.settings!r})"

    @property
    def _where(self) -> str:
        return f"{self.settings.server}:{self.settings.port}"

    async def _ask(self, message: dns.message.Message) -> dns.message.Message:
        """Send ``message`` over TCP to the server; every failure becomes a DnsError."""
        s = self.settings
        try:
            return await dns.asyncquery.tcp(message, s.server, s.timeout_s, s.port)
        except dns.exception.Timeout:
            raise DnsError(
                f"DNS server {self._where} did not answer within {s.timeout_s} s"
            ) from None
        except dns.tsig.PeerError as e:
            reason = _TSIG_ERRORS.get(type(e), type(e).__name__)
            raise DnsError(
                f"DNS server {self._where} answered NOTAUTH for zone {s.zone}: TSIG key"
                f" {s.tsig_name!r} rejected, {reason}"
            ) from None
        except OSError as e:
            raise DnsError(f"DNS server {self._where}: {e.strerror or e}") from None
        except EOFError:
            raise DnsError(f"DNS server {self._where} closed the connection") from None
        except dns.exception.DNSException as e:
            raise DnsError(f"DNS server {self._where}: {type(e).__name__}: {e}") from None

    async def _lookup(
        self, rdtype: dns.rdatatype.RdataType, name: dns.name.Name
    ) -> list[dns.rdata.Rdata]:
        response = await self._ask(dns.message.make_query(name, rdtype))
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise DnsError(
                f"DNS server {self._where} answered {dns.rcode.to_text(rcode)} to"
                f" {dns.rdatatype.to_text(rdtype)} {name} (is it authoritative for zone"
                f" {self.settings.zone}?)"
            )
        return [
            rd
            for rrset in response.answer
            if rrset.name == name and rrset.rdtype == rdtype
            for rd in rrset
        ]

    def _parse_token(self, rdatas: Sequence[dns.rdata.Rdata]) -> int | None:
        tokens = []
        for rd in rdatas:
            text = b"".join(getattr(rd, "strings", ())).decode("ascii", "replace")
            if not text.isdigit():
                raise DnsError(
                    f"{self._token_name} holds {rd.to_text()}, not a fencing token: fix or"
                    " delete it by hand"
                )
            tokens.append(int(text))
        # Several values (a hand edit): the highest counts; the compare-and-set still
        # names all of them, and our update replaces them with one.
        return max(tokens, default=None)

    async def _read(self) -> _Snapshot:
        a, aaaa, cname, txt = await asyncio.gather(
            *(self._lookup(t, self._name) for t in _ADDRESS_TYPES),
            self._lookup(dns.rdatatype.TXT, self._token_name),
        )
        found = a or aaaa or cname
        address = found[0].to_text() if found else None
        return _Snapshot(address, self._parse_token(txt), tuple(txt))

    async def current(self) -> tuple[str | None, int | None]:
        """What the server answers now: (IP address or CNAME target, token).

        Either is ``None`` when the server has no such record.
        """
        snap = await self._read()
        return snap.address, snap.token

    def _update(
        self, seen: _Snapshot, rdtype: dns.rdatatype.RdataType, target: str, token: int
    ) -> dns.update.UpdateMessage:
        s = self.settings
        update = dns.update.UpdateMessage(s.origin, keyring=self._key)
        # Prerequisite: the token TXT RRset is exactly what we read (value-dependent:
        # the server compares the whole RRset), or does not exist.
        if seen.token_rdatas:
            update.present(self._token_name, *seen.token_rdatas)
        else:
            update.absent(self._token_name, dns.rdatatype.TXT)
        # Update, applied in order: the deletes come first so that adding an A to a
        # name that was a CNAME (or the reverse) is not dropped by the CNAME rule.
        for old in _ADDRESS_TYPES:
            update.delete(self._name, old)
        update.add(self._name, s.ttl, rdtype, target)
        update.replace(self._token_name, s.ttl, dns.rdatatype.TXT, f'"{token}"')
        return update

    async def publish(self, address: str, token: int) -> PublishResult:
        """Point the record at ``address`` (IPv4 -> A, IPv6 -> AAAA, else CNAME).

        Raises :class:`StaleTokenError` (and changes nothing) when the record carries a
        higher token than ``token``; an equal token re-publishes. Raises
        :class:`DnsError` when the server refuses (REFUSED, NOTAUTH: zone not updatable,
        wrong key), does not answer in time, or the record keeps changing under us for
        ``max_attempts`` updates.
        """
        if token < 1:
            raise ValueError(f"fencing tokens are >= 1, got {token}")
        rdtype, target = _target(address)
        s = self.settings
        for attempt in range(1, self.max_attempts + 1):
            seen = await self._read()
            if seen.token is not None and seen.token > token:
                log.warning(
                    "%s: not publishing %s: token %d is older than the published %d",
                    s.fqdn,
                    target,
                    token,
                    seen.token,
                )
                raise StaleTokenError(s.fqdn, token, seen.token)
            response = await self._ask(self._update(seen, rdtype, target, token))
            rcode = response.rcode()
            if rcode == dns.rcode.NOERROR:
                log.info(
                    "%s: published %s %s with token %d (was %s, token %s)",
                    s.fqdn,
                    dns.rdatatype.to_text(rdtype),
                    target,
                    token,
                    seen.address,
                    seen.token,
                )
                return PublishResult(target, token, seen.address, seen.token, attempt)
            if rcode not in _CAS_FAILED:
                raise DnsError(
                    f"DNS server {self._where} answered {dns.rcode.to_text(rcode)} to the"
                    f" update of {s.fqdn} in zone {s.zone}"
                    + (
                        " (does the zone allow updates with this key?)"
                        if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH)
                        else ""
                    )
                )
            log.info(
                "%s: token changed since it was read (%s), reading again",
                s.fqdn,
                dns.rcode.to_text(rcode),
            )
        raise DnsError(
            f"{s.fqdn}: the token record changed under each of our {self.max_attempts} updates"
        )
