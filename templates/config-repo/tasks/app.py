"""The Celery application, configured entirely from the environment.

The deploy (and `celeroot agent`) writes these variables; docs/celery.md documents them:

CELEROOT_BROKER_URL      Redis URL of the broker (and of RedBeat). Required.
CELEROOT_RESULT_BACKEND  Redis URL of the result backend. Default: the broker URL.
CELEROOT_CLUSTER         Cluster name; RedBeat keys live under celeroot:{<cluster>}:redbeat:
CELEROOT_HOST            This host's name (its queue is celeroot.host.<name>).
CELEROOT_TIMEZONE        The cluster's time zone; crontab schedules are read in it. Default UTC.
CELEROOT_IMPORTS         Extra task modules to import, comma-separated.
CELEROOT_BEAT_LOCK_TIMEOUT  Seconds RedBeat's lock lasts (`celeroot beat` sets it). Default:
                         RedBeat's, 5 x beat's max interval.

Run a worker:  celery -A tasks.app worker -Q <queues> -n <host>@%h
Run beat:      celeroot beat (it runs and supervises celery beat -S redbeat.RedBeatScheduler)
"""

import os

from celery import Celery

broker = os.environ.get("CELEROOT_BROKER_URL", "redis://127.0.0.1:6379/0")
backend = os.environ.get("CELEROOT_RESULT_BACKEND") or broker
cluster = os.environ.get("CELEROOT_CLUSTER", "default")
extra = [m.strip() for m in os.environ.get("CELEROOT_IMPORTS", "").split(",") if m.strip()]

app = Celery("celeroot", broker=broker, backend=backend)
app.conf.update(
    timezone=os.environ.get("CELEROOT_TIMEZONE", "UTC"),
    enable_utc=True,
    # celeroot writes the schedule into Redis; beat only reads it.
    redbeat_redis_url=broker,
    redbeat_key_prefix="celeroot:{%s}:redbeat:" % cluster,
    redbeat_lock_timeout=int(os.environ.get("CELEROOT_BEAT_LOCK_TIMEOUT") or 0) or None,
    beat_scheduler="redbeat.RedBeatScheduler",
    # Messages are JSON (what celeroot sends); results expire after a day.
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    result_expires=86400,
    result_extended=True,
    # Unrouted tasks go to the host's own queue rather than to a shared "celery" queue.
    task_default_queue="celeroot.host.%s" % os.environ.get("CELEROOT_HOST", "unknown"),
    # Task events feed celeroot's run history (`celeroot runs`): the worker's (received,
    # started, succeeded, failed...) and beat's "sent" (the agent also passes -E).
    worker_send_task_events=True,
    task_send_sent_event=True,
    broker_connection_retry_on_startup=True,
    imports=["tasks.system", *extra],
)
