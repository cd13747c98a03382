# Convenience targets; the README's test command is `bash scripts/test.sh`.
.PHONY: test bench bench-mysql soak-mysql

test:
	bash scripts/test.sh

bench:
	python -m benchmarks.compare --out benchmarks/compare/results

bench-mysql:
	python benchmarks/mysql_failover.py --kills 10

soak-mysql:
	python benchmarks/mysql_soak.py --minutes 10
