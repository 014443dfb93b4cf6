"""The Python peer of `cargo bench --bench fleet_scale` part e.

The first registration of a fleet written the way a team would write it in Python:
PyYAML (its C loader when built) reads every manifest of the work tree, pydantic
validates them (unknown fields refused, references checked), redis-py registers the
objects, hosts, roles and worker configuration in one pipelined transaction, and
RedBeat's own `RedBeatSchedulerEntry.save()` writes every schedule target's entry under
the same key prefix celeroot uses. It does less than `celeroot reconcile` (no located
diagnostics, no digests, no plan, no lease, no history), so the ratio flatters it.

Usage: python register_fleet.py ROOT REDIS_URL CLUSTER
Prints one line: `objects=N entries=N seconds=S`.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys
import time
from typing import Optional

import redis
import yaml
from celery import Celery
from celery.schedules import crontab, schedule as interval
from pydantic import BaseModel, ConfigDict, model_validator
from redbeat import RedBeatSchedulerEntry

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Meta(Strict):
    name: str
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Selector(Strict):
    matchLabels: dict[str, str]


class Target(Strict):
    role: Optional[str] = None
    host: Optional[str] = None
    selector: Optional[Selector] = None

    @model_validator(mode="after")
    def one(self) -> "Target":
        if sum(x is not None for x in (self.role, self.host, self.selector)) != 1:
            raise ValueError("a target names exactly one of role, host, selector")
        return self


class HostSpec(Strict):
    address: str
    roles: list[str]


class RoleSpec(Strict):
    description: Optional[str] = None
    queue: Optional[str] = None
    concurrency: Optional[int] = None
    maxTasksPerChild: Optional[int] = None
    tasks: list[str] = []


class ScheduleSpec(Strict):
    description: Optional[str] = None
    cron: Optional[str] = None
    every: Optional[str] = None
    task: str
    args: list = []
    kwargs: dict = {}
    targets: list[Target]
    mode: str = "any"
    options: dict = {}
    timezone: Optional[str] = None
    enabled: bool = True


class Doc(BaseModel):
    apiVersion: str
    kind: str
    metadata: Meta
    spec: dict


SPECS = {"Host": HostSpec, "Role": RoleSpec, "Schedule": ScheduleSpec}


def seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(text[:-1]) * units[text[-1]]


def main(root: str, url: str, cluster: str) -> None:
    started = time.monotonic()
    docs = []
    for path in sorted(pathlib.Path(root, "manifests").rglob("*.yaml")):
        for raw in yaml.load_all(path.read_text(), Loader=Loader):
            doc = Doc.model_validate(raw)
            spec = SPECS[doc.kind].model_validate(doc.spec) if doc.kind in SPECS else doc.spec
            docs.append((doc, spec))
    hosts = {d.metadata.name: (d, s) for d, s in docs if d.kind == "Host"}
    roles = {d.metadata.name: (d, s) for d, s in docs if d.kind == "Role"}
    role_hosts: dict[str, list[str]] = {r: [] for r in roles}
    for name, (_, h) in hosts.items():
        for r in h.roles:
            if r not in roles:
                raise SystemExit(f"host {name}: unknown role {r}")
            role_hosts[r].append(name)

    prefix = f"celeroot:{{{cluster}}}:"
    r = redis.Redis.from_url(url)
    pipe = r.pipeline(transaction=True)
    for d, spec in docs:
        obj = {"metadata": d.metadata.model_dump(), "spec": d.spec}
        text = json.dumps(obj, separators=(",", ":"))
        digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        pipe.hset(prefix + "objects", f"{d.kind}/{d.metadata.name}", json.dumps({"hash": digest, "object": obj}))
    for name, (_, h) in hosts.items():
        queues = [roles[x][1].queue or x for x in h.roles] + [f"celeroot.host.{name}"]
        conc = [roles[x][1].concurrency for x in h.roles if roles[x][1].concurrency]
        pipe.hset(
            prefix + f"worker:{name}",
            mapping={
                "address": h.address,
                "roles": json.dumps(h.roles),
                "queues": json.dumps(queues),
                "concurrency": str(max(conc)) if conc else "",
            },
        )
    pipe.sadd(prefix + "hosts", *hosts)
    for role, members in role_hosts.items():
        if members:
            pipe.sadd(prefix + f"role:{role}:hosts", *members)
    pipe.execute()

    app = Celery("peer", broker=url)
    app.conf.redbeat_redis_url = url
    app.conf.redbeat_key_prefix = prefix + "redbeat:"
    entries = 0
    for d, s in docs:
        if d.kind != "Schedule":
            continue
        if s.cron:
            minute, hour, dom, month, dow = s.cron.split()
            when = crontab(minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow)
        else:
            when = interval(seconds(s.every))
        dests: list[tuple[str, str, str]] = []
        for t in s.targets:
            if t.role and s.mode == "any":
                dests.append(("role", t.role, roles[t.role][1].queue or t.role))
                continue
            if t.role:
                names = role_hosts[t.role]
            elif t.host:
                if t.host not in hosts:
                    raise SystemExit(f"schedule {d.metadata.name}: unknown host {t.host}")
                names = [t.host]
            else:
                want = t.selector.matchLabels.items()
                names = [n for n, (hd, _) in hosts.items() if want <= hd.metadata.labels.items()]
            dests.extend(("host", n, f"celeroot.host.{n}") for n in names)
        for kind, name, queue in dests:
            entry_name = f"{d.metadata.name}.{kind}.{name}"
            options = {"queue": queue, "root_id": f"celeroot:{entry_name}"}
            if "expires" in s.options:
                options["expires"] = seconds(s.options["expires"])
            RedBeatSchedulerEntry(entry_name, s.task, when, s.args, s.kwargs, options, app=app).save()
            entries += 1
    print(f"objects={len(docs)} entries={entries} seconds={time.monotonic() - started:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
