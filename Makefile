# Two commands get a newcomer going: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCAL_STAMP := $(VENV)/.local-stamp
# The local provider's torch: a CPU build. This machine has 2.13.0+cpu on disk; elsewhere use
# e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cpu" to avoid a CUDA build.
TORCH ?= torch==2.13.0
# Tests use the Redis at REDIS_URL, else the local one (db 15, keys under test prefixes).
TEST_REDIS_URL := $(or $(REDIS_URL),redis://127.0.0.1:6379/15)
DEMO_CLIPS ?= 1000
DEMO_QUERY ?= insane clutch in Valorant
# OpenAI when a key or an endpoint is configured (environment or .env), else the local model.
HAS_API := $(or $(OPENAI_API_KEY),$(OPENAI_BASE_URL),$(shell grep -sE '^(OPENAI_API_KEY|OPENAI_BASE_URL)=.+' .env))
DEMO_ENV := $(if $(HAS_API),,EMBEDDING_PROVIDER=local EMBEDDING_MODEL=all-MiniLM-L6-v2 EMBEDDING_DIMENSIONS=384 EMBEDDED_DATABASE_NAME=clip_demo)
# `make serve` on the embedded server serves what `make demo` made; with a DATABASE_URL, that.
HAS_DATABASE := $(or $(DATABASE_URL),$(shell grep -sE '^DATABASE_URL=.+' .env))
SERVE_ENV := $(if $(HAS_DATABASE),,$(DEMO_ENV))

# make serve: the port to listen on (127.0.0.1 only).
PORT ?= 8000

.PHONY: install install-local migrate demo serve test lint format bench soak stop-db clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(LOCAL_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	touch $(LOCAL_STAMP)

install: $(STAMP)

install-local: $(LOCAL_STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

demo: $(if $(HAS_API),install,install-local)
	@echo "Embedding with $(if $(HAS_API),the OpenAI-compatible API,the local all-MiniLM-L6-v2 model (no OPENAI_API_KEY set))"
	$(DEMO_ENV) $(BIN)/python manage.py migrate --noinput
	$(DEMO_ENV) $(BIN)/python manage.py load_demo_clips --count $(DEMO_CLIPS) --replace
	$(DEMO_ENV) $(BIN)/python manage.py backfill_embeddings
	$(DEMO_ENV) $(BIN)/python manage.py search_clips "$(DEMO_QUERY)" -k 5

# The admin behind gunicorn, styled with DEBUG off (WhiteNoise), and /metrics. The admin user
# comes from DJANGO_SUPERUSER_USERNAME / _PASSWORD / _EMAIL when they are set.
serve: $(if $(SERVE_ENV),install-local,install)
	$(SERVE_ENV) $(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(SERVE_ENV) $(BIN)/python manage.py ensure_superuser
	@echo "Open http://127.0.0.1:$(PORT)/admin/embeddings/clip/coverage/ (metrics: /metrics)"
	$(SERVE_ENV) exec $(BIN)/gunicorn project.wsgi --bind 127.0.0.1:$(PORT) --workers 2 --access-logfile -

test: install-local
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install-local migrate
	REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python -m tests.benchmarks.run

# Minutes, so not part of `make test`: 200,000 clips, a flaky rate-limited API, two kill -9s.
soak: install
	REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python -m tests.soak

stop-db: install
	$(BIN)/python -c "from pathlib import Path; from project.embedded_postgres import stop_embedded_database as s; print('stopped' if s(Path('.data/postgres').resolve()) else 'not running')"

clean: stop-db
	rm -rf $(VENV) .data
