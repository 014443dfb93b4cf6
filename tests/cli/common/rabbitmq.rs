//! A real `rabbitmq-server` per test (Debian's package), on free loopback ports, with its
//! own node name, data directory and Erlang cookie. A missing server fails the test
//! loudly (scripts/test.sh installs it).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The broker's user (set by `default_user`, so no `rabbitmqctl add_user` is needed).
pub const USER: &str = "celeroot";
/// Its password: tests check it never shows.
pub const PASSWORD: &str = "amqp-s3cret-pw";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct RabbitMq {
    child: Child,
    pub port: u16,
    node: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn server_binary() -> PathBuf {
    for p in [
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        "/usr/sbin/rabbitmq-server",
    ] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("rabbitmq-server is not installed: run ./scripts/test.sh (it installs Debian's rabbitmq-server), or apt-get install rabbitmq-server");
}

impl RabbitMq {
    pub fn start() -> RabbitMq {
        let bin = server_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let dist = free_port();
        let node = format!(
            "celeroot-test-{}-{}@localhost",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let d = dir.path();
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{port}\ndefault_user = {USER}\ndefault_pass = {PASSWORD}\nlog.file.level = info\nlog.console = false\n"
            ),
        )
        .expect("write rabbitmq.conf");
        std::fs::write(d.join("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        let log = std::fs::File::create(d.join("server.out")).expect("server log");
        let mut cmd = Command::new(&bin);
        Self::env(&mut cmd, d, &node);
        cmd.env("RABBITMQ_DIST_PORT", dist.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mq = RabbitMq {
            child,
            port,
            node,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "rabbitmq-server did not listen on 127.0.0.1:{port} within 60 s:\n{}",
                mq.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        mq
    }

    /// What every rabbitmq-server and rabbitmqctl of this node gets: its own HOME (so its
    /// own Erlang cookie), directories and name; epmd on loopback only.
    fn env(cmd: &mut Command, d: &Path, node: &str) {
        cmd.env("HOME", d)
            .env("RABBITMQ_NODENAME", node)
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
    }

    /// `amqp://celeroot:PASSWORD@127.0.0.1:PORT//` (virtual host `/`).
    pub fn url(&self) -> String {
        format!("amqp://{USER}:{PASSWORD}@127.0.0.1:{}//", self.port)
    }

    /// `rabbitmqctl -n NODE ARGS...`; its stdout, or a panic with its stderr.
    pub fn ctl(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        Self::env(&mut cmd, self.dir.path(), &self.node);
        let out = cmd
            .arg("-n")
            .arg(&self.node)
            .arg("-q")
            .args(args)
            .output()
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `(name, type, messages)` of every queue.
    pub fn queues(&self) -> Vec<(String, String, u64)> {
        self.ctl(&[
            "list_queues",
            "--no-table-headers",
            "name",
            "type",
            "messages",
        ])
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((
                it.next()?.to_string(),
                it.next()?.to_string(),
                it.next()?.parse().ok()?,
            ))
        })
        .collect()
    }

    /// The messages ready in `queue` now (a passive `queue.declare` with py-amqp from
    /// the pinned virtualenv; `list_queues` counts lag by seconds), or None when the
    /// queue does not exist.
    pub fn ready(&self, queue: &str) -> Option<u64> {
        let out = Command::new(crate::common::celery::python())
            .args([
                "-c",
                "import sys, amqp\nc = amqp.Connection('127.0.0.1:%s' % sys.argv[1], userid=sys.argv[2], password=sys.argv[3])\nc.connect()\ntry:\n    print(c.channel().queue_declare(sys.argv[4], passive=True).message_count)\nexcept amqp.exceptions.NotFound:\n    print('none')\nc.close()",
                &self.port.to_string(),
                USER,
                PASSWORD,
                queue,
            ])
            .output()
            .expect("python");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default()
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        // The script, erl and beam share the process group (epmd daemonizes on its own
        // and serves the other nodes too).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}
