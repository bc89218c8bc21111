"""Race helpers for the PostgreSQL tests: threads that start together."""

import threading

from django.db import connection


def run_concurrently(count, work):
    """Start ``count`` threads at once, each running ``work(i)`` on its own database
    connection; return their results in no particular order (any exception fails)."""
    barrier = threading.Barrier(count)
    results, errors, lock = [], [], threading.Lock()

    def runner(i):
        try:
            barrier.wait()
            outcome = work(i)
            with lock:
                results.append(outcome)
        except Exception as exc:  # surfaced below
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == count
    return results
