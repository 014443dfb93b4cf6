//! Redis URLs that never show their password.

use std::fmt;

/// A Redis URL (`redis://`, `rediss://`, `redis+unix://`). `Display` and `Debug` show it
/// with the password replaced by `***`.
#[derive(Clone)]
pub struct RedisUrl {
    raw: String,
    redacted: String,
    secret: Option<String>,
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
        let url = RedisUrl {
            raw: parts.normalized(),
            redacted: parts.redacted(),
            secret: parts.secret(),
        };
        match redis::IntoConnectionInfo::into_connection_info(url.raw.as_str()) {
            Ok(_) => Ok(url),
            Err(e) => {
                let detail = url.scrub(&e.to_string());
                // A library message might quote a fragment of a password: with a password
                // in the URL, say only what to check.
                let detail = if url.secret.is_some() {
                    "check the scheme (redis://, rediss://, redis+unix://), host, port and database"
                        .to_string()
                } else {
                    detail
                };
                Err(format!("invalid Redis URL {}: {detail}", url.redacted))
            }
        }
    }

    /// The database number the URL selects (0 when it names none).
    pub fn db(&self) -> i64 {
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
        if let Some(s) = self.secret.as_deref().filter(|s| !s.is_empty()) {
            out = out.replace(s, "***");
        }
        out
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

    fn is_unix(&self) -> bool {
        matches!(self.scheme.as_deref(), Some("unix" | "redis+unix"))
    }

    fn secret(&self) -> Option<String> {
        let from_userinfo = self
            .userinfo
            .as_ref()
            .and_then(|(_, p)| p.as_ref())
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let from_query = self
            .query
            .iter()
            .rev()
            .find(|(k, _)| k == "pass" || k == "password")
            .map(|(_, v)| String::from_utf8_lossy(&decode(v)).into_owned());
        from_userinfo.or(from_query).filter(|s| !s.is_empty())
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
                    if redact && (k == "pass" || k == "password") {
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

    proptest::proptest! {
        /// No input panics, and a password never appears in the redacted form or in an
        /// error message.
        #[test]
        fn no_url_panics_or_shows_its_password(
            scheme in "(redis|rediss|redis\\+unix|unix|http|)",
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
