//! `TestEnv`: one test's world (a git repository, optionally a real redis-server) and the
//! real binary run in it, its stdout, stderr and exit status returned as one normalised
//! string for an inline snapshot, jj style. What differs from run to run (temp paths,
//! the Redis port, durations, wall-clock times, task ids, lease ids) is replaced by a
//! placeholder; everything else is compared byte for byte.

use regex::Regex;

use super::redis::RedisServer;
use super::{celeroot_cmd, TestRepo};

pub struct TestEnv {
    pub repo: TestRepo,
    redis: Option<RedisServer>,
    env: Vec<(String, String)>,
    /// Commits the binary made (`--commit`): their ids depend on the clock.
    made: std::cell::RefCell<Vec<String>>,
}

impl TestEnv {
    /// The bundled example, committed.
    pub fn example() -> TestEnv {
        let mut repo = TestRepo::with_example();
        repo.commit("example");
        TestEnv {
            repo,
            redis: None,
            env: Vec::new(),
            made: std::cell::RefCell::default(),
        }
    }

    /// Adds a real redis-server; commands use it through `CELEROOT_REDIS_URL`.
    pub fn with_redis(mut self) -> TestEnv {
        let redis = RedisServer::start();
        self.env.push(("CELEROOT_REDIS_URL".into(), redis.url()));
        self.redis = Some(redis);
        self
    }

    /// The redis-server's URL.
    pub fn redis_url(&self) -> String {
        self.redis
            .as_ref()
            .map(RedisServer::url)
            .unwrap_or_default()
    }

    /// Runs `celeroot ARGS` in the repository; returns the normalised transcript.
    pub fn run(&self, args: &[&str]) -> String {
        let mut c = celeroot_cmd(&self.repo.root());
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let (out, _) = super::run(c);
        self.normalise(&out)
    }

    fn normalise(&self, text: &str) -> String {
        let mut s = text.to_string();
        let committed = Regex::new(r"committed ([0-9a-f]{8})").expect("a valid pattern");
        for c in committed.captures_iter(text) {
            self.made.borrow_mut().push(c[1].to_string());
        }
        for (n, id) in self.made.borrow().iter().enumerate() {
            let full = Regex::new(&format!(r"{id}[0-9a-f]{{32}}")).expect("a valid pattern");
            s = full.replace_all(&s, format!("[COMMIT-{n}]")).into_owned();
            s = s.replace(id.as_str(), &format!("[COMMIT-{n}]"));
        }
        let root = self.repo.root();
        if let Ok(real) = root.canonicalize() {
            s = s.replace(&real.display().to_string(), "[REPO]");
        }
        s = s.replace(&root.display().to_string(), "[REPO]");
        if let Some(r) = &self.redis {
            s = s.replace(&format!("127.0.0.1:{}", r.port), "127.0.0.1:[PORT]");
        }
        let rules = [
            // Temp files and dirs outside the repository.
            (r"/tmp/[\w.\-/]+", "[TMP]"),
            // Task ids.
            (
                r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                "[UUID]",
            ),
            // Wall-clock times (the pinned clock, 2026-11-23T12:00:00Z, stays).
            (r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]"),
            (r"\b\d+ ms\b", "[N] ms"),
            (r"\b\d+ms\b", "[N]ms"),
            (r"\b\d+s ago\b", "[N]s ago"),
            (r"\(pid \d+\)", "(pid [PID])"),
        ];
        for (pattern, with) in rules {
            let re = Regex::new(pattern).expect("a valid pattern");
            s = re
                .replace_all(&s, |c: &regex::Captures| {
                    if with == "[TIME]" && &c[0] == super::NOW {
                        c[0].to_string()
                    } else {
                        with.to_string()
                    }
                })
                .into_owned();
        }
        s
    }
}
