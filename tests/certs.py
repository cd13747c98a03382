"""Test certificates made with the openssl CLI: a CA and one certificate per name."""

import os
import shutil
import subprocess
from pathlib import Path

OPENSSL_MISSING = shutil.which("openssl") is None and not os.environ.get("CI")
"""Tests needing openssl may skip on a laptop without it, never in CI."""


def make_certs(
    d: Path, names: tuple[str, ...] = ("node1", "node2")
) -> dict[str, tuple[str, str, str]]:
    """A CA and one certificate per name: {name: (ca, cert, key)}."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (d / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n"
    )
    (d / "leaf.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n"
        "authorityKeyIdentifier=keyid\n"
    )
    openssl("req", "-new", *ec, "-keyout", "ca.key", "-out", "ca.csr", "-subj", "/CN=test CA")
    openssl(
        "x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-out", "ca.crt",
        "-days", "2", "-extfile", "ca.ext",
    )  # fmt: skip
    out = {}
    for name in names:
        openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", "leaf.ext",
        )  # fmt: skip
        out[name] = (str(d / "ca.crt"), str(d / f"{name}.crt"), str(d / f"{name}.key"))
    return out
