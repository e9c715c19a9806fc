# The two commands of the README. Both create .venv and install tokenforge into it when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?= -n 2 -m "not gpu"
# the suite's second pass: PyTorch, oneDNN and MKL use their AVX2 kernels instead of the CPU's best (AVX-512 on
# newer x86), so a test that holds only with one CPU's float rounding fails here (tests/README.md)
# (with its own inductor cache: kernels compiled for one ISA must not be reused by the other pass)
AVX2_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
            TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/.pytest_cache/inductor-avx2

.PHONY: demo test test-avx2 install parity clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch pulls ~3 GB of CUDA wheels from PyPI: download them beside the venv rather than into a possibly
	@# small /tmp, keep no second copy in pip's cache (disk, not bandwidth, is what runs out here), resume a
	@# dropped download and retry the whole install
	mkdir -p $(VENV)/tmp
	for attempt in 1 2 3 4; do \
	    TMPDIR=$(CURDIR)/$(VENV)/tmp $(PY) -m pip install -q --no-cache-dir --resume-retries 20 -e ".[dev]" \
	        && break; \
	    if [ $$attempt = 4 ]; then echo "pip install failed 4 times: check the network to PyPI" >&2; exit 1; fi; \
	    echo "pip install failed (attempt $$attempt of 4); retrying in 30 s" >&2; sleep 30; \
	done
	rm -rf $(VENV)/tmp
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
	$(PY) tools/check_parity.py --all
	$(MAKE) --no-print-directory test-avx2

test-avx2: $(STAMP)
	$(AVX2_ENV) $(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m tokenforge demo --out outputs/demo

clean:
	rm -rf outputs/demo demo_out logs .pytest_cache
