# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# binary:debian-package pairs the test suite starts for itself
SYSTEM_DEPS := redis-server:redis-server redis-cli:redis-tools nginx:nginx etcd:etcd-server zooinspector:zookeeper haproxy:haproxy chromium:chromium systemd-analyze:systemd

.PHONY: serve test system-deps bench lint clean chaos screenshots

$(VENV)/.run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.run
	$(PY) -m pip install -q -e '.[all,test,bench]'
	touch $@

# The demo URL first (host and port as the server will read them: the file, then LIVECOMMENTS_*);
# a config the server refuses prints nothing here and its one-line error below.
serve: $(VENV)/.run
	@$(PY) -c 'import sys; from livecomments.config_layers import load; c = load(sys.argv[1]); \
	  h = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(c.host, c.host); h = f"[{h}]" if ":" in h else h; \
	  print(f"livecomments demo: http://{h}:{c.port}/ (Ctrl-C stops it)" if c.port else "livecomments demo: on the port below")' \
	  config/livecomments.toml 2>/dev/null || true
	@$(VENV)/bin/livecomments serve --config config/livecomments.toml

system-deps:
	@missing=""; for pair in $(SYSTEM_DEPS); do \
	  bin=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$bin >/dev/null 2>&1 || [ -x /usr/sbin/$$bin ] || missing="$$missing $$pkg"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends $$missing \
	    || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends $$missing; }; \
	fi

test: system-deps $(VENV)/.test
	$(PY) -m pytest

lint: $(VENV)/.test
	$(PY) -m pip install -q -e '.[lint]'
	$(PY) -m ruff check livecomments tests
	$(PY) -m mypy livecomments

# The quick suite end to end (a few minutes); its reports go to benchmarks/scratch/, never results/.
# Full runs, one at a time on a quiet machine: see README "Reproduce every number".
bench: system-deps $(VENV)/.test
	$(VENV)/bin/livecomments bench all --quick

# The fault suite on PostgreSQL, then on DynamoDB (moto) (not part of `make test`: ~4 min each);
# its tables go to benchmarks/results/chaos.md and chaos-dynamodb.md.
# `livecomments bench chaos --quick` is the 1.5-minute version (its table goes to benchmarks/scratch/).
chaos: system-deps $(VENV)/.test
	$(VENV)/bin/livecomments bench chaos
	$(VENV)/bin/livecomments bench chaos --storage dynamodb

# The demo page at desktop and phone widths, and the cluster dashboard under load (headless Chromium) → docs/screenshots/*.png
screenshots: system-deps $(VENV)/.test
	$(PY) -m docs.screenshots.take
	$(PY) -m docs.screenshots.take_dashboard

clean:
	rm -rf $(VENV) livecomments.db livecomments.db-wal livecomments.db-shm
