//! Following a Redis Cluster's redirections (`-MOVED`, `-ASK`, `-TRYAGAIN`,
//! `-CLUSTERDOWN`) and a demoted Sentinel master (`-READONLY`) on the store's one
//! connection.
//!
//! Owns: which replies mean "this request did not run here, ask elsewhere or later", and
//! how long to keep asking. Must not know: what the requests are (the store decides
//! which requests may be repeated: never one inside a `WATCH`ed transaction).

use std::time::Duration;

/// How long a request keeps following redirections before it fails (a slot migration by
/// `redis-cli --cluster reshard` moves a slot of a few thousand keys in well under that).
pub const REDIRECT_BUDGET: Duration = Duration::from_secs(30);

/// The first wait after `-TRYAGAIN`/`-CLUSTERDOWN`, doubled up to [`MAX_WAIT`].
pub const FIRST_WAIT: Duration = Duration::from_millis(20);

/// The longest wait between two attempts.
pub const MAX_WAIT: Duration = Duration::from_millis(500);

/// What a refused request says to do next. Each means the request did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// The slot lives on this node now (`HOST:PORT`): reconnect there.
    Moved(String),
    /// The slot is migrating and this key is on that node: ask there once, after
    /// `ASKING`.
    Ask(String),
    /// The slot is migrating with keys on both nodes, or the cluster is down: wait.
    Wait,
    /// The node is a replica now (a Sentinel failover): ask the sentinels again.
    ReadOnly,
}

impl Redirect {
    /// From an error code and its detail (`MOVED 3999 127.0.0.1:6381`).
    pub fn parse(code: &str, detail: Option<&str>) -> Option<Redirect> {
        let addr = || {
            detail
                .and_then(|d| d.split_ascii_whitespace().nth(1))
                .map(str::to_string)
        };
        match code {
            "MOVED" => addr().map(Redirect::Moved),
            "ASK" => addr().map(Redirect::Ask),
            "TRYAGAIN" | "CLUSTERDOWN" => Some(Redirect::Wait),
            "READONLY" => Some(Redirect::ReadOnly),
            _ => None,
        }
    }

    /// From a client error.
    pub fn of(e: &redis::RedisError) -> Option<Redirect> {
        Redirect::parse(e.code()?, e.detail())
    }

    /// The first redirection among pipelined replies (read with `ignore_errors`).
    pub fn in_replies(values: &[redis::Value]) -> Option<Redirect> {
        values.iter().find_map(|v| match v {
            redis::Value::ServerError(e) => Redirect::parse(e.code(), e.details()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirections_are_read_from_their_codes() {
        assert_eq!(
            Redirect::parse("MOVED", Some("3999 127.0.0.1:6381")),
            Some(Redirect::Moved("127.0.0.1:6381".into()))
        );
        assert_eq!(
            Redirect::parse("ASK", Some("3999 [::1]:6381")),
            Some(Redirect::Ask("[::1]:6381".into()))
        );
        assert_eq!(Redirect::parse("MOVED", None), None);
        assert_eq!(
            Redirect::parse(
                "TRYAGAIN",
                Some("Multiple keys request during rehashing of slot")
            ),
            Some(Redirect::Wait)
        );
        assert_eq!(Redirect::parse("CLUSTERDOWN", None), Some(Redirect::Wait));
        assert_eq!(Redirect::parse("READONLY", None), Some(Redirect::ReadOnly));
        assert_eq!(Redirect::parse("ERR", Some("unknown command")), None);
        assert_eq!(Redirect::parse("CONFLICT", Some("x")), None);
    }
}
