# The two commands a newcomer needs: `make demo` and `make test`. Both set the machine up first.
.PHONY: setup demo test lint bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/carrierfeeds demo

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check src tests dags benchmarks
	.venv/bin/mypy

bench: setup
	.venv/bin/python -m benchmarks.e2e --members 100000
