# dxgate: `make demo` runs the main job on embedded defaults; `make test` runs the suite
# against the real peers. Both create .venv and install into it; `make test` also installs
# the Debian packages of the real peers when it can (root or sudo).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PEERS_DEB := dcmtk orthanc libusb-1.0-0 dicom3tools rsyslog rsyslog-gnutls chromium
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test install peers lint clean

# Debian's own python3 needs python3-venv for this; install it when we can.
$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "python3 -m venv failed: installing python3-venv"; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q python3-venv && \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/dxgate demo $(DEMO_ARGS)

# Install the real peers from Debian if any is missing. Without root or sudo this only
# reports; the tests then skip (or, with CI=true, fail) naming the missing peer.
peers:
	@missing=""; \
	for exe in /usr/bin/storescp /usr/bin/wlmscpfs /usr/sbin/Orthanc /usr/bin/dciodvfy /usr/sbin/rsyslogd /usr/bin/chromium; do \
	  [ -x $$exe ] || missing="$$missing $$exe"; done; \
	[ -e /usr/share/orthanc/plugins/libModalityWorklists.so ] || missing="$$missing orthanc-worklists"; \
	ls /usr/lib/*/libusb-1.0.so.0 >/dev/null 2>&1 || missing="$$missing libusb-1.0"; \
	ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || missing="$$missing rsyslog-gnutls"; \
	if [ -n "$$missing" ]; then \
	  echo "installing real peers (missing:$$missing)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; \
	  else echo "not root and no sudo: install $(PEERS_DEB) yourself"; exit 0; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $(PEERS_DEB); \
	fi

# pytest exit code 5 means it collected no test: a run that tested nothing is a failure.
test: install peers
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: install
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
