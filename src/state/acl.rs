//! The Redis ACL users of one host: its agent's and its Celery worker's.
//!
//! Owns: the user names, the exact rules each user gets (keys, channels, commands), and
//! creating, rotating, refreshing and deleting them. docs/security.md explains the rules.
//! Must not know: how a password reaches the host (the CLI and `deploy` ship it), YAML,
//! or output formats.

use redis::Value;

use super::keys::Keys;
use super::store::Store;
use super::StateError;

/// The commands an agent's ACL user may run (docs/agent.md).
pub const AGENT_COMMANDS: &[&str] = &[
    "+ping",
    "+hello",
    "+auth",
    "+client|setname",
    "+hgetall",
    "+hset",
    "+expire",
    "+multi",
    "+exec",
    "+subscribe",
    "+unsubscribe",
    // redis-rs sends it when a pub/sub connection is dropped.
    "+punsubscribe",
];

/// The commands a Celery worker's ACL user may run: what celery 5.7 / kombu 5.7 on the
/// Redis transport send while a worker starts, consumes, acknowledges, stores results,
/// answers and sends control commands (`celery inspect ping`), and restores unacked
/// messages at shutdown (observed with `MONITOR` and proven by
/// `tests/cli/test_agent.rs::a_worker_runs_with_its_own_acl_user_and_nothing_more`,
/// which checks that `ACL LOG` records no denial).
pub const WORKER_COMMANDS: &[&str] = &[
    "+ping",
    "+hello",
    "+auth",
    "+client|setname",
    "+client|id",
    "+quit",
    "+multi",
    "+exec",
    "+discard",
    "+watch",
    "+unwatch",
    "+brpop",
    "+lpush",
    "+rpush",
    "+llen",
    "+del",
    "+sadd",
    "+srem",
    "+smembers",
    "+zadd",
    "+zrem",
    "+zrange",
    "+zrangebyscore",
    "+zrevrangebyscore",
    "+hset",
    "+hdel",
    "+hget",
    "+get",
    "+set",
    "+setex",
    "+time",
    "+publish",
    "+subscribe",
    "+unsubscribe",
    "+psubscribe",
    "+punsubscribe",
    "+evalsha",
    "+eval",
    "+script|load",
    "+script|exists",
];

/// kombu's separator between a queue name and its priority (`Q\x06\x163`).
const PRIORITY_SEP: &str = "\x06\x16";

/// The ACL user of one host's agent: `celeroot.<cluster>.<host>`. Cluster and host names
/// are RFC 1123 labels, which never hold a `.`, so no two (cluster, host) pairs share a
/// user (with `-`, `production`/`web-01` and `production-web`/`01` did).
pub fn agent_user(cluster: &str, host: &str) -> String {
    format!("celeroot.{cluster}.{host}")
}

/// The ACL user of one host's Celery worker: `celeroot.<cluster>.<host>.worker` (four
/// dot-separated parts, so never an agent's name).
pub fn worker_user(cluster: &str, host: &str) -> String {
    format!("celeroot.{cluster}.{host}.worker")
}

/// The agent user name before issue 14 (`celeroot-<cluster>-<host>`), still deleted
/// with its host.
fn legacy_agent_user(cluster: &str, host: &str) -> String {
    format!("celeroot-{cluster}-{host}")
}

/// The agent's rules (after `reset`): read its own worker configuration, write its own
/// heartbeat, listen for changes, and the commands it sends.
pub fn agent_rules(keys: &Keys, host: &str) -> Vec<String> {
    let mut rules = vec![
        format!("%R~{}", keys.worker(host)),
        format!("%W~{}", keys.heartbeat(host)),
        format!("&{}", keys.changes()),
    ];
    rules.extend(AGENT_COMMANDS.iter().map(|c| (*c).to_string()));
    rules
}

/// A Celery worker's rules (after `resetkeys resetchannels -@all`) for the worker of
/// `host` consuming `queues` with the broker in database `db`. Every key pattern is
/// literal but for the parts Celery makes up at run time (the node's host name, reply
/// queue and event receiver ids, task ids):
///
/// - each queue `Q` and its priority lists `Q\x06\x16?`, and its kombu bindings;
/// - the bindings of Celery's control (`celery.pidbox`, `reply.celery.pidbox`) and event
///   (`celeryev`) exchanges, and kombu's `_kombu.binding_deadlines`;
/// - kombu's ack emulation (`unacked`, `unacked_index`, `unacked_mutex`: shared by every
///   worker of the database, a limit of kombu's design);
/// - its own control mailbox `<host>@*.celery.pidbox`, reply queues
///   `*.reply.celery.pidbox`, event receiver queues `celeryev.*`;
/// - results `celery-task-meta-*` and `celery-taskset-meta-*`;
/// - channels: the control and event fanouts of database `db`, and the result channels.
pub fn worker_rules(host: &str, queues: &[String], db: i64) -> Vec<Vec<u8>> {
    let mut keys: Vec<String> = Vec::new();
    for q in queues {
        keys.push(q.clone());
        keys.push(format!("{q}{PRIORITY_SEP}?"));
    }
    for exchange in queues.iter().map(String::as_str).chain([
        "celery.pidbox",
        "reply.celery.pidbox",
        "celeryev",
    ]) {
        keys.push(format!("_kombu.binding.{exchange}"));
        keys.push(format!("_kombu.binding_permanent.{exchange}"));
    }
    keys.extend(
        [
            "_kombu.binding_deadlines",
            "unacked",
            "unacked_index",
            "unacked_mutex",
            "*.reply.celery.pidbox",
        ]
        .map(String::from),
    );
    keys.push(format!("*.reply.celery.pidbox{PRIORITY_SEP}?"));
    keys.push(format!("{host}@*.celery.pidbox"));
    keys.push(format!("{host}@*.celery.pidbox{PRIORITY_SEP}?"));
    keys.extend(["celeryev.*", "celery-task-meta-*", "celery-taskset-meta-*"].map(String::from));
    let mut rules: Vec<String> = keys.into_iter().map(|k| format!("~{k}")).collect();
    // Kombu's fanout exchanges are channels named `/<db>.<exchange>`; PSUBSCRIBE patterns
    // are matched literally, so the worker's own pattern is listed as it is sent.
    rules.extend([
        format!("&/{db}.celery.pidbox"),
        format!("&/{db}.celeryev/*"),
        format!("&/{db}.celeryev/worker.*"),
        "&celery-task-meta-*".to_string(),
    ]);
    rules.extend(WORKER_COMMANDS.iter().map(|c| (*c).to_string()));
    rules.into_iter().map(String::into_bytes).collect()
}

/// The name of the credentials file `hosts credentials --install` writes on a host, in
/// `<targetDir>/shared/` (mode 0600), and the agent reads.
pub const CREDENTIALS_FILE: &str = "credentials.env";

/// The variables of a credentials file.
pub const CREDENTIAL_VARS: &[&str] = &[
    "CELEROOT_REDIS_URL",
    "CELEROOT_BROKER_URL",
    "CELEROOT_RESULT_BACKEND",
];

/// A credentials file: the agent's URL and its worker's broker and result backend.
pub fn credentials_file(agent_url: &str, worker_url: &str) -> String {
    format!(
        "# Written by `celeroot hosts credentials --install`; do not edit or copy.\n\
         CELEROOT_REDIS_URL={agent_url}\nCELEROOT_BROKER_URL={worker_url}\nCELEROOT_RESULT_BACKEND={worker_url}\n"
    )
}

/// The variables of a credentials file's text (`KEY=value` lines; comments and unknown
/// names are ignored).
pub fn parse_credentials_file(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| CREDENTIAL_VARS.contains(&k.trim()))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A fingerprint of a credentials file's text (16 hex digits of its SHA-256): in the
/// heartbeat, it says which credentials a host runs with without saying them (the text
/// holds two 192-bit random passwords).
pub fn fingerprint(text: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
}

/// What to do with a user's passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passwords {
    /// A new user; refused when it exists.
    Create,
    /// Replace every password (the old ones stop working at once).
    Replace,
    /// Add one, keeping the old ones (the first half of a rotation without a gap).
    Add,
    /// Keep only this one (the second half).
    KeepOnly,
}

impl Store {
    /// Creates or updates the agent's and the worker's ACL users of `host` (the worker's
    /// consuming `queues`), with `passwords` applied to `agent_password` and
    /// `worker_password` respectively. Returns the two user names.
    ///
    /// # Errors
    /// [`StateError::AclUserExists`] when creating and a user exists; Redis errors (for
    /// example when the connection's user may not run `ACL SETUSER`).
    pub fn set_host_users(
        &mut self,
        host: &str,
        queues: &[String],
        agent_password: &str,
        worker_password: &str,
        passwords: Passwords,
    ) -> Result<(String, String), StateError> {
        let cluster = self.cluster().to_string();
        let agent = agent_user(&cluster, host);
        let worker = worker_user(&cluster, host);
        if passwords == Passwords::Create {
            for user in [&agent, &worker] {
                if self.acl_user_exists(user)? {
                    return Err(StateError::AclUserExists { user: user.clone() });
                }
            }
        }
        // A new or replaced user starts from `reset` (no password, no rights, off); an
        // added or kept password leaves the others' state and only resets the rights.
        let start: &[&str] = match passwords {
            Passwords::Create | Passwords::Replace => &["reset", "on"],
            Passwords::Add | Passwords::KeepOnly => &["on", "resetkeys", "resetchannels", "-@all"],
        };
        let pass = |pw: &str| -> Vec<String> {
            match passwords {
                Passwords::Add => vec![format!(">{pw}")],
                _ => vec!["resetpass".into(), format!(">{pw}")],
            }
        };
        let agent_rules: Vec<Vec<u8>> = agent_rules(self.keys(), host)
            .into_iter()
            .map(String::into_bytes)
            .collect();
        let worker_rules = worker_rules(host, queues, self.url().db());
        for (user, password, rules) in [
            (&agent, agent_password, agent_rules),
            (&worker, worker_password, worker_rules),
        ] {
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SETUSER")
                .arg(user)
                .arg(start)
                .arg(pass(password))
                .arg(rules);
            let _: String = self.query(&mut cmd)?;
        }
        Ok((agent, worker))
    }

    /// Brings the rules of the worker users of `hosts` (name, queues) up to date with
    /// their queues, leaving passwords alone; hosts without a worker user are skipped.
    /// One pipelined round trip to find the users, one more to update those that exist.
    /// Returns how many were updated.
    ///
    /// # Errors
    /// Redis errors (for example when the connection's user may not run `ACL`).
    pub fn refresh_worker_users(
        &mut self,
        hosts: &[(&str, &[String])],
    ) -> Result<usize, StateError> {
        if hosts.is_empty() {
            return Ok(0);
        }
        let cluster = self.cluster().to_string();
        let mut find = redis::pipe();
        for (host, _) in hosts {
            find.cmd("ACL")
                .arg("GETUSER")
                .arg(worker_user(&cluster, host));
        }
        let found: Vec<Value> = self.query_pipe(&find)?;
        let db = self.url().db();
        let mut update = redis::pipe();
        let mut n = 0;
        for ((host, queues), user) in hosts.iter().zip(found) {
            if user == Value::Nil {
                continue;
            }
            update
                .cmd("ACL")
                .arg("SETUSER")
                .arg(worker_user(&cluster, host))
                .arg("resetkeys")
                .arg("resetchannels")
                .arg("-@all")
                .arg(worker_rules(host, queues, db))
                .ignore();
            n += 1;
        }
        if n > 0 {
            let () = self.query_pipe(&update)?;
        }
        Ok(n)
    }

    /// Removes one password from each of `host`'s users (a rotation whose file did not
    /// reach the host takes its new passwords back).
    ///
    /// # Errors
    /// Redis errors.
    pub fn remove_host_passwords(
        &mut self,
        host: &str,
        agent_password: &str,
        worker_password: &str,
    ) -> Result<(), StateError> {
        let cluster = self.cluster().to_string();
        for (user, pw) in [
            (agent_user(&cluster, host), agent_password),
            (worker_user(&cluster, host), worker_password),
        ] {
            let _: String = self.query(
                redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg(user)
                    .arg(format!("<{pw}")),
            )?;
        }
        Ok(())
    }

    /// Deletes the ACL users of `host` (its worker's, its agent's, and the agent's name
    /// before issue 14). Returns how many existed.
    ///
    /// # Errors
    /// Redis errors (for example when the connection's user may not run `ACL DELUSER`).
    pub fn delete_host_users(&mut self, host: &str) -> Result<u64, StateError> {
        let cluster = self.cluster().to_string();
        let mut cmd = redis::cmd("ACL");
        cmd.arg("DELUSER")
            .arg(agent_user(&cluster, host))
            .arg(worker_user(&cluster, host))
            .arg(legacy_agent_user(&cluster, host));
        self.query(&mut cmd)
    }

    /// Deletes these ACL users (a failed install takes back the users it created).
    ///
    /// # Errors
    /// Redis errors.
    pub fn delete_acl_users(&mut self, users: &[&str]) -> Result<u64, StateError> {
        self.query(redis::cmd("ACL").arg("DELUSER").arg(users))
    }

    fn acl_user_exists(&mut self, user: &str) -> Result<bool, StateError> {
        let existing: Option<Value> = self.query(redis::cmd("ACL").arg("GETUSER").arg(user))?;
        Ok(existing.is_some_and(|v| v != Value::Nil))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_file_round_trips_and_its_fingerprint_hides_it() {
        let text = credentials_file("redis://a:pw1@h:6379/0", "redis://w:pw2@h:6379/0");
        let vars = parse_credentials_file(&text);
        assert_eq!(vars["CELEROOT_REDIS_URL"], "redis://a:pw1@h:6379/0");
        assert_eq!(vars["CELEROOT_BROKER_URL"], "redis://w:pw2@h:6379/0");
        assert_eq!(vars["CELEROOT_RESULT_BACKEND"], "redis://w:pw2@h:6379/0");
        let fp = fingerprint(&text);
        assert_eq!(fp.len(), 16);
        assert!(!fp.contains("pw"));
        assert_ne!(fp, fingerprint(&text.replace("pw2", "pw3")));
        assert!(parse_credentials_file("PATH=/bin\n# x=y\n").is_empty());
    }

    #[test]
    fn user_names_never_collide() {
        assert_eq!(
            agent_user("production", "web01"),
            "celeroot.production.web01"
        );
        assert_eq!(
            worker_user("production", "web01"),
            "celeroot.production.web01.worker"
        );
        // A worker's name has four parts, an agent's three: no host is named "x.worker".
        assert_eq!(worker_user("a", "b").split('.').count(), 4);
    }

    #[test]
    fn worker_rules_name_its_own_queues_and_nothing_of_other_hosts() {
        let queues = vec!["web".to_string(), "celeroot.host.web01".to_string()];
        let rules: Vec<String> = worker_rules("web01", &queues, 0)
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r).into_owned())
            .collect();
        for r in [
            "~web",
            "~web\x06\x16?",
            "~celeroot.host.web01",
            "~_kombu.binding.web",
            "~web01@*.celery.pidbox",
            "&/0.celeryev/worker.*",
            "+brpop",
        ] {
            assert!(rules.iter().any(|x| x == r), "{r:?} in {rules:?}");
        }
        // No rule reaches a queue by prefix (web* would match webhooks), celeroot's own
        // keys, RedBeat, or an admin command.
        for r in &rules {
            assert!(
                !r.starts_with("~web*") && !r.contains("celeroot:{"),
                "{r:?}"
            );
            assert!(
                !r.starts_with("+@") && !r.contains("flush") && !r.contains("acl"),
                "{r:?}"
            );
            assert!(
                !r.starts_with("~*") || r.starts_with("~*.reply.celery.pidbox"),
                "{r:?}"
            );
        }
        let db3 = worker_rules("web01", &queues, 3);
        assert!(db3.iter().any(|r| r == b"&/3.celery.pidbox"));
    }
}
