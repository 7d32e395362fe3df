# Two commands do all the set-up: `make run` (the service, embedded default) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/scheduled_deployments
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test install services check-compose bench clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@mkdir -p var && [ -f var/secret-key ] || $(PY) -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret-key
	SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret-key)}" $(PY) manage.py runall

services:
	@bash scripts/ensure-services.sh

# Each run gets its own test database, so concurrent runs on one machine do not collide.
test: $(STAMP) services
	$(VENV)/bin/lint-imports
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) SECRET_KEY=test-only-secret DEBUG=0 \
		TEST_DATABASE_NAME=$${TEST_DATABASE_NAME:-test_sd_$$$$} \
		$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP) services
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) SECRET_KEY=bench-only-secret \
		bash bench/run_all.sh

check-compose:
	@if docker compose version >/dev/null 2>&1; then docker compose config --quiet; else docker-compose config -q; fi && echo "docker-compose.yml is valid"

clean:
	rm -rf var/broker
