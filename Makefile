# bayesmtl: `make demo` and `make test` work on a fresh clone with nothing installed.
SHELL := /bin/bash
VENV := .venv
VPY := $(VENV)/bin/python

# A Python >= 3.12: a working one on PATH first, else pyenv's installed versions.
define find_python
for c in python3.13 python3.12 python3 python; do \
  p=$$(command -v $$c 2>/dev/null) || continue; \
  $$p -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1 && { echo $$p; exit 0; }; \
done; \
if command -v pyenv >/dev/null 2>&1; then \
  for p in $$(ls -d "$$(pyenv root)"/versions/3.12*/bin/python3 "$$(pyenv root)"/versions/3.1[3-9]*/bin/python3 2>/dev/null); do \
    $$p -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1 && { echo $$p; exit 0; }; \
  done; \
fi; exit 1
endef

.PHONY: demo test venv clean bench lint

$(VENV)/.installed: pyproject.toml
	@if [ ! -x $(VPY) ]; then \
	  PY=$$($(find_python)) || { echo "error: bayesmtl needs Python >= 3.12; none found on PATH or through pyenv." >&2; \
	    echo "       Install one (e.g. 'pyenv install 3.12') and run make again." >&2; exit 1; }; \
	  echo "Creating $(VENV) with $$PY"; \
	  $$PY -m venv $(VENV); \
	fi
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev,datasets]'
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(VPY) -m bayesmtl demo --out results/demo --force

# Two worker processes (one per core), each module's tests kept together so that their shared
# fixtures and compiled kernels are built once. Separate processes also keep any one process from
# accumulating thousands of XLA executables.
test: venv
	@OPENBLAS_NUM_THREADS=1 $(VPY) -m pytest -q -n 2 --dist loadfile --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: venv
	$(VPY) benchmarks/run_all.py

lint: venv
	$(VPY) -m ruff check .

clean:
	rm -rf $(VENV) results build *.egg-info
