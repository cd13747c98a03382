"""A real BIND9 on a loopback port, accepting TSIG-signed dynamic updates (for tests,
examples and benchmarks)."""

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
import dns.rdatatype

from hacoord.adapters.dns import DnsSettings

NAMED = "/usr/sbin/named"


class Bind9UnavailableError(RuntimeError):
    """BIND9 (``named``) is not installed and cannot be installed here."""


def ensure_bind9_installed() -> None:
    """Install Debian's bind9 when missing and running as root; else raise."""
    if os.path.exists(NAMED):
        return
    if os.geteuid() != 0:
        raise Bind9UnavailableError(f"{NAMED} is missing (install Debian's bind9 as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "bind9", "bind9-utils"], check=True, env=env)
    if not os.path.exists(NAMED):
        raise Bind9UnavailableError(f"installing bind9 did not provide {NAMED}")


def _free_port() -> int:
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        port: int = tcp.getsockname()[1]
    return port


class Bind9TestServer:
    """``named`` serving ``zone`` on 127.0.0.1, updatable with the TSIG key ``tsig_name``."""

    host = "127.0.0.1"

    def __init__(
        self,
        base_dir: Path,
        zone: str = "db.test.",
        tsig_name: str = "hacoord-key",
        tsig_secret: str | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.zone = zone if zone.endswith(".") else zone + "."
        self.tsig_name = tsig_name
        self.tsig_secret = tsig_secret or base64.b64encode(secrets.token_bytes(32)).decode()
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """named's output."""
        return self.base_dir / "named.log"

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
        for stale in d.glob("zone.db.jnl"):
            stale.unlink()
        conf = d / "named.conf"
        conf.write_text(
            f"""options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
    notify no;
}};
controls {{ }};
key "{self.tsig_name}" {{ algorithm hmac-sha256; secret "{self.tsig_secret}"; }};
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
        """Start named and wait until it answers for the zone (20 s at most)."""
        ensure_bind9_installed()
        self.port = _free_port()
        conf = self._write_files()
        prefix = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [*prefix, NAMED, "-g", "-4", "-n", "1", "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        query = dns.message.make_query(self.zone, "SOA")
        while True:
            if self._proc.poll() is not None:
                raise Bind9UnavailableError(f"named exited: {self._tail()}")
            try:
                await dns.asyncquery.tcp(query, self.host, 0.5, self.port)
                return
            except (OSError, dns.exception.DNSException, EOFError):
                if time.monotonic() > deadline:
                    self.kill()
                    raise Bind9UnavailableError(f"named did not answer: {self._tail()}") from None
                await asyncio.sleep(0.05)

    def _tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-20:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL named."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    async def stop(self) -> None:
        """Stop named."""
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
        )

    async def resolve(self, name: str) -> list[str]:
        """A, AAAA and CNAME answers for ``name``, asked directly of this server."""
        qname = dns.name.from_text(name)
        out = []
        for rdtype in ("CNAME", "A", "AAAA"):
            response = await dns.asyncquery.tcp(
                dns.message.make_query(qname, rdtype), self.host, 2.0, self.port
            )
            wanted = dns.rdatatype.from_text(rdtype)
            out += [
                rd.to_text()
                for rrset in response.answer
                if rrset.name == qname and rrset.rdtype == wanted
                for rd in rrset
            ]
        return out

    async def ttl_of(self, name: str, rdtype: str) -> int | None:
        """The TTL the server gives ``name``'s ``rdtype`` records (``None``: none)."""
        qname = dns.name.from_text(name)
        response = await dns.asyncquery.tcp(
            dns.message.make_query(qname, rdtype), self.host, 2.0, self.port
        )
        for rrset in response.answer:
            if rrset.name == qname:
                return int(rrset.ttl)
        return None
