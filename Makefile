# One entry point for people and CI. `make demo` and `make test` work on a fresh Debian machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit soak chaos fuzz fleet bench system-deps clean install uninstall \
	report-screenshot

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# System packages: a Python with venv, mosquitto for the cloud-link tests, and its clients
# (mosquitto_sub, the subscriber of bench/outbox_replay.py and of its smoke test); chromium,
# headless, renders the report's HTML page in its tests and for docs/report-day.png.
system-deps:
	@missing=""; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_sub >/dev/null 2>&1 || missing="$$missing mosquitto-clients"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi

demo: $(STAMP)
	$(BIN)/edgectl demo --config config/demo.toml

lint: $(STAMP)
	$(BIN)/ruff check edgectl drivers tests $(wildcard bench) chaos
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -m "not soak"

test: lint unit

soak: $(STAMP)
	$(BIN)/pytest -q -m soak

# SIGKILL rounds, line noise, store faults and codec fuzzing against the real daemon, about
# 20 minutes (docs/reliability.md). CHAOS_ARGS="--seed S" replays a run, "--only kill" a part.
chaos: $(STAMP)
	$(BIN)/python -m chaos.run $(CHAOS_ARGS)

# Only the fuzzing part of make chaos: every codec and the command parser, 100k cases each by
# default, a few minutes. FUZZ_ARGS="--seed S --target tls.display" replays one entry.
fuzz: $(STAMP)
	$(BIN)/python -m chaos.fuzz $(FUZZ_ARGS)

# A chain of stations on one broker (chaos/fleet.py): 50 daemons with simulated pumps through
# faulty uplinks, 3 ingest workers into PostgreSQL, worker kills and a broker restart; about
# 10 minutes. FLEET_ARGS="--stations 10 --duration 60" for a shorter run, "--seed S" replays.
fleet: $(STAMP)
	$(BIN)/python -m chaos.fleet $(FLEET_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/dart_scan.py
	$(BIN)/python bench/daemon_footprint.py

# docs/report-day.png: a simulated station's day seeded into a store (tests/reportkit.py),
# its `edgectl report day --html` page, screenshot by headless chromium.
report-screenshot: $(STAMP)
	$(BIN)/python -m tests.reportkit docs/report-day.png

# A station, as root: account, /etc/edgectl, /var/lib/edgectl, a venv on the system Python in
# /opt/edgectl, the unit (packaging/install.sh says what goes where; run again to upgrade).
# DESTDIR=DIR stages it into DIR; EDGECTL_INSTALL_VENV=0 leaves out the venv.
install:
	DESTDIR="$(DESTDIR)" bash packaging/install.sh install

# Keeps /etc/edgectl, /var/lib/edgectl and the account.
uninstall:
	DESTDIR="$(DESTDIR)" bash packaging/install.sh uninstall

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
