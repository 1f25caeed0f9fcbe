# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint setup clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

## Set up, migrate, create the first admin, and run web + mail + worker.
run: $(STAMP)
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py collectstatic --no-input -v0
	$(BIN)/python manage.py bootstrap
	$(BIN)/honcho start -f Procfile

## Run the whole test suite; arguments go to pytest: make test ARGS="-k smtp"
test: export MAILHOST_DATA_DIR ?= $(CURDIR)/var/test
test: export MAILHOST_FAST_PASSWORD_HASHER ?= 1
test: $(STAMP)
	tests/setup-clients.sh
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var
