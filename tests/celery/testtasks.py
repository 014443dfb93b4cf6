"""Tasks used only by the test suite (loaded through CELEROOT_IMPORTS=testtasks)."""

import time

from tasks.app import app


@app.task(name="tests.fail")
def fail(message="boom"):
    """Raise, so tests can see a failure with its traceback."""
    raise RuntimeError(message)


@app.task(name="tests.sleep")
def sleep(seconds=1.0):
    """Sleep, so tests can see a timeout."""
    time.sleep(float(seconds))
    return seconds


@app.task(name="tests.record")
def record(tag, host=None):
    """Append `tag` to a Redis list named after it, so tests can count executions."""
    import os

    import redis

    # A worker's own ACL user may not write outside Celery's keys: tests that run one
    # pass the test's Redis as TESTS_RECORD_URL.
    r = redis.Redis.from_url(os.environ.get("TESTS_RECORD_URL") or os.environ["CELEROOT_BROKER_URL"])
    r.rpush(f"tests:record:{tag}", host or os.environ.get("CELEROOT_HOST", "?"))
    return tag
