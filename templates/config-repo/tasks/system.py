"""Health-check tasks; the system-administration tasks are added below."""

import os
import socket

from tasks.app import app


@app.task(name="celeroot.ping")
def ping():
    """Answer `pong` with the host name: proves the worker runs and consumes its queue."""
    return {"pong": True, "host": os.environ.get("CELEROOT_HOST") or socket.gethostname()}


@app.task(name="celeroot.echo")
def echo(*args, **kwargs):
    """Return the arguments unchanged."""
    return {"args": list(args), "kwargs": kwargs}
