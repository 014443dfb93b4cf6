//! A real `redis-server` per test, on a free loopback port, in its own temp dir.
//! A missing `redis-server` fails the test loudly (scripts/test.sh installs it).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    password: Option<String>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

pub fn redis_server_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/bin",
        "/usr/local/bin",
        "/usr/sbin",
    ]) {
        let p = PathBuf::from(dir).join("redis-server");
        if p.is_file() {
            return p;
        }
    }
    panic!("redis-server is not installed: run ./scripts/test.sh (it installs Debian's redis-server), or apt-get install redis-server");
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[], None)
    }

    /// A server with `requirepass` set.
    pub fn with_password(password: &str) -> RedisServer {
        Self::start_with(&[], Some(password))
    }

    /// A server with extra configuration arguments (`--appendonly yes`, ...).
    pub fn start_with(extra: &[&str], password: Option<&str>) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = RedisServer {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(std::string::ToString::to_string).collect(),
            password: password.map(String::from),
        };
        s.boot(None);
        s
    }

    fn boot(&mut self, port: Option<u16>) {
        let bin = redis_server_binary();
        for _ in 0..5 {
            let port = port.unwrap_or_else(free_port);
            let mut cmd = Command::new(&bin);
            cmd.arg("--port")
                .arg(port.to_string())
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--dir")
                .arg(self.dir.path())
                .arg("--save")
                .arg("")
                .arg("--daemonize")
                .arg("no")
                .args(&self.extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(p) = &self.password {
                cmd.arg("--requirepass").arg(p);
            }
            let child = cmd.spawn().expect("spawn redis-server");
            self.child = Some(child);
            self.port = port;
            if self.wait_ready() {
                return;
            }
            self.kill();
        }
        panic!("redis-server did not start");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return false;
                }
            }
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
                {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The URL with credentials when a password is set.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// A connection for assertions and out-of-band edits.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect")
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and directory (with persistence, the data survives).
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.boot(Some(port));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
