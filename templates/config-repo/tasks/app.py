"""The Celery application, configured entirely from the environment.

The deploy (and `celeroot agent`) writes these variables; docs/celery.md documents them:

CELEROOT_BROKER_URL      URL of the broker: Redis (also of RedBeat) or amqp:// (RabbitMQ). Required.
CELEROOT_BROKER_TRANSPORT  The Cluster's broker.transport (redis or amqp; deploy writes it
                         for amqp). A URL of the other kind is refused. Default: redis.
CELEROOT_QUEUE_TYPE      On RabbitMQ: quorum (default) or classic queues, as the Cluster's
                         broker.queueType says; celeroot declares them the same way.
CELEROOT_RESULT_BACKEND  Redis URL of the result backend. Default: the broker URL (with
                         RabbitMQ it is required; the agent and `celeroot beat` set it).
CELEROOT_REDBEAT_URL     Where RedBeat reads the schedule (`celeroot beat` sets it; a
                         redis+cluster:// URL when the live state is on a Redis Cluster).
                         Default: the broker URL.
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
from urllib.parse import parse_qs, unquote

from celery import Celery


def sentinel_settings(url):
    """Celery, kombu and RedBeat settings for a celeroot Redis URL.

    A plain URL (redis://, rediss://, redis+unix://) is used as it is. A
    redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB] URL
    (docs/operations.md, "High availability") becomes kombu's sentinel:// transport
    for the broker and the result backend, and RedBeat's Sentinel options, so that
    workers and beat follow the master after a failover.
    """
    if not url.startswith("redis+sentinel://"):
        return url, {}, url, {}
    rest = url[len("redis+sentinel://"):]
    rest, _, query = rest.partition("?")
    userinfo, at, rest = rest.rpartition("@")
    if not at:
        userinfo = ""
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    master = parts[0]
    db = int(parts[1]) if len(parts) > 1 else 0
    user, _, password = userinfo.partition(":")
    user, password = unquote(user) or None, unquote(password) or None
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    sentinel_kwargs = {}
    if params.get("sentinel_username"):
        sentinel_kwargs["username"] = params["sentinel_username"]
    if params.get("sentinel_password"):
        sentinel_kwargs["password"] = params["sentinel_password"]
    nodes = []
    for hp in hosts.split(","):
        host, _, port = hp.rpartition(":")
        nodes.append((host.strip("[]"), int(port)))
    auth = userinfo + "@" if userinfo else ""
    # kombu: one sentinel:// URL per sentinel, joined by ';' (its failover syntax).
    def hostport(h, p):
        return "[%s]:%d" % (h, p) if ":" in h else "%s:%d" % (h, p)

    kombu_url = ";".join("sentinel://%s%s/%d" % (auth, hostport(h, p), db) for h, p in nodes)
    transport = {"master_name": master}
    if sentinel_kwargs:
        transport["sentinel_kwargs"] = sentinel_kwargs
    redbeat = {"sentinels": nodes, "service_name": master, "db": db, "socket_timeout": 5}
    if password:
        redbeat["password"] = password
    if user:
        redbeat["username"] = user
    if sentinel_kwargs:
        redbeat["sentinel_kwargs"] = sentinel_kwargs
    return kombu_url, transport, "redis-sentinel://%s/%d" % (hostport(*nodes[0]), db), redbeat


broker_source = os.environ.get("CELEROOT_BROKER_URL", "redis://127.0.0.1:6379/0")
transport = os.environ.get("CELEROOT_BROKER_TRANSPORT") or "redis"
on_amqp = broker_source.lower().startswith(("amqp://", "amqps://"))
if transport not in ("redis", "amqp"):
    raise SystemExit("CELEROOT_BROKER_TRANSPORT=%s: expected redis or amqp" % transport)
if on_amqp != (transport == "amqp"):
    raise SystemExit(
        "CELEROOT_BROKER_URL is %s, but the Cluster's broker.transport (CELEROOT_BROKER_TRANSPORT) is %s"
        % ("an AMQP URL" if on_amqp else "not an amqp:// URL", transport)
    )
if on_amqp:
    # RabbitMQ carries the tasks; results and RedBeat's schedule stay in Redis.
    backend_source = os.environ.get("CELEROOT_RESULT_BACKEND")
    if not backend_source:
        raise SystemExit("CELEROOT_RESULT_BACKEND is required when the broker is RabbitMQ")
    broker, broker_transport = broker_source, {}
    _, _, redbeat_url, redbeat_options = sentinel_settings(backend_source)
else:
    backend_source = os.environ.get("CELEROOT_RESULT_BACKEND") or broker_source
    broker, broker_transport, redbeat_url, redbeat_options = sentinel_settings(broker_source)
backend, backend_transport, _, _ = sentinel_settings(backend_source)
redbeat_source = os.environ.get("CELEROOT_REDBEAT_URL")
if redbeat_source and redbeat_source.startswith("redis+cluster://"):
    # RedBeat's Redis Cluster client (redis-py's RedisCluster.from_url, which finds the
    # other nodes from the first seed). Every key of a cluster shares one hash tag, so
    # one slot. (RedBeat's redis-cluster:// form passes dicts where redis-py 5+ wants
    # ClusterNode objects.)
    rest = redbeat_source[len("redis+cluster://"):].split("?")[0].split("/")[0]
    userinfo, at, hosts = rest.rpartition("@")
    redbeat_url = "redis://%s%s/0" % (userinfo + at, hosts.split(",")[0])
    redbeat_options = {"cluster": True, "decode_responses": True}
elif redbeat_source:
    _, _, redbeat_url, redbeat_options = sentinel_settings(redbeat_source)
cluster = os.environ.get("CELEROOT_CLUSTER", "default")
extra = [m.strip() for m in os.environ.get("CELEROOT_IMPORTS", "").split(",") if m.strip()]

app = Celery("celeroot", broker=broker, backend=backend)
if broker_transport:
    app.conf.broker_transport_options = broker_transport
if backend_transport:
    app.conf.result_backend_transport_options = backend_transport
if redbeat_options:
    app.conf.redbeat_redis_options = redbeat_options
if on_amqp:
    # Queues are declared exactly as celeroot declares them (`celeroot task run`): a
    # durable direct exchange and queue per name, quorum unless the Cluster says classic.
    # Quorum queues need per-consumer QoS, which Celery detects by itself.
    queue_type = os.environ.get("CELEROOT_QUEUE_TYPE") or "quorum"
    if queue_type not in ("quorum", "classic"):
        raise SystemExit("CELEROOT_QUEUE_TYPE=%s: expected quorum or classic" % queue_type)
    app.conf.task_default_queue_type = queue_type
    app.conf.task_create_missing_queue_type = queue_type
app.conf.update(
    timezone=os.environ.get("CELEROOT_TIMEZONE", "UTC"),
    enable_utc=True,
    # celeroot writes the schedule into Redis; beat only reads it.
    redbeat_redis_url=redbeat_url,
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
