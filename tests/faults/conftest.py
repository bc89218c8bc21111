"""One private stack (PostgreSQL, Redis, gunicorn, a Celery worker and beat) for the
whole fault-test session; see stack.py. Skipped, with the reason, where the server
binaries are missing."""

import atexit
import time

import pytest

from tests.faults.stack import Stack, log, missing_binaries


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Make ``--dist loadgroup`` (``make test``) keep the fault tests on one worker, so
    only one private stack runs. pytest-xdist 3.8 names a grouped test
    ``<nodeid>@<group>`` by setting ``item._nodeid``, which pytest 9 no longer reads (it
    keeps ``item._id``): without this, groups are ignored and each worker starts a stack."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        mark = item.get_closest_marker("xdist_group")
        if mark is None or "@" in item.nodeid:
            continue
        name = mark.args[0] if mark.args else mark.kwargs.get("name", "default")
        item._id = coerce_node_id(f"{item.nodeid}@{name}")


@pytest.fixture(scope="session")
def stack(request):
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    s = Stack()
    atexit.register(s.close)  # also when the session is interrupted
    request.addfinalizer(s.close)
    s.pg_init()
    s.redis_start()
    s.manage("migrate", "--noinput")
    s.api_key = s.manage("createapikey", "--name", "faults", "--type", "secret").stdout.strip().splitlines()[-1]
    s.web_start()
    s.worker_start()
    s.beat_start()
    log(f"stack up in {time.monotonic() - started:.1f} s: postgres :{s.pg_port}, redis :{s.redis_port}, "
        f"gunicorn :{s.web_port}, base {s.base}")
    return s
