//! A real Redis Sentinel deployment on loopback: one master, one replica and three
//! sentinels (`redis-server --sentinel`), each its own process on a free port. Like
//! `redis.rs`, a missing `redis-server` fails the test loudly.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::RedisServer;

/// The master name the sentinels monitor.
pub const MASTER: &str = "celeroot-test";

/// How long the sentinels wait before they call a silent master down.
pub const DOWN_AFTER_MS: u64 = 1000;

pub struct SentinelSet {
    /// The data nodes; which one is the master changes with a failover.
    pub nodes: Vec<RedisServer>,
    sentinels: Vec<(Child, u16)>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    /// A master, one replica in sync with it, and three sentinels that agree on it.
    pub fn start() -> SentinelSet {
        let master = RedisServer::start();
        let replica = RedisServer::start_with(
            &["--replicaof", "127.0.0.1", &master.port.to_string()],
            None,
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = super::daemon::free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {mport} 2\n\
                     sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {MASTER} 10000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir = dir.path().display(),
                    mport = master.port
                ),
            )
            .expect("write sentinel.conf");
            let child = Command::new(super::redis::redis_server_binary())
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server --sentinel (apt-get install redis-server)");
            sentinels.push((child, port));
        }
        let set = SentinelSet {
            nodes: vec![master, replica],
            sentinels,
            _dir: dir,
        };
        set.wait_until("the replica is in sync and every sentinel sees it", || {
            set.replica_in_sync(1) && set.sentinels_agree(set.nodes[0].port, true)
        });
        set
    }

    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/celeroot-test/0`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER}/0", hosts.join(","))
    }

    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(_, p)| *p).collect()
    }

    /// The master's port as the first answering sentinel names it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinel_ports().into_iter().find_map(|p| {
            let mut c = redis::Client::open(format!("redis://127.0.0.1:{p}"))
                .ok()?
                .get_connection_with_timeout(Duration::from_millis(500))
                .ok()?;
            let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER)
                .query(&mut c)
                .ok()?;
            addr.map(|(_, port)| port)
        })
    }

    /// SIGKILLs the current master (as the sentinels name it); returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port().expect("a master");
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill();
        }
        port
    }

    /// Waits until every sentinel names a master other than `old`, and that node says it
    /// is a master.
    pub fn wait_failover(&self, old: u16) -> u16 {
        let mut new = 0;
        self.wait_until("the sentinels promote the replica", || {
            match self.master_port() {
                Some(p) if p != old && self.sentinels_agree(p, false) => {
                    new = p;
                    role(p).as_deref() == Some("master")
                }
                _ => false,
            }
        });
        new
    }

    fn sentinels_agree(&self, port: u16, with_replica: bool) -> bool {
        self.sentinel_ports().into_iter().all(|p| {
            let Ok(mut c) = redis::Client::open(format!("redis://127.0.0.1:{p}"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
            else {
                return false;
            };
            let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER)
                .query(&mut c)
                .unwrap_or(None);
            let replicas: Vec<Vec<String>> = if with_replica {
                redis::cmd("SENTINEL")
                    .arg("replicas")
                    .arg(MASTER)
                    .query(&mut c)
                    .unwrap_or_default()
            } else {
                vec![vec![]]
            };
            addr.is_some_and(|(_, mp)| mp == port) && !replicas.is_empty()
        })
    }

    fn replica_in_sync(&self, want: usize) -> bool {
        let Ok(mut c) = redis::Client::open(self.nodes[0].url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
        else {
            return false;
        };
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut c)
            .unwrap_or_default();
        info.lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .count()
            >= want
    }

    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting until {what}");
    }
}

/// What `ROLE` says on a loopback port (`None` when nothing answers).
pub fn role(port: u16) -> Option<String> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    let r: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).ok()?;
    match r.first() {
        Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for (c, _) in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
