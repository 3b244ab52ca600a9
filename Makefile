# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create the virtual environment on first use and reuse it afterwards
# (the stamp file is rebuilt only when pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-realarch browser lint typecheck world clean-env

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded small world: the gate on the zoo's resurgent benign LoRA.
# That candidate (trained on data without any skull) brings the erased skull back, so the gate's verdict is FAIL (exit code 1):
# the demo succeeds when the gate says so; any other exit code is an error.
demo: $(STAMP)
	@$(BIN)/gate check; code=$$?; \
	if [ $$code -eq 1 ]; then echo "demo: the gate failed the resurgent candidate, as it should (reports in out/gate-report/)"; \
	elif [ $$code -eq 0 ]; then echo "demo: the gate passed the resurgent candidate: that is a regression"; exit 1; \
	else exit $$code; fi

# Every test, all three tiers (tests/unit, tests/integration, tests/e2e): real models, real gate runs.
test: $(STAMP) browser
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest --durations=25

# The unit tier alone (tests/unit): no model is loaded, done in well under a minute.
test-fast: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest tests/unit -q

# The real-architecture tier (tests/realarch): SD v1.4 and v2.1 at their released configs with
# random weights (built once into $(REALARCH_CACHE)), every command on the CPU at small sizes.
REALARCH_CACHE ?= $(CURDIR)/.realarch-cache
test-realarch: $(STAMP)
	GATE_REALARCH_CACHE=$(REALARCH_CACHE) MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest tests/realarch -m realarch --durations=0

# Headless Chromium for the HTML report test (Debian's package; needs root or sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; } || \
	  echo "warning: could not install chromium; tests/e2e/test_browser.py will fail"

lint: $(STAMP)
	$(BIN)/ruff check gate tests probes benchmarks
	$(BIN)/ruff format --check gate tests probes benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# Rebuild the small world's models (about 43 minutes on 2 CPU cores).
world: $(STAMP)
	$(BIN)/gate world build

clean-env:
	rm -rf $(VENV)
