"""A cluster with mutual TLS on peer and client (HTTP) traffic."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest

from certs import OPENSSL_MISSING, make_certs
from hacoord.raft.timing import Timing
from hacoord.server.config_file import TlsFiles
from hacoord.server.local_cluster import LocalCluster


@pytest.mark.skipif(OPENSSL_MISSING, reason="needs the openssl CLI")
async def test_tls_cluster_serves_only_clients_with_certificates(tmp_path: Path) -> None:
    certs = make_certs(tmp_path, names=("member", "client"))
    ca, cert, key = certs["member"]
    tls = TlsFiles(Path(ca), Path(cert), Path(key))
    c = LocalCluster(tmp_path / "cluster", n=3, timing=Timing(30, 300), tls=tls)
    c.start()
    try:
        leader = await c.wait_for_leader()
        res = await c.put("secret", "value")
        assert res.index > 0
        assert await c.get(leader, "secret") == "value"
        host, port = c.members[leader].http
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(f"http://{host}:{port}/status") as resp:
                    await resp.read()
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(f"https://{host}:{port}/status", ssl=False) as resp:
                    await resp.read()  # TLS without a client certificate is refused
        client_ca, client_cert, client_key = certs["client"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hacoord", "get", "secret",
            "--endpoints", f"{host}:{port}",
            "--cacert", client_ca, "--cert", client_cert, "--key", client_key,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert '"value": "value"' in out.decode()
    finally:
        await c.close()
