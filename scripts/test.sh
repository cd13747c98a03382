#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it:
# lint, strict typing, the pytest suite and the CI seed counts of the simulators.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# The TLS tests make certificates with the openssl CLI; the comparison benchmark's
# quick run needs etcd (Debian's etcd-server); the MySQL adapter's tests run real
# MariaDB servers (Debian's mariadb-server) and a real BIND9 (Debian's bind9).
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v etcd >/dev/null || missing+=(etcd-server)
[ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null || missing+=(mariadb-server)
[ -x /usr/sbin/named ] || missing+=(bind9 bind9-utils)
# The Kafka adapter's tests run real Kafka brokers (Java 17; jars fetched with Maven).
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
if ((${#missing[@]})); then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

# The Kubernetes adapter's tests run real kube-apiservers and etcd 3.7, built once from the
# Go module proxy into ~/.cache/hacoord/k8s-v1.37.2 (about 5-10 minutes the first time).
echo "== kube-apiserver and etcd (built once)"
python3 -m hacoord.adapters.k8s.binaries
# The Kafka adapter's tests run Kafka 4.4.0 in KRaft mode from jars fetched once from Maven
# Central into ~/.cache/hacoord/kafka-4.4.0 (about 45 MB).
echo "== Kafka jars (fetched once)"
python3 -m hacoord.adapters.kafka.jars

echo "== ruff"
python3 -m ruff check src tests benchmarks examples
python3 -m ruff format --check src tests benchmarks examples
echo "== mypy --strict src"
python3 -m mypy
echo "== simulator: ${SIM_SEEDS:=300} seeds, 3 and 5 nodes, faults on"
python3 -m hacoord.sim --seeds "$SIM_SEEDS" --nodes 3 --jobs 2
python3 -m hacoord.sim --seeds "$((SIM_SEEDS / 3))" --start 100000 --nodes 5 --jobs 2
echo "== coordination simulator: ${COORD_SEEDS:=1000} seeds, 3 and 5 nodes, faults on"
python3 -m hacoord.sim.coord --seeds "$COORD_SEEDS" --nodes 3 --jobs 2
python3 -m hacoord.sim.coord --seeds "$((COORD_SEEDS / 4))" --start 100000 --nodes 5 --jobs 2
echo "== pytest"
python3 -m pytest -q -p no:cacheprovider "$@"
