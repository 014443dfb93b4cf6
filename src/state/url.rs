//! Redis URLs that never show their password, and the one way to open a connection from
//! one: directly, to the master that Redis Sentinel names (`redis+sentinel://`), or to a
//! node of a Redis Cluster (`redis+cluster://`).

use std::fmt;
use std::time::Duration;

/// The scheme of a URL that names sentinels and a master (docs/operations.md, "High
/// availability").
pub const SENTINEL_SCHEME: &str = "redis+sentinel";

/// The scheme of a URL that names nodes of a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster";

/// A Redis URL (`redis://`, `rediss://`, `redis+unix://`, `redis+sentinel://`,
/// `redis+cluster://`). `Display` and `Debug` show it with every password replaced by
/// `***`.
#[derive(Clone)]
pub struct RedisUrl {
    raw: String,
    redacted: String,
    secrets: Vec<String>,
    sentinel: Option<SentinelTarget>,
    cluster: Option<ClusterTarget>,
}

/// What a `redis+cluster://` URL names: seed nodes of one Redis Cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTarget {
    /// Any nodes of the cluster, asked in order for the slot map.
    pub seeds: Vec<(String, u16)>,
    user: Option<String>,
    password: Option<String>,
}

/// What a `redis+sentinel://` URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The sentinels, in the order they are asked.
    pub sentinels: Vec<(String, u16)>,
    /// The master's name as the sentinels know it (`sentinel monitor NAME ...`).
    pub master: String,
    pub db: i64,
    /// Credentials for the data nodes (the master), from the user information.
    user: Option<String>,
    password: Option<String>,
    /// Credentials for the sentinels (`sentinel_username=`, `sentinel_password=`).
    sentinel_user: Option<String>,
    sentinel_password: Option<String>,
}

impl RedisUrl {
    /// Parses and checks a URL without connecting. A password may hold any character:
    /// the user information runs to the last `@`, and what URL syntax does not allow in
    /// it (`/`, `?`, `#`, `@`, a `%` not followed by two hex digits) is percent-encoded
    /// before the client library sees it. Never panics, and no message shows the password.
    ///
    /// # Errors
    /// A message naming the redacted URL and what is wrong with it.
    pub fn parse(raw: &str) -> Result<RedisUrl, String> {
        let parts = Parts::split(raw);
        let mut url = RedisUrl {
            raw: parts.normalized(),
            redacted: parts.redacted(),
            secrets: parts.secrets(),
            sentinel: None,
            cluster: None,
        };
        if parts.scheme.as_deref() == Some(CLUSTER_SCHEME) {
            return match ClusterTarget::from_parts(&parts) {
                Ok(t) => {
                    url.cluster = Some(t);
                    Ok(url)
                }
                Err(detail) => Err(format!(
                    "invalid Redis URL {}: {detail} (expected {CLUSTER_SCHEME}://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...])",
                    url.redacted
                )),
            };
        }
        if parts.scheme.as_deref() == Some(SENTINEL_SCHEME) {
            return match SentinelTarget::from_parts(&parts) {
                Ok(t) => {
                    url.sentinel = Some(t);
                    Ok(url)
                }
                Err(detail) => Err(format!(
                    "invalid Redis URL {}: {detail} (expected {SENTINEL_SCHEME}://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB])",
                    url.redacted
                )),
            };
        }
        match redis::IntoConnectionInfo::into_connection_info(url.raw.as_str()) {
            Ok(_) => Ok(url),
            Err(e) => {
                let detail = url.scrub(&e.to_string());
                // A library message might quote a fragment of a password: with a password
                // in the URL, say only what to check.
                let detail = if url.secrets.is_empty() {
                    detail
                } else {
                    "check the scheme (redis://, rediss://, redis+unix://, redis+sentinel://), host, port and database"
                        .to_string()
                };
                Err(format!("invalid Redis URL {}: {detail}", url.redacted))
            }
        }
    }

    /// The database number the URL selects (0 when it names none).
    pub fn db(&self) -> i64 {
        if let Some(t) = &self.sentinel {
            return t.db;
        }
        if self.cluster.is_some() {
            return 0;
        }
        redis::IntoConnectionInfo::into_connection_info(self.raw.as_str())
            .map_or(0, |i| i.redis_settings().db())
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The real URL, for the client library only.
    pub(crate) fn expose(&self) -> &str {
        &self.raw
    }

    /// The sentinels and master a `redis+sentinel://` URL names.
    pub fn sentinel(&self) -> Option<&SentinelTarget> {
        self.sentinel.as_ref()
    }

    /// Opens a connection with `timeout` for connecting and for each read and write. For
    /// a sentinel URL, asks the sentinels in order for the master (the Sentinel client
    /// protocol: `SENTINEL get-master-addr-by-name`, then `ROLE` on the node named, which
    /// must say `master`), so a connection opened after a failover reaches the new master.
    ///
    /// # Errors
    /// A message without any password: for a sentinel URL, what each sentinel answered.
    pub fn open(&self, timeout: Duration) -> Result<redis::Connection, String> {
        if let Some(t) = &self.cluster {
            let mut answers = Vec::new();
            for (host, port) in &t.seeds {
                match t.open_at(host, *port, timeout) {
                    Ok(c) => return Ok(c),
                    Err(e) => answers.push(format!("node {host}:{port}: {e}")),
                }
            }
            return Err(self.scrub(&format!(
                "no node of the Redis Cluster answered: {}",
                answers.join("; ")
            )));
        }
        let conn = match &self.sentinel {
            None => {
                let client = redis::Client::open(self.raw.as_str())
                    .map_err(|e| self.scrub(&e.to_string()))?;
                client
                    .get_connection_with_timeout(timeout)
                    .map_err(|e| self.scrub(&e.to_string()))?
            }
            Some(t) => t.open_master(timeout).map_err(|e| self.scrub(&e))?,
        };
        set_timeouts(&conn, timeout).map_err(|e| self.scrub(&e.to_string()))?;
        Ok(conn)
    }

    /// Why this URL cannot be Celery's broker, if it cannot: kombu has no Redis Cluster
    /// transport, so the broker of a cluster whose live state is on a Redis Cluster is a
    /// plain or Sentinel Redis (docs/operations.md, "High availability").
    pub fn broker_refusal(&self) -> Option<String> {
        self.cluster.as_ref().map(|_| {
            format!(
                "{} is a Redis Cluster, which cannot be Celery's broker (kombu has no Redis Cluster transport); give the broker a redis:// or redis+sentinel:// URL",
                self.redacted
            )
        })
    }

    /// The seeds a `redis+cluster://` URL names.
    pub fn cluster(&self) -> Option<&ClusterTarget> {
        self.cluster.as_ref()
    }

    /// [`RedisUrl::open`], except that on a Redis Cluster the connection goes to the
    /// master serving `key`'s slot (asked of the seeds: `CLUSTER KEYSLOT`, then `CLUSTER
    /// SLOTS`). celeroot's keys share one hash tag, so one connection serves them all;
    /// a `-MOVED` later says where the slot went ([`RedisUrl::open_node`]).
    ///
    /// # Errors
    /// A message without any password: for a cluster URL, what each seed answered.
    pub fn open_for_key(&self, key: &str, timeout: Duration) -> Result<redis::Connection, String> {
        let Some(t) = &self.cluster else {
            return self.open(timeout);
        };
        t.open_slot_owner(key, timeout).map_err(|e| self.scrub(&e))
    }

    /// A connection to one node of this URL's Redis Cluster, `HOST:PORT` as a `-MOVED` or
    /// `-ASK` reply names it, with the URL's credentials.
    ///
    /// # Errors
    /// When the URL is not a cluster URL or the node cannot be reached.
    pub fn open_node(&self, addr: &str, timeout: Duration) -> Result<redis::Connection, String> {
        let Some(t) = &self.cluster else {
            return Err(format!(
                "a redirection to {addr}, but {} is not a Redis Cluster URL",
                self.redacted
            ));
        };
        let (host, port) = match parse_hosts(addr, "redirection to")?.as_slice() {
            [one] => one.clone(),
            _ => return Err(format!("a redirection to {addr:?}, which is not HOST:PORT")),
        };
        t.open_at(&host, port, timeout)
            .map_err(|e| self.scrub(&format!("node {addr}: {e}")))
    }

    /// The same server and database with another user and password (for agents), built
    /// from the parsed parts: nothing of this URL's own credentials (user information or
    /// `user=`/`pass=` query parameters) is carried over.
    pub fn with_credentials(&self, user: &str, password: &str) -> String {
        let mut p = Parts::split(&self.raw);
        p.query
            .retain(|(k, _)| !matches!(k.as_str(), "pass" | "password" | "user" | "username"));
        if p.is_unix() {
            p.userinfo = None;
            p.query.push(("user".into(), encode(user.as_bytes())));
            p.query.push(("pass".into(), encode(password.as_bytes())));
        } else {
            p.userinfo = Some((user.as_bytes().to_vec(), Some(password.as_bytes().to_vec())));
        }
        p.normalized()
    }

    /// `text` with any occurrence of the password (or the raw URL) replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.raw, &self.redacted);
        for s in self.secrets.iter().filter(|s| !s.is_empty()) {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}

/// `HOST:PORT[,HOST:PORT...]` (IPv6 hosts in brackets); `what` names one in errors.
fn parse_hosts(list: &str, what: &str) -> Result<Vec<(String, u16)>, String> {
    let mut out = Vec::new();
    for hp in list.split(',') {
        let (host, port) = hp
            .rsplit_once(':')
            .ok_or_else(|| format!("{what} {hp:?} has no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{what} {hp:?} has no host"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{what} {hp:?} has no valid port"))?;
        out.push((host.to_string(), port));
    }
    Ok(out)
}

/// A connection to one node (a sentinel, a master, a cluster node) with its credentials
/// and database, `timeout` for connecting and for each read and write.
fn connect_node(
    host: &str,
    port: u16,
    user: Option<&String>,
    password: Option<&String>,
    db: i64,
    timeout: Duration,
) -> redis::RedisResult<redis::Connection> {
    let mut settings = redis::RedisConnectionInfo::default().set_db(db);
    if let Some(u) = user {
        settings = settings.set_username(u);
    }
    if let Some(p) = password {
        settings = settings.set_password(p);
    }
    let conn = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
        host.to_string(),
        port,
    ))
    .map(|i| i.set_redis_settings(settings))
    .and_then(redis::Client::open)
    .and_then(|c| c.get_connection_with_timeout(timeout))?;
    set_timeouts(&conn, timeout)?;
    Ok(conn)
}

impl ClusterTarget {
    fn from_parts(p: &Parts) -> Result<ClusterTarget, String> {
        let seeds = parse_hosts(&p.host, "node")?;
        match p.path.trim_matches('/') {
            "" | "0" => {}
            other => {
                return Err(format!(
                    "a Redis Cluster has only database 0, not {other:?}"
                ))
            }
        }
        if let Some((k, _)) = p.query.first() {
            return Err(format!(
                "unknown parameter {k:?} (a cluster URL takes none)"
            ));
        }
        let (user, password) = p.credentials().unwrap_or_default();
        Ok(ClusterTarget {
            seeds,
            user,
            password,
        })
    }

    fn open_at(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> redis::RedisResult<redis::Connection> {
        connect_node(
            host,
            port,
            self.user.as_ref(),
            self.password.as_ref(),
            0,
            timeout,
        )
    }

    /// Asks each seed in turn for the master of `key`'s slot and connects to it.
    fn open_slot_owner(&self, key: &str, timeout: Duration) -> Result<redis::Connection, String> {
        let mut answers = Vec::new();
        for (host, port) in &self.seeds {
            let asked = self.open_at(host, *port, timeout).and_then(|mut conn| {
                let slot: i64 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query(&mut conn)?;
                let slots: Vec<redis::Value> =
                    redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn)?;
                Ok((conn, slot, slots))
            });
            let (seed, slot, slots) = match asked {
                Ok(v) => v,
                Err(e) => {
                    answers.push(format!("node {host}:{port}: {e}"));
                    continue;
                }
            };
            match slot_master(&slots, slot) {
                Some((mhost, mport)) if (mhost.is_empty() || mhost == *host) && mport == *port => {
                    return Ok(seed)
                }
                Some((mhost, mport)) => {
                    let mhost = if mhost.is_empty() { host.clone() } else { mhost };
                    match self.open_at(&mhost, mport, timeout) {
                        Ok(c) => return Ok(c),
                        Err(e) => answers.push(format!(
                            "node {host}:{port} named {mhost}:{mport} for slot {slot}: {e}"
                        )),
                    }
                }
                None => answers.push(format!(
                    "node {host}:{port} knows no master for slot {slot} (is the cluster's slot map complete?)"
                )),
            }
        }
        Err(format!(
            "no node of the Redis Cluster served the slot of {key}: {}",
            answers.join("; ")
        ))
    }
}

/// The master `(host, port)` of `slot` in a `CLUSTER SLOTS` reply (an empty host means
/// the node that answered).
fn slot_master(slots: &[redis::Value], slot: i64) -> Option<(String, u16)> {
    use redis::Value;
    slots.iter().find_map(|range| {
        let Value::Array(r) = range else { return None };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (r.first(), r.get(1), r.get(2))
        else {
            return None;
        };
        if slot < *start || slot > *end {
            return None;
        }
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        let port = match master.get(1) {
            Some(Value::Int(p)) => u16::try_from(*p).ok()?,
            _ => return None,
        };
        Some((host, port))
    })
}

fn set_timeouts(conn: &redis::Connection, timeout: Duration) -> redis::RedisResult<()> {
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))
}

impl SentinelTarget {
    fn from_parts(p: &Parts) -> Result<SentinelTarget, String> {
        let sentinels = parse_hosts(&p.host, "sentinel")?;
        let mut segs = p.path.trim_start_matches('/').split('/');
        let master = segs.next().unwrap_or_default().to_string();
        if master.is_empty() {
            return Err("it names no master".into());
        }
        if !master
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "master name {master:?} may hold only letters, digits, '-', '_' and '.'"
            ));
        }
        let db = match segs.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| format!("database {d:?} is not a number"))?,
        };
        if let Some(extra) = segs.find(|s| !s.is_empty()) {
            return Err(format!("unexpected path segment {extra:?}"));
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let query = |key: &str| {
            p.query
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| text(&decode(v)))
        };
        for (k, _) in &p.query {
            if !matches!(
                k.as_str(),
                "sentinel_username" | "sentinel_password" | "user" | "pass" | "password"
            ) {
                return Err(format!(
                    "unknown parameter {k:?} (known: sentinel_username, sentinel_password)"
                ));
            }
        }
        let (user, password) = p
            .credentials()
            .unwrap_or_else(|| (query("user"), query("pass").or_else(|| query("password"))));
        Ok(SentinelTarget {
            sentinels,
            master,
            db,
            user,
            password,
            sentinel_user: query("sentinel_username"),
            sentinel_password: query("sentinel_password"),
        })
    }

    fn open_master(&self, timeout: Duration) -> Result<redis::Connection, String> {
        self.find(timeout, |host, port| {
            let mut conn = connect_node(
                host,
                port,
                self.user.as_ref(),
                self.password.as_ref(),
                self.db,
                timeout,
            )
            .map_err(|e| format!("master {host}:{port}: {e}"))?;
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query(&mut conn)
                .map_err(|e| format!("master {host}:{port}: ROLE: {e}"))?;
            match role.first() {
                Some(redis::Value::BulkString(r)) if r.as_slice() == b"master" => Ok(conn),
                _ => Err(format!(
                    "{host}:{port} is not a master (a failover may be in progress)"
                )),
            }
        })
        .map(|(_, conn)| conn)
    }

    /// Asks each sentinel in turn; `accept` checks the node a sentinel names.
    fn find<T>(
        &self,
        timeout: Duration,
        accept: impl Fn(&str, u16) -> Result<T, String>,
    ) -> Result<((String, u16), T), String> {
        let mut answers = Vec::new();
        let mut unknown = 0;
        let mut unreachable = 0;
        for (host, port) in &self.sentinels {
            let asked = connect_node(
                host,
                *port,
                self.sentinel_user.as_ref(),
                self.sentinel_password.as_ref(),
                0,
                timeout,
            )
            .and_then(|mut conn| {
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.master)
                    .query::<Option<(String, String)>>(&mut conn)
            });
            match asked {
                Err(e) => {
                    unreachable += 1;
                    answers.push(format!("sentinel {host}:{port}: {e}"));
                }
                Ok(None) => {
                    unknown += 1;
                    answers.push(format!(
                        "sentinel {host}:{port} knows no master named {:?}",
                        self.master
                    ));
                }
                Ok(Some((mhost, mport))) => {
                    let Ok(mport) = mport.parse::<u16>() else {
                        answers.push(format!(
                            "sentinel {host}:{port} named a master with port {mport:?}"
                        ));
                        continue;
                    };
                    match accept(&mhost, mport) {
                        Ok(v) => return Ok(((mhost, mport), v)),
                        Err(e) => answers.push(format!("sentinel {host}:{port} named {e}")),
                    }
                }
            }
        }
        if unreachable == self.sentinels.len() {
            return Err(format!(
                "none of the {} sentinel(s) answered: {}",
                self.sentinels.len(),
                answers.join("; ")
            ));
        }
        if unknown == self.sentinels.len() {
            return Err(format!(
                "no sentinel knows a master named {:?} (check the master name in the URL against `sentinel monitor`)",
                self.master
            ));
        }
        Err(format!(
            "no master {:?} found through {} sentinel(s): {}",
            self.master,
            self.sentinels.len(),
            answers.join("; ")
        ))
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted)
    }
}

/// A URL taken apart without any check: `scheme://[userinfo@]host[/path][?query]`, where
/// the user information runs to the **last** `@` (so a password may hold `@`, `/`, `?`).
struct Parts {
    /// `None` when the text has no `://`.
    scheme: Option<String>,
    /// The decoded user and password.
    userinfo: Option<(Vec<u8>, Option<Vec<u8>>)>,
    host: String,
    path: String,
    /// Raw (still encoded) key/value pairs.
    query: Vec<(String, String)>,
    /// The text as given, when it has no `://` (nothing else is known of it).
    opaque: Option<String>,
}

impl Parts {
    fn split(raw: &str) -> Parts {
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Parts {
                scheme: None,
                userinfo: None,
                host: String::new(),
                path: String::new(),
                query: Vec::new(),
                opaque: Some(raw.to_string()),
            };
        };
        let (userinfo, after) = match rest.rsplit_once('@') {
            Some((u, a)) => {
                let info = match u.split_once(':') {
                    Some((user, pass)) => (decode(user), Some(decode(pass))),
                    None => (decode(u), None),
                };
                (Some(info), a)
            }
            None => (None, rest),
        };
        let (hostpath, query) = after.split_once('?').unwrap_or((after, ""));
        let (host, path) = match hostpath.find('/') {
            Some(i) => hostpath.split_at(i),
            None => (hostpath, ""),
        };
        let query = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        Parts {
            scheme: Some(scheme.to_string()),
            userinfo,
            host: host.to_string(),
            path: path.to_string(),
            query,
            opaque: None,
        }
    }

    /// The decoded user and password of the user information (`None` without one; an
    /// empty user is none).
    fn credentials(&self) -> Option<(Option<String>, Option<String>)> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        self.userinfo.as_ref().map(|(u, pw)| {
            (
                Some(text(u)).filter(|u| !u.is_empty()),
                pw.as_deref().map(text),
            )
        })
    }

    fn is_unix(&self) -> bool {
        matches!(self.scheme.as_deref(), Some("unix" | "redis+unix"))
    }

    /// Every password the URL holds (user information and query parameters), decoded
    /// and as written.
    fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .userinfo
            .as_ref()
            .and_then(|(_, p)| p.as_ref())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .into_iter()
            .collect();
        for (k, v) in &self.query {
            if is_secret_param(k) {
                out.push(String::from_utf8_lossy(&decode(v)).into_owned());
                out.push(v.clone());
            }
        }
        out.retain(|s| !s.is_empty());
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out.dedup();
        out
    }

    fn render(&self, redact: bool) -> String {
        let Some(scheme) = &self.scheme else {
            let o = self.opaque.as_deref().unwrap_or_default();
            // Without `://` nothing says where a password would be: hide all before
            // the last `@`.
            return match o.rsplit_once('@') {
                Some((_, host)) if redact => format!("***@{host}"),
                _ => o.to_string(),
            };
        };
        let mut out = format!("{scheme}://");
        if let Some((user, pass)) = &self.userinfo {
            out.push_str(&encode(user));
            match pass {
                Some(_) if redact => out.push_str(":***"),
                Some(p) => {
                    out.push(':');
                    out.push_str(&encode(p));
                }
                None => {}
            }
            out.push('@');
        }
        out.push_str(&self.host);
        out.push_str(&self.path);
        if !self.query.is_empty() {
            out.push('?');
            let q: Vec<String> = self
                .query
                .iter()
                .map(|(k, v)| {
                    if redact && !is_shown_param(k) {
                        format!("{k}=***")
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            out.push_str(&q.join("&"));
        }
        out
    }

    fn normalized(&self) -> String {
        self.render(false)
    }

    fn redacted(&self) -> String {
        self.render(true)
    }
}

/// Query parameters whose values are passwords (matched against secrets in `scrub`).
fn is_secret_param(k: &str) -> bool {
    matches!(k, "pass" | "password" | "sentinel_password")
}

/// Query parameters shown in the redacted form; any other value (a misspelled
/// `sentinel_pasword=` too) is shown as `***`.
fn is_shown_param(k: &str) -> bool {
    matches!(
        k,
        "db" | "protocol" | "user" | "username" | "sentinel_username" | "insecure"
    )
}

/// Percent-decoding on bytes: `%` and two hex digits is one byte; anything else is kept.
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Percent-encodes every byte but RFC 3986's unreserved characters.
fn encode(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let u = RedisUrl::parse("redis://ops:s3cr%40t@127.0.0.1:6380/2")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.redacted(), "redis://ops:***@127.0.0.1:6380/2");
        assert_eq!(
            format!("{u} {u:?}"),
            "redis://ops:***@127.0.0.1:6380/2 RedisUrl(redis://ops:***@127.0.0.1:6380/2)"
        );
        assert_eq!(u.scrub("auth s3cr@t failed"), "auth *** failed");
        let p = RedisUrl::parse("rediss://:hunter2@cache.example:6379")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.redacted(), "rediss://:***@cache.example:6379");
        let plain = RedisUrl::parse("redis://127.0.0.1:6379/0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plain.redacted(), "redis://127.0.0.1:6379/0");
        let user_only =
            RedisUrl::parse("redis://ops@127.0.0.1:6379/0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user_only.redacted(), "redis://ops@127.0.0.1:6379/0");
        let unix = RedisUrl::parse("redis+unix:///run/redis.sock?db=1&pass=Hidden-1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            unix.redacted(),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(unix.scrub("bad pass Hidden-1"), "bad pass ***");
    }

    #[test]
    fn passwords_with_url_syntax_multibyte_escapes_and_unix_sockets_never_show() {
        // A `%` before a multi-byte character used to panic, printing the password.
        let u = RedisUrl::parse("redis://ops:p%\u{e9}ss\u{e9}cret@127.0.0.1:6379/0")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.redacted(), "redis://ops:***@127.0.0.1:6379/0");
        // Unencoded `/`, `?`, `#` and `@` in a password: the user information runs to the
        // last `@`, and the URL given to the client is encoded.
        for pw in ["a/b", "a?b=c", "x#y", "p@ss", "%zz", "100%"] {
            let raw = format!("redis://ops:{pw}@127.0.0.1:6379/3");
            let u = RedisUrl::parse(&raw).unwrap_or_else(|e| panic!("{pw}: {e}"));
            assert_eq!(u.redacted(), "redis://ops:***@127.0.0.1:6379/3", "{pw}");
            assert_eq!(u.scrub(&format!("auth {pw} failed")), "auth *** failed");
            let info = redis::IntoConnectionInfo::into_connection_info(u.expose())
                .unwrap_or_else(|e| panic!("{pw}: {e}"));
            assert_eq!(info.redis_settings().password(), Some(pw), "{pw}");
            assert_eq!(info.redis_settings().db(), 3);
        }
        // A unix socket URL carrying the admin password: the agent's URL carries only the
        // agent's credentials.
        let unix = RedisUrl::parse("redis+unix:///run/redis.sock?db=2&pass=AdminSecret")
            .unwrap_or_else(|e| panic!("{e}"));
        let agent = unix.with_credentials("celeroot|production|web01", "agentpw");
        assert!(!agent.contains("AdminSecret"), "{agent}");
        assert_eq!(
            agent,
            "redis+unix:///run/redis.sock?db=2&user=celeroot%7Cproduction%7Cweb01&pass=agentpw"
        );
        let tcp = RedisUrl::parse("redis://admin:AdminSecret@127.0.0.1:6379/1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            tcp.with_credentials("agent", "pw"),
            "redis://agent:pw@127.0.0.1:6379/1"
        );
    }

    #[test]
    fn bad_urls_are_rejected_without_the_password() {
        let e = RedisUrl::parse("http://u:topsecret@host")
            .err()
            .unwrap_or_default();
        assert!(!e.contains("topsecret"), "{e}");
        let e = RedisUrl::parse("redis://u:topsecret@host:notaport/0")
            .err()
            .unwrap_or_default();
        assert!(e.contains("redis://u:***@host:notaport/0"), "{e}");
        assert!(!e.contains("topsecret"), "{e}");
        let e = RedisUrl::parse("u:topsecret@host")
            .err()
            .unwrap_or_default();
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn sentinel_urls_name_sentinels_a_master_and_a_database_and_hide_every_password() {
        let u = RedisUrl::parse(
            "redis+sentinel://ops:s3cr%40t@127.0.0.1:26379,[::1]:26380/mymaster/2?sentinel_password=Sent1nel",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            u.redacted(),
            "redis+sentinel://ops:***@127.0.0.1:26379,[::1]:26380/mymaster/2?sentinel_password=***"
        );
        assert_eq!(u.scrub("AUTH s3cr@t / Sent1nel"), "AUTH *** / ***");
        assert_eq!(u.db(), 2);
        let t = u.sentinel().unwrap_or_else(|| panic!("a sentinel target"));
        assert_eq!(
            t.sentinels,
            vec![("127.0.0.1".to_string(), 26379), ("::1".to_string(), 26380)]
        );
        assert_eq!(t.master, "mymaster");
        assert_eq!(t.user.as_deref(), Some("ops"));
        assert_eq!(t.password.as_deref(), Some("s3cr@t"));
        assert_eq!(t.sentinel_password.as_deref(), Some("Sent1nel"));
        let plain = RedisUrl::parse("redis+sentinel://127.0.0.1:26379/mymaster")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plain.db(), 0);
        // An agent's URL keeps the sentinels and the master, with its own credentials.
        assert_eq!(
            u.with_credentials("agent", "pw"),
            "redis+sentinel://agent:pw@127.0.0.1:26379,[::1]:26380/mymaster/2?sentinel_password=Sent1nel"
        );
        for (bad, why) in [
            ("redis+sentinel://127.0.0.1/m", "has no port"),
            ("redis+sentinel://127.0.0.1:0/m", "no valid port"),
            ("redis+sentinel://:26379/m", "has no host"),
            ("redis+sentinel://127.0.0.1:26379", "names no master"),
            ("redis+sentinel://127.0.0.1:26379/m;x", "may hold only"),
            ("redis+sentinel://127.0.0.1:26379/m/one", "is not a number"),
            (
                "redis+sentinel://127.0.0.1:26379/m/0/extra",
                "unexpected path segment",
            ),
            (
                "redis+sentinel://127.0.0.1:26379/m?sentinel_pasword=hunter2",
                "unknown parameter \"sentinel_pasword\"",
            ),
        ] {
            let e = RedisUrl::parse(bad).err().unwrap_or_default();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("expected redis+sentinel://"), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{bad}: {e}");
        }
    }

    #[test]
    fn cluster_urls_name_seed_nodes_only_database_0_and_hide_the_password() {
        let u = RedisUrl::parse("redis+cluster://ops:pw%2Fx@127.0.0.1:7000,[::1]:7001")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            u.redacted(),
            "redis+cluster://ops:***@127.0.0.1:7000,[::1]:7001"
        );
        assert_eq!(u.scrub("auth pw/x"), "auth ***");
        assert_eq!(u.db(), 0);
        let t = u.cluster().unwrap_or_else(|| panic!("a cluster target"));
        assert_eq!(
            t.seeds,
            vec![("127.0.0.1".to_string(), 7000), ("::1".to_string(), 7001)]
        );
        assert!(u.broker_refusal().is_some_and(|w| !w.contains("pw/x")));
        assert!(RedisUrl::parse("redis://127.0.0.1:6379/0")
            .map(|u| u.broker_refusal().is_none())
            .unwrap_or(false));
        assert_eq!(
            u.with_credentials("agent", "pw"),
            "redis+cluster://agent:pw@127.0.0.1:7000,[::1]:7001"
        );
        for (bad, why) in [
            ("redis+cluster://127.0.0.1:7000/2", "only database 0"),
            ("redis+cluster://127.0.0.1", "has no port"),
            ("redis+cluster://127.0.0.1:7000?pass=hunter2", "takes none"),
        ] {
            let e = RedisUrl::parse(bad).err().unwrap_or_default();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{bad}: {e}");
        }
    }

    proptest::proptest! {
        /// No input panics, and a password never appears in the redacted form or in an
        /// error message.
        #[test]
        fn no_url_panics_or_shows_its_password(
            scheme in "(redis|rediss|redis\\+unix|redis\\+sentinel|redis\\+cluster|unix|http|)",
            user in "[a-z%\\PC]{0,6}",
            pass in "[A-Za-z0-9/?#@%:&=\\PC]{4,16}",
            host in "[a-z0-9.:\\[\\]/%?=&\\PC]{0,20}",
            any in "\\PC{0,40}",
        ) {
            let _ = RedisUrl::parse(&any).map(|u| u.redacted().to_string());
            let raw = format!("{scheme}://{user}:XQ{pass}@{host}");
            let secret = format!("XQ{pass}");
            match RedisUrl::parse(&raw) {
                Ok(u) => {
                    proptest::prop_assert!(!u.redacted().contains(&secret), "{}", u.redacted());
                    let shown = format!("{u:?}");
                    proptest::prop_assert!(!shown.contains(&secret), "{}", shown);
                }
                Err(e) => proptest::prop_assert!(!e.contains(&secret), "{}", e),
            }
        }
    }
}
