# The two commands of the README: `make up` (set up, then run the stack with a demo fleet) and `make test`.
.PHONY: up test setup lint

setup:
	bash scripts/setup.sh

up: setup
	.venv/bin/novacron up

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

test: setup
	bash scripts/test.sh
