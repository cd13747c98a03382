"""A real BIND9 on a loopback port, accepting TSIG-signed dynamic updates (for tests,
examples and benchmarks).

Everything named writes (pid file, session key, managed keys, journal) stays under the
server's ``base_dir``; it runs in the foreground (``-g``) as the calling user (root in
CI: without ``-u`` named does not change user), with one worker thread, IPv4 only, and
a parent-death signal so it never outlives the Python process that started it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from hacoord.adapters.debian import apt_install
from hacoord.adapters.dns import DnsSettings

NAMED = "/usr/sbin/named"
START_TIMEOUT_S = 20.0


class Bind9UnavailableError(RuntimeError):
    """BIND9 (``named``) is missing and cannot be installed, or would not start."""


def ensure_bind9_installed() -> None:
    """Install Debian's ``bind9`` and ``bind9-utils`` when ``named`` is missing.

    Needs root and apt-get; otherwise, or when the installation fails, raises
    :class:`Bind9UnavailableError` naming why.
    """
    if os.path.exists(NAMED):
        return
    problem = apt_install(["bind9", "bind9-utils"])
    if problem is not None:
        raise Bind9UnavailableError(f"{NAMED} is missing; {problem}")
    if not os.path.exists(NAMED):
        raise Bind9UnavailableError(f"installed bind9 but {NAMED} is still missing")


class _PortTaken(Exception):
    """named could not bind its port."""


def _free_port(host: str) -> int:
    """A port free for both TCP and UDP on ``host`` (named listens on both)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            try:
                udp.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no port of {host} is free for both TCP and UDP")


class Bind9TestServer:
    """``named`` serving ``zone`` on 127.0.0.1:``port``, updatable with one TSIG key.

    The zone starts with only its SOA and NS records (``ns.<zone>`` -> 127.0.0.1); each
    :meth:`start` writes it afresh and drops any journal, so a restart begins empty.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        base_dir: Path,
        zone: str = "db.test.",
        tsig_name: str = "hacoord-key",
        tsig_secret: str | None = None,
        tsig_algorithm: str = "hmac-sha256",
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.zone = zone if zone.endswith(".") else zone + "."
        self.tsig_name = tsig_name
        self.tsig_secret = tsig_secret or base64.b64encode(secrets.token_bytes(32)).decode()
        self.tsig_algorithm = tsig_algorithm
        self.port = 0
        self.startup_s: float | None = None
        """How long the last :meth:`start` took until the zone answered."""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """named's output (``-g`` logs to stderr, which goes here)."""
        return self.base_dir / "named.log"

    @property
    def running(self) -> bool:
        """Whether the named process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _write_files(self) -> Path:
        d = self.base_dir
        d.mkdir(parents=True, exist_ok=True)
        zone_file = d / "zone.db"
        zone_file.write_text(
            f"$TTL 60\n"
            f"@ IN SOA ns.{self.zone} hostmaster.{self.zone} (1 60 60 600 60)\n"
            f"@ IN NS ns.{self.zone}\n"
            f"ns IN A 127.0.0.1\n"
        )
        (d / "zone.db.jnl").unlink(missing_ok=True)
        conf = d / "named.conf"
        conf.write_text(
            f"""options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {self.port} {{ {self.host}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
    notify no;
}};
controls {{ }};
key "{self.tsig_name}" {{ algorithm {self.tsig_algorithm}; secret "{self.tsig_secret}"; }};
zone "{self.zone}" {{
    type primary;
    file "{zone_file}";
    journal "{d}/zone.db.jnl";
    allow-update {{ key "{self.tsig_name}"; }};
}};
"""
        )
        return conf

    async def start(self) -> None:
        """Start named and wait until it answers the zone's SOA over TCP.

        Raises :class:`Bind9UnavailableError` with the tail of named's output when it
        exits or does not answer within 20 s. Call it from the event loop's thread: the
        parent-death signal fires when the *thread* that started named ends.
        """
        if self.running:
            raise RuntimeError(f"named is already running on {self.host}:{self.port}")
        ensure_bind9_installed()
        began = time.monotonic()
        for attempt in range(1, 4):
            self.port = _free_port(self.host)
            conf = self._write_files()
            # setpriv (util-linux) sets PR_SET_PDEATHSIG, then execs named: same pid.
            prefix = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
            with self.log_path.open("wb") as log:
                self._proc = subprocess.Popen(
                    [*prefix, NAMED, "-g", "-4", "-n", "1", "-p", str(self.port), "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                await self._wait_ready(time.monotonic() + START_TIMEOUT_S)
            except _PortTaken:
                # Someone took the port between our probe and named's bind (named logs
                # it and goes on running, deaf): try another port.
                self.kill()
                if attempt == 3:
                    raise Bind9UnavailableError(
                        f"named found {self.host}:{self.port} in use, three times:\n" + self._tail()
                    ) from None
                continue
            except BaseException:
                self.kill()
                raise
            self.startup_s = time.monotonic() - began
            return

    async def _wait_ready(self, deadline: float) -> None:
        query = dns.message.make_query(self.zone, dns.rdatatype.SOA)
        last = "no answer yet"
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise Bind9UnavailableError(
                    f"named exited with code {self._proc.returncode}:\n{self._tail()}"
                )
            try:
                response = await dns.asyncquery.tcp(query, self.host, 0.5, self.port)
            except (OSError, EOFError, dns.exception.DNSException) as e:
                last = f"{type(e).__name__}: {e}"
                if "address in use" in self._tail():
                    raise _PortTaken from None
            else:
                if response.rcode() == dns.rcode.NOERROR and response.answer:
                    return
                last = f"SOA query answered {dns.rcode.to_text(response.rcode())}"
            if time.monotonic() > deadline:
                raise Bind9UnavailableError(
                    f"named on {self.host}:{self.port} did not serve {self.zone} within"
                    f" {START_TIMEOUT_S:g} s ({last}):\n{self._tail()}"
                )
            await asyncio.sleep(0.02)

    def _tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output from named)"

    def kill(self) -> None:
        """SIGKILL named and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    async def stop(self) -> None:
        """Stop named (SIGTERM, then SIGKILL after 10 s)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._proc.wait, 10)
        self.kill()

    async def __aenter__(self) -> Bind9TestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def settings(self, record: str = "primary", ttl: int = 5) -> DnsSettings:
        """Settings that publish ``record`` in this server's zone with its key."""
        return DnsSettings(
            server=self.host,
            port=self.port,
            zone=self.zone,
            record=record,
            ttl=ttl,
            tsig_name=self.tsig_name,
            tsig_secret=self.tsig_secret,
            tsig_algorithm=self.tsig_algorithm,
        )

    async def _answers(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        qname = dns.name.from_text(name)
        return await dns.asyncquery.tcp(
            dns.message.make_query(qname, rdtype), self.host, 2.0, self.port
        )

    async def resolve(self, name: str) -> list[str]:
        """CNAME, A and AAAA answers for ``name`` (absolute), asked of this server."""
        qname = dns.name.from_text(name)
        out: list[str] = []
        for rdtype in (dns.rdatatype.CNAME, dns.rdatatype.A, dns.rdatatype.AAAA):
            response = await self._answers(name, rdtype)
            out += [
                rd.to_text()
                for rrset in response.answer
                if rrset.name == qname and rrset.rdtype == rdtype
                for rd in rrset
            ]
        return out

    async def ttl_of(self, name: str, rdtype: str) -> int | None:
        """The TTL the server gives ``name``'s ``rdtype`` records (``None``: none)."""
        wanted = dns.rdatatype.from_text(rdtype)
        qname = dns.name.from_text(name)
        response = await self._answers(name, wanted)
        for rrset in response.answer:
            if rrset.name == qname and rrset.rdtype == wanted:
                return int(rrset.ttl)
        return None

    async def txt(self, name: str) -> list[str]:
        """The TXT strings of ``name`` (absolute), asked of this server."""
        qname = dns.name.from_text(name)
        response = await self._answers(name, dns.rdatatype.TXT)
        return [
            b"".join(rd.strings).decode()
            for rrset in response.answer
            if rrset.name == qname and rrset.rdtype == dns.rdatatype.TXT
            for rd in rrset
        ]
