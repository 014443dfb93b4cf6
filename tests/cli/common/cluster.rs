//! A real Redis Cluster on loopback: three masters (`redis-server --cluster-enabled yes`)
//! joined by `redis-cli --cluster create`, and the commands a resharding runs, to move
//! one slot between masters while celeroot works. A missing `redis-server` or
//! `redis-cli` fails the test loudly.

use std::process::Command;
use std::time::{Duration, Instant};

use super::redis::RedisServer;

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

fn conn(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect")
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                    None,
                )
            })
            .collect();
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = cmd
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create (apt-get install redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cluster.ports().iter().all(|p| {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut conn(*p))
                .unwrap_or_default();
            info.contains("cluster_state:ok")
        }) {
            assert!(
                Instant::now() < deadline,
                "the cluster never reached cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn(self.ports()[0]))
            .expect("CLUSTER KEYSLOT")
    }

    /// The port of the master serving `slot`, as every node agrees.
    pub fn owner(&self, slot: u16) -> u16 {
        let views: Vec<Option<u16>> = self.ports().iter().map(|p| view_of(*p, slot)).collect();
        assert!(
            views.iter().all(|v| *v == views[0]) && views[0].is_some(),
            "the nodes disagree on slot {slot}: {views:?}"
        );
        views[0].unwrap_or_default()
    }

    fn id(port: u16) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut conn(port))
            .expect("CLUSTER MYID")
    }

    /// The first half of a resharding of `slot` from `from` to `to`: the slot is marked
    /// migrating and importing, and up to `keys` of its keys are moved (`MIGRATE`).
    pub fn begin_move(&self, slot: u16, from: u16, to: u16, keys: usize) {
        let (from_id, to_id) = (Self::id(from), Self::id(to));
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(&from_id)
            .query(&mut conn(to))
            .expect("SETSLOT IMPORTING");
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&to_id)
            .query(&mut conn(from))
            .expect("SETSLOT MIGRATING");
        self.migrate_keys(slot, from, to, keys);
    }

    fn migrate_keys(&self, slot: u16, from: u16, to: u16, mut left: usize) {
        let mut c = conn(from);
        while left > 0 {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(left.min(100))
                .query(&mut c)
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                return;
            }
            left -= keys.len();
            let _: redis::Value = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut c)
                .expect("MIGRATE");
        }
    }

    /// The second half: every remaining key moved, and every node told the new owner.
    pub fn finish_move(&self, slot: u16, from: u16, to: u16) {
        self.migrate_keys(slot, from, to, usize::MAX);
        let to_id = Self::id(to);
        for p in [to, from] {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&to_id)
                .query(&mut conn(p))
                .expect("SETSLOT NODE");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ports().iter().all(|p| view_of(*p, slot) == Some(to)) {
            // Gossip carries the new owner to the third node.
            assert!(
                Instant::now() < deadline,
                "the nodes never agreed on the slot's new owner"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every key on node `port`.
    pub fn keys_on(&self, port: u16, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut conn(port))
            .expect("KEYS")
    }
}

/// The port that node `port` says serves `slot` (`CLUSTER SLOTS`).
fn view_of(port: u16, slot: u16) -> Option<u16> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut conn(port))
        .ok()?;
    slots.iter().find_map(|v| {
        let redis::Value::Array(r) = v else {
            return None;
        };
        let (Some(redis::Value::Int(s)), Some(redis::Value::Int(e)), Some(redis::Value::Array(m))) =
            (r.first(), r.get(1), r.get(2))
        else {
            return None;
        };
        if i64::from(slot) < *s || i64::from(slot) > *e {
            return None;
        }
        match m.get(1) {
            Some(redis::Value::Int(p)) => u16::try_from(*p).ok(),
            _ => None,
        }
    })
}
