"""System-administration tasks: health checks and APT package management.

Every task returns a JSON-serialisable dict. A failing command raises RuntimeError with
the last lines of its stderr, so the failure and its traceback land in the result backend
(`celeroot task run --wait` prints them). Bad input raises ValueError before anything runs.

APT tasks
---------
celeroot.apt.update()                                   apt-get update
celeroot.apt.install(packages, dry_run=False)           apt-get install PACKAGE...
celeroot.apt.remove(packages, dry_run=False)            apt-get remove PACKAGE...
celeroot.apt.upgrade(dry_run=False)                     apt-get upgrade (never removes packages)
celeroot.apt.check_security_updates(apply=False)        report upgradable packages from security
                                                        origins; apply=True upgrades just those

`dry_run=True` runs `apt-get -s` (simulation: nothing changes, no root needed) and reports
what a real run would do. Real runs need root: run the worker as root, or they fail with
apt's "Permission denied" in the traceback.

Package names must follow Debian's rule (`^[a-z0-9][a-z0-9+.-]+$`), optionally qualified
with an architecture (`name:arch`) and/or pinned to a version (`name=1.2-3`). Anything else
(spaces, shell syntax, options, globs) is rejected with ValueError. Because apt-get treats
an unknown name that contains `.` or `+` as a regular expression (`apt-get remove lib.+`
would remove every matching package), install and remove also require each name to be a
package apt knows exactly.

Commands run without a shell, as argument lists, with DEBIAN_FRONTEND=noninteractive and
LC_ALL=C (so the output this module parses is stable), and existing configuration files are
kept on upgrade (dpkg --force-confdef --force-confold).
"""

import os
import re
import socket
import subprocess

from tasks.app import app

# ---------------------------------------------------------------------------------------
# Health checks


def _host():
    return os.environ.get("CELEROOT_HOST") or socket.gethostname()


@app.task(name="celeroot.ping")
def ping():
    """Answer `pong` with the host name: proves the worker runs and consumes its queue."""
    return {"pong": True, "host": _host()}


@app.task(name="celeroot.echo")
def echo(*args, **kwargs):
    """Return the arguments unchanged."""
    return {"args": list(args), "kwargs": kwargs}


# ---------------------------------------------------------------------------------------
# Input validation

# Debian policy 5.6.1 (package names), an optional architecture qualifier (Debian
# architecture names are lower-case letters, digits and dashes) and an optional version
# (policy 5.6.12: digits, letters, `.+~-`, an `epoch:` prefix; it starts with a digit).
_PACKAGE_RE = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9+.-]+)"
    r"(?::(?P<arch>[a-z0-9][a-z0-9-]*))?"
    r"(?:=(?P<version>[0-9][A-Za-z0-9.+~:-]*))?$"
)
_MAX_PACKAGE_LEN = 200
_MAX_PACKAGES = 500


def validate_packages(packages):
    """The package list, checked and de-duplicated (order kept). Raises ValueError.

    `packages` is a list of strings; a single string is taken as a one-package list.
    """
    if isinstance(packages, str):
        packages = [packages]
    if not isinstance(packages, (list, tuple)):
        raise ValueError(
            "packages must be a list of package names, not %s" % type(packages).__name__
        )
    if not packages:
        raise ValueError("packages is empty: name at least one package")
    if len(packages) > _MAX_PACKAGES:
        raise ValueError("too many packages (%d, at most %d)" % (len(packages), _MAX_PACKAGES))
    out = []
    for p in packages:
        if not isinstance(p, str):
            raise ValueError("package names are strings, not %s: %r" % (type(p).__name__, p))
        if len(p) > _MAX_PACKAGE_LEN or not _PACKAGE_RE.match(p):
            raise ValueError(
                "invalid package name %r: expected a Debian package name "
                "([a-z0-9][a-z0-9+.-]+), optionally :arch and/or =version" % (p,)
            )
        if p not in out:
            out.append(p)
    return out


def _flag(name, value):
    """A strict boolean: the string "false" must not mean "do it for real"."""
    if not isinstance(value, bool):
        raise ValueError("%s must be true or false, not %r" % (name, value))
    return value


# ---------------------------------------------------------------------------------------
# Running apt-get

# Seconds before a command is killed. A real install or upgrade may download a lot.
TIMEOUT_UPDATE = 600
TIMEOUT_CHANGE = 3600
TIMEOUT_SIMULATE = 300
TIMEOUT_QUERY = 60
# How long apt-get waits for the dpkg lock (held by unattended-upgrades, say) before failing.
LOCK_TIMEOUT = 120
STDERR_TAIL = 20

_APT_OPTIONS = [
    "-q",
    "-y",
    "-o",
    "DPkg::Lock::Timeout=%d" % LOCK_TIMEOUT,
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
]


def _env():
    env = dict(os.environ)
    env.update(
        DEBIAN_FRONTEND="noninteractive",
        APT_LISTCHANGES_FRONTEND="none",
        # Ubuntu's needrestart: list services to restart, never restart them (the worker
        # running this task could be one of them).
        NEEDRESTART_MODE="l",
        LC_ALL="C",
        LANG="C",
        LANGUAGE="C",
    )
    return env


def _text(data):
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


def _tail(text, n=STDERR_TAIL):
    return [line for line in text.splitlines() if line.strip()][-n:]


def _run(argv, timeout):
    """Runs argv (a list; never a shell). Returns (returncode, stdout, stderr).

    Raises RuntimeError when the program is missing or runs past `timeout` seconds.
    """
    try:
        p = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(),
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise RuntimeError(
            "%s not found: the APT tasks need a Debian-family host" % argv[0]
        ) from None
    except subprocess.TimeoutExpired as e:
        tail = _tail(_text(e.stderr))
        raise RuntimeError(
            "%s timed out after %ss (killed)%s"
            % (" ".join(argv), timeout, ("; stderr:\n" + "\n".join(tail)) if tail else "")
        ) from None
    return p.returncode, p.stdout, p.stderr


def _failed(argv, returncode, stderr, stdout=""):
    tail = _tail(stderr) or _tail(stdout)
    return RuntimeError(
        "%s failed with exit status %d:\n%s"
        % (" ".join(argv), returncode, "\n".join(tail) or "(no output)")
    )


def _warnings(stderr):
    return [line for line in stderr.splitlines() if line.startswith("W: ")]


# `apt-get -s` lines:
#   Inst hello (2.10-3 Debian:12/stable [amd64])
#   Inst bash [5.2.15-2+b8] (5.2.15-2+b13 Debian:12/stable, Debian-Security:12/stable-security
#        [amd64]) []                                          (one line; wrapped here)
#   Remv hello [2.10-3]
#   Purg hello [2.10-3]
_SIM_INST = re.compile(
    r"^Inst (?P<pkg>\S+)(?: \[(?P<old>[^\]]*)\])?"
    r" \((?P<new>\S+)(?: (?P<origins>[^\[]*?))?(?: \[[^\]]*\])?\)"
)
_SIM_REMV = re.compile(r"^(?P<op>Remv|Purg) (?P<pkg>\S+)(?: \[(?P<old>[^\]]*)\])?")
# dpkg lines of a real run (LC_ALL=C):
#   Unpacking hello (2.10-3) ...
#   Unpacking bash (5.2.15-2+b13) over (5.2.15-2+b8) ...
#   Removing hello (2.10-3) ...
_DPKG_UNPACK = re.compile(
    r"^Unpacking (?P<pkg>\S+) \((?P<new>[^)]*)\)(?: over \((?P<old>[^)]*)\))?"
)
_DPKG_REMOVE = re.compile(r"^Removing (?P<pkg>\S+) \((?P<old>[^)]*)\)")


def parse_apt_output(stdout):
    """The packages an apt-get run installed, upgraded and removed (or, for `-s`, would).

    Returns {"installed": [{package, version}], "upgraded": [{package, from, to, origins}],
    "removed": [{package, version}]}; `origins` only in simulations.
    """
    installed, upgraded, removed = [], [], []
    removed_names = set()
    for line in stdout.splitlines():
        m = _SIM_INST.match(line)
        if m:
            origins = [o.strip() for o in (m.group("origins") or "").split(",") if o.strip()]
            if m.group("old") is not None:
                upgraded.append(
                    {
                        "package": m.group("pkg"),
                        "from": m.group("old"),
                        "to": m.group("new"),
                        "origins": origins,
                    }
                )
            else:
                installed.append(
                    {"package": m.group("pkg"), "version": m.group("new"), "origins": origins}
                )
            continue
        m = _SIM_REMV.match(line)
        if m:
            if m.group("pkg") not in removed_names:
                removed_names.add(m.group("pkg"))
                removed.append({"package": m.group("pkg"), "version": m.group("old")})
            continue
        m = _DPKG_UNPACK.match(line)
        if m:
            if m.group("old") is not None:
                upgraded.append(
                    {"package": m.group("pkg"), "from": m.group("old"), "to": m.group("new")}
                )
            else:
                installed.append({"package": m.group("pkg"), "version": m.group("new")})
            continue
        m = _DPKG_REMOVE.match(line)
        if m and m.group("pkg") not in removed_names:
            removed_names.add(m.group("pkg"))
            removed.append({"package": m.group("pkg"), "version": m.group("old")})
    return {"installed": installed, "upgraded": upgraded, "removed": removed}


def is_security_origin(origin):
    """Whether an `apt-get -s` origin (`Debian-Security:12/stable-security`,
    `Ubuntu:22.04/jammy-security`) is a security archive."""
    label, _, rest = origin.partition(":")
    archive = rest.partition("/")[2]
    return "security" in label.lower() or archive.endswith("-security")


def _known_packages(packages):
    """Raises ValueError unless apt knows each name exactly.

    apt-get would read an unknown name containing `.` or `+` as a regular expression.
    `apt-cache --all-names pkgnames` lists every name apt knows (virtual packages too), and
    the check is plain set membership: no pattern matching anywhere.
    """
    argv = ["apt-cache", "--all-names", "pkgnames"]
    rc, out, err = _run(argv, TIMEOUT_QUERY)
    if rc != 0:
        raise _failed(argv, rc, err, out)
    known = set(out.split())
    unknown = [p for p in packages if _PACKAGE_RE.match(p).group("name") not in known]
    if unknown:
        raise ValueError(
            "unknown package%s: %s (not in apt's package lists; run celeroot.apt.update?)"
            % ("s" if len(unknown) > 1 else "", ", ".join(unknown))
        )


def _apt_get(action, args, dry_run, timeout):
    """Runs `apt-get [-s] ACTION ARGS...` and returns the structured result.

    Raises RuntimeError (with the stderr tail) when apt-get fails.
    """
    argv = ["apt-get", *_APT_OPTIONS]
    if dry_run:
        argv.append("-s")
    argv += [action, *args]
    rc, out, err = _run(argv, TIMEOUT_SIMULATE if dry_run else timeout)
    if rc != 0:
        raise _failed(argv, rc, err, out)
    changes = parse_apt_output(out)
    return {
        "host": _host(),
        "command": argv,
        "dry_run": dry_run,
        "returncode": rc,
        "changed": any(changes.values()),
        **changes,
        "warnings": _warnings(err),
        "stderr_tail": _tail(err),
    }


# ---------------------------------------------------------------------------------------
# APT tasks


@app.task(name="celeroot.apt.update")
def apt_update():
    """`apt-get update`: refresh the package lists.

    Returns {host, command, returncode, fetched, hit, errors, warnings, stderr_tail}; apt's
    `Err:` lines (a source that could not be fetched) are listed in `errors`.
    """
    argv = ["apt-get", *_APT_OPTIONS, "update"]
    rc, out, err = _run(argv, TIMEOUT_UPDATE)
    if rc != 0:
        raise _failed(argv, rc, err, out)
    lines = out.splitlines()
    return {
        "host": _host(),
        "command": argv,
        "returncode": rc,
        "fetched": sum(1 for line in lines if line.startswith("Get:")),
        "hit": sum(1 for line in lines if line.startswith("Hit:")),
        "errors": [line for line in lines if line.startswith("Err:")],
        "warnings": _warnings(err),
        "stderr_tail": _tail(err),
    }


@app.task(name="celeroot.apt.install")
def apt_install(packages, dry_run=False):
    """`apt-get install PACKAGE...` (`-s` with dry_run).

    Returns {host, command, dry_run, returncode, changed, installed, upgraded, removed,
    warnings, stderr_tail}; with dry_run, what a real run would change.
    """
    dry_run = _flag("dry_run", dry_run)
    packages = validate_packages(packages)
    _known_packages(packages)
    return {
        "action": "install",
        "packages": packages,
        **_apt_get("install", packages, dry_run, TIMEOUT_CHANGE),
    }


@app.task(name="celeroot.apt.remove")
def apt_remove(packages, dry_run=False):
    """`apt-get remove PACKAGE...` (`-s` with dry_run); configuration files are kept.

    Returns the same structure as celeroot.apt.install.
    """
    dry_run = _flag("dry_run", dry_run)
    packages = validate_packages(packages)
    _known_packages(packages)
    return {
        "action": "remove",
        "packages": packages,
        **_apt_get("remove", packages, dry_run, TIMEOUT_CHANGE),
    }


@app.task(name="celeroot.apt.upgrade")
def apt_upgrade(dry_run=False):
    """`apt-get upgrade` (`-s` with dry_run): upgrade installed packages; never installs new
    packages nor removes any (held-back packages stay as they are).

    Returns the same structure as celeroot.apt.install.
    """
    dry_run = _flag("dry_run", dry_run)
    return {"action": "upgrade", **_apt_get("upgrade", [], dry_run, TIMEOUT_CHANGE)}


@app.task(name="celeroot.apt.check_security_updates")
def apt_check_security_updates(apply=False):
    """List the upgradable packages whose candidate comes from a security archive; with
    apply=True, upgrade just those (`apt-get install --only-upgrade`).

    Reads the current package lists: schedule celeroot.apt.update before it. Returns
    {host, apply, count, security_updates: [{package, from, to, origins}],
    other_upgrades, applied}; `applied` is the install result when apply=True and there
    was something to upgrade, else null.
    """
    apply = _flag("apply", apply)
    check = _apt_get("upgrade", [], True, TIMEOUT_SIMULATE)
    security = [
        u for u in check["upgraded"] if any(is_security_origin(o) for o in u.get("origins", []))
    ]
    result = {
        "action": "check_security_updates",
        "host": _host(),
        "apply": apply,
        "count": len(security),
        "security_updates": security,
        "other_upgrades": len(check["upgraded"]) - len(security),
        "warnings": check["warnings"],
        "applied": None,
    }
    if apply and security:
        # Names come from apt's own output; validate them anyway before they become argv.
        names = validate_packages([u["package"] for u in security])
        result["applied"] = _apt_get("install", ["--only-upgrade", *names], False, TIMEOUT_CHANGE)
    return result
