# Two commands: `make run` (serve the demo) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test migrate seed worker bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.run-deps: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.test-deps: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

migrate: $(VENV)/.run-deps
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py seed_demo --credentials-file var/demo-credentials.json

# Serves on $(HOST):$(PORT) with a Celery worker running the beat schedule
# beside it (embedded broker unless REDIS_URL is set). Ctrl-C stops both.
run: export DEBUG ?= 1
run: export PUBLIC_BASE_URL ?= http://$(HOST):$(PORT)
run: seed
	@$(VENV)/bin/celery -A config --quiet worker --beat --loglevel=INFO --concurrency=1 --pool=solo \
	    --logfile=var/worker.log & worker=$$!; \
	  trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	  echo "worker and beat: pid $$worker, log var/worker.log"; \
	  $(PY) manage.py runserver --noreload $(HOST):$(PORT)

worker: $(VENV)/.run-deps
	$(VENV)/bin/celery -A config worker --beat --loglevel=INFO

test: $(VENV)/.test-deps
	$(VENV)/bin/pytest -n auto --dist loadgroup -p no:cacheprovider $(PYTEST_ARGS)

# Throughput and latency of the hot routes under gunicorn on a fresh PostgreSQL database;
# writes bench/RESULTS.md. BENCH_SECONDS=5 for a quicker run (see bench/README.md).
bench: $(VENV)/.test-deps
	$(PY) bench/run.py

clean:
	rm -rf var $(VENV)
