# The two commands a fresh machine needs are `make quickstart` and `make test` (see README.md).
.PHONY: setup quickstart test test-fast test-slow bench

setup:
	./scripts/setup.sh

# the main job on the embedded default: synthesise data, train both stages on SmolLM2, evaluate, report
quickstart: setup
	HF_HUB_OFFLINE=1 .venv/bin/enel quickstart

# the default suite (under 15 minutes on 2 cores), then the slow end-to-end tests
test: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -m slow

test-fast: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q

test-slow: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -m slow
