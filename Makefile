# Two commands: `make demo` and `make test`.  Both create or reuse .venv and
# install what is missing (Python packages pinned by constraints.txt, and
# WordNet 3.0 for the class-derivation tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: all install wordnet test test-heavy demo detect-demo bench-gpu clean

all: test

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# WordNet 3.0 is only needed to re-derive class lists (and by the tests that
# do).  scripts/ensure_wordnet.sh finds it or installs Debian's packages.
wordnet: $(STAMP)
	@VENV=$(VENV) bash scripts/ensure_wordnet.sh

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
RUN_PYTEST = rc=0; $(PY) -m pytest -q $(1) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: $(STAMP) wordnet
	@bash scripts/ensure_chromium.sh
	@$(call RUN_PYTEST,)

test-heavy: $(STAMP) wordnet
	@$(call RUN_PYTEST,-m heavy)

demo: $(STAMP)
	$(PY) scripts/demo.py --out $(DEMO_OUT)

# Detection (paper sec. 6) on CPU: the demo's backbones (run first when missing) in a tiny Faster R-CNN on a
# synthetic VOC tree (scripts/detect_demo.py).
detect-demo: $(STAMP)
	$(PY) scripts/detect_demo.py --out $(DEMO_OUT)

# Every GPU measurement of the README in one folder (needs a CUDA GPU; see scripts/bench_gpu.sh).
BENCH_OUT ?= bench_gpu_out
bench-gpu: $(STAMP)
	PYTHON=$(PY) bash scripts/bench_gpu.sh "$(BENCH_OUT)"

clean:
	rm -rf $(DEMO_OUT) build dist *.egg-info .pytest_cache
