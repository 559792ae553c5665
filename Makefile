# The two commands the README promises: `make demo` and `make test`, on a fresh clone.
# CPU PyTorch comes first from its pinned wheel, so that no dependency pulls a CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.voxmeter-installed

.PHONY: demo test test-fast lint clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ray]'
	touch $(STAMP)

# The machine's matmul peak (measured once, cached), one measured configuration, then the
# explore loop: a 12-spec sweep over xT, xV and precision (resumes if interrupted; finished
# specs are skipped), the recommendation and the HTML report.
demo: $(STAMP)
	$(VENV)/bin/voxmeter peak
	$(VENV)/bin/voxmeter bench --model tiny.en --engine hf --data default --repeats 3 --threads 2
	$(VENV)/bin/voxmeter sweep examples/demo_sweep.toml
	$(VENV)/bin/voxmeter recommend --sweep examples/demo_sweep.toml
	$(VENV)/bin/voxmeter report --sweep examples/demo_sweep.toml -o report.html

test: $(STAMP)
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean-venv:
	rm -rf $(VENV)
