# Two entry points: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-repeat test-alone test-mutants coverage-orchestrations bench clean

install: $(STAMP) node_modules/.installed

# requirements-dev.txt includes the app's (requirements.txt) and the silo jobs' (requirements-silo.txt).
$(STAMP): requirements.txt requirements-silo.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --retries 2 -r requirements-dev.txt  # the CPU-torch index (for Azure builds) may be unreachable: fail over fast
	$(PY) -m pip install -q --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

demo: install
	$(VENV)/bin/fedfunc demo $(ARGS)

test: install
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

# The end-to-end tests N times in a row under a CPU hog (one core busy): before resolving an issue that
# touches the round. Prints each run's result and how many passed; fails unless all did.
test-repeat: install
	$(PY) tests/repeat.py --times $(or $(N),3)

# Every test file of the suite alone (its own pytest process), once, without load.
test-alone: install
	$(PY) tests/repeat.py --alone --times 1 --no-hog

# Break the product on purpose (deadline timer, size bounds, event de-duplication, SAS revocation) and check
# the tests written for each behaviour fail; each mutant is made in a copy of the tree.
test-mutants: install
	$(PY) tests/mutants.py

# Branch coverage of orchestrations/ by their unit tests (scripted Durable context, no stack); fails under 90%.
coverage-orchestrations: install
	COVERAGE_FILE=.fedfunc/coverage $(PY) -m coverage run --branch --source=orchestrations -m pytest -q -p no:cacheprovider tests/orchestrations
	COVERAGE_FILE=.fedfunc/coverage $(PY) -m coverage report --show-missing
	COVERAGE_FILE=.fedfunc/coverage $(PY) -m coverage json -q -o .fedfunc/coverage.json
	$(PY) -c "import json, sys; t = json.load(open('.fedfunc/coverage.json'))['totals']; \
	  share = 100 * t['covered_branches'] / t['num_branches']; \
	  print(f'branches of orchestrations/ covered: {t[\"covered_branches\"]}/{t[\"num_branches\"]} = {share:.1f}%'); \
	  sys.exit(share < 90)"

bench: install
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) node_modules .fedfunc
