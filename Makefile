# The two commands in the README. Both are idempotent and install what they need.
.PHONY: run test setup lint bench

run:
	@deploy/setup.sh run
	@.venv/bin/potluck init
	@.venv/bin/potluck chat $(RECIPE)

test:
	@deploy/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/pytest -q

lint:
	.venv/bin/ruff check .
