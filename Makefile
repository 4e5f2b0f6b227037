# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# binary:debian-package pairs the test suite starts for itself
SYSTEM_DEPS := redis-server:redis-server redis-cli:redis-tools nginx:nginx etcd:etcd-server haproxy:haproxy

.PHONY: serve test system-deps bench lint clean

$(VENV)/.run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.run
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

serve: $(VENV)/.run
	$(VENV)/bin/livecomments serve --config config/livecomments.toml

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
	$(PY) -m ruff check livecomments tests benchmarks
	$(PY) -m mypy livecomments

bench: $(VENV)/.test
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) livecomments.db livecomments.db-wal livecomments.db-shm
