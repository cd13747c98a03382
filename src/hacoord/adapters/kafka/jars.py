"""Fetch the Apache Kafka broker's jars from Maven Central, once, into a cache.

No Kafka release tarball (``kafka_2.13-<version>.tgz`` from downloads.apache.org or a mirror)
is reachable from our CI machines, but Maven Central is, through ``mvn``, and the broker is
published there: ``org.apache.kafka:kafka_2.13`` holds ``kafka.Kafka`` (the server's main
class) and ``kafka.tools.StorageTool`` (``kafka-storage.sh format``), and pulls in the rest of
the broker (``kafka-server``, ``kafka-storage``, ``kafka-raft``, the coordinators,
``kafka-clients``, Scala, ``log4j-core``) as transitive dependencies. The one thing the
tarball adds that the POM does not is the binding that routes the broker's SLF4J 1.7 logging
to log4j2, ``log4j-slf4j-impl`` (without it nothing is logged at all); :func:`ensure_jars`
asks for it explicitly, at the version of ``log4j-core`` the broker depends on. ``kafka-tools``
(the admin command line tools) is not needed.

:func:`ensure_jars` writes a throwaway ``pom.xml`` next to the jars and runs ``mvn
dependency:copy-dependencies`` on it (Maven's own repository, ``~/.m2``, caches the downloads
as usual). The jars (45 files, 43 MB) land in ``~/.cache/hacoord/kafka-4.4.0/lib`` (or
``$HACOORD_KAFKA_CACHE/lib``); a marker file written after the copy says the directory is
complete, so an interrupted download is redone on the next call. With an empty ``~/.m2``
the download (56 MB into ``~/.m2``) took 7 s here; from a filled one 3 s.
``python -m hacoord.adapters.kafka.jars`` fetches them if missing and prints the directory.

Why Kafka 4.4.0, the newest 4.x Maven Central serves: its classes target Java 17 (class file
version 61; Kafka 4.x brokers need Java 17 or newer), and aiokafka 0.14.0 works against it in
KRaft mode although Kafka 4.0 dropped the protocol versions older than the 2.1 era (KIP-896):
checked were the admin client's ``create_topics``, ``describe_topics``, ``list_topics``,
``describe_cluster``, ``delete_topics``, ``create_partitions``, ``describe_configs``,
``delete_records`` and the consumer group calls; the producer's ``send_and_wait`` with
``acks="all"``, keys and headers (idempotent, transactional and not); and a consumer with a
``group_id`` (the classic rebalance protocol, which the broker still enables by default:
``group.coordinator.rebalance.protocols = classic,consumer,streams``), manual commits,
``seek``, ``seek_to_committed`` and a restarted consumer resuming from the committed offset.
No older version had to be tried.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = [
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "SCALA_VERSION",
    "KafkaJarsError",
    "cache_dir",
    "cached_jars",
    "ensure_jars",
    "find_java",
]

KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.25.5"
"""The ``log4j-core`` version ``kafka-server`` 4.4.0 depends on; the SLF4J binding must match."""
MIN_JAVA = 17

_MARKER = ".complete"
_MVN_TIMEOUT = 900.0
_TAIL_LINES = 30
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by hacoord.adapters.kafka.jars to fetch the Kafka broker's jars; not a build. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.hacoord</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


class KafkaJarsError(RuntimeError):
    """Java or Maven is missing, or fetching the Kafka jars failed (with ``mvn``'s output)."""


def cache_dir() -> Path:
    """The directory the jars are cached under (``$HACOORD_KAFKA_CACHE`` overrides it)."""
    override = os.environ.get("HACOORD_KAFKA_CACHE")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "hacoord" / f"kafka-{KAFKA_VERSION}"


def cached_jars(root: Path | None = None) -> Path | None:
    """The jar directory if a complete download is cached, else ``None``; never downloads."""
    lib = (root or cache_dir()) / "lib"
    if (lib / _MARKER).is_file():
        return lib
    return None


def find_java() -> str:
    """The ``java`` to run the broker with: ``$JAVA_HOME/bin/java``, else ``java`` on PATH.

    Raises :class:`KafkaJarsError` if there is none or it is older than Java 17.
    """
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and os.access(candidate, os.X_OK):
        java = str(candidate)
    else:
        found = shutil.which("java")
        if found is None:
            raise KafkaJarsError(
                f"no 'java' on PATH (or in $JAVA_HOME); Kafka {KAFKA_VERSION} needs Java "
                f"{MIN_JAVA} or newer (Debian: apt-get install openjdk-17-jre-headless)"
            )
        java = found
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KafkaJarsError(f"cannot run {java} -version: {e}") from e
    output = done.stderr + done.stdout
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if match is None:
        raise KafkaJarsError(f"cannot tell the version of {java}: {output.strip()[-300:]}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" is Java 8
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise KafkaJarsError(
            f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA} or newer"
        )
    return java


def ensure_jars(root: Path | None = None, *, verbose: bool = False) -> Path:
    """Fetch the Kafka jars into the cache unless complete there; return their directory.

    Also checks that a usable ``java`` exists (see :func:`find_java`). Raises
    :class:`KafkaJarsError` if it does not, if ``mvn`` is needed but missing, or if the
    download fails (the message ends with the tail of ``mvn``'s output).
    """
    find_java()
    base = root or cache_dir()
    lib = base / "lib"
    if (lib / _MARKER).is_file():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaJarsError(
            "Maven ('mvn') is not on PATH; it is needed once to fetch the jars of Kafka "
            f"{KAFKA_VERSION} from Maven Central into {lib} (Debian: apt-get install maven)"
        )
    base.mkdir(parents=True, exist_ok=True)
    pom = base / "pom.xml"
    pom.write_text(_POM.format(kafka=KAFKA_VERSION, scala=SCALA_VERSION, log4j=LOG4J_VERSION))
    partial = base / "lib.partial"
    for stale in (partial, lib):
        if stale.exists():
            shutil.rmtree(stale)
    command = [
        mvn,
        "--batch-mode",
        "--quiet",
        "-Dstyle.color=never",
        "--file",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    if verbose:
        print(f"[kafka {KAFKA_VERSION}] {' '.join(command)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(
            command,
            cwd=base,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_MVN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise KafkaJarsError(
            f"fetching the Kafka {KAFKA_VERSION} jars: {' '.join(command)} did not finish "
            f"within {_MVN_TIMEOUT:.0f}s:\n{_tail(_text(e.stdout) + _text(e.stderr))}"
        ) from e
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise KafkaJarsError(
            f"fetching the Kafka {KAFKA_VERSION} jars failed: {' '.join(command)} (in {base}) "
            f"exited with {done.returncode}:\n{_tail(output)}"
        )
    server_jar = partial / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar"
    if not server_jar.is_file():
        raise KafkaJarsError(
            f"mvn succeeded but {server_jar.name} is not in {partial}:\n{_tail(output)}"
        )
    partial.rename(lib)
    (lib / _MARKER).write_text(f"kafka {KAFKA_VERSION}\n")
    return lib


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


def _tail(output: str) -> str:
    lines = _ANSI_ESCAPE.sub("", output).rstrip().splitlines()
    return "\n".join(lines[-_TAIL_LINES:])


def main() -> int:
    """Fetch the jars if missing and print their directory."""
    try:
        lib = ensure_jars(verbose=True)
    except KafkaJarsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(lib)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
