# The two commands a newcomer needs: `make demo` and `make test`. Both set the machine up first.
.PHONY: setup demo test lint bench

setup:
	bash scripts/setup.sh

# `make demo` again starts the demo afresh: --reset deletes the previous demo's workspace (var/demo only).
demo: setup
	.venv/bin/carrierfeeds demo --reset

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check src tests dags benchmarks
	.venv/bin/mypy

bench: setup
	.venv/bin/python -m benchmarks.e2e --members 100000
