# The two commands in the README. Both are idempotent and install what they need.
.PHONY: run chat test lint

run:
	@deploy/setup.sh run
	@.venv/bin/potluck init
	@.venv/bin/potluck serve

chat:  # the same rooms in the terminal instead of the browser
	@deploy/setup.sh run
	@.venv/bin/potluck init
	@.venv/bin/potluck chat $(RECIPE)

test:
	@deploy/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/pytest -q

lint:
	.venv/bin/ruff check .
