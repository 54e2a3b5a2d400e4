# microshop: one command to run the whole system, one to test it.
#   make run    set up .venv (first time) and start everything: microshop up
#   make test   set up .venv (first time) and run every test (unit, integration, end-to-end)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# Every installable part of the repository, in dependency order.
PACKAGES := libs/chassis \
	services/users services/inventory services/orders services/payments \
	services/notifications services/reports services/gateway \
	sims/card-processor sims/mail-catcher tools/chaos-proxy cli

STAMP := $(VENV)/.installed
PYPROJECTS := $(foreach p,$(PACKAGES),$(p)/pyproject.toml)

.PHONY: run test install lint bench clean help

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

$(STAMP): $(PYPROJECTS) constraints.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "microshop needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements-dev.txt $(addprefix -e ,$(PACKAGES))
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/microshop up

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: install
	$(BIN)/microshop bench

clean:
	rm -rf $(VENV) .microshop
