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
    /// Parses and checks a URL without connecting.
    ///
    /// # Errors
    /// A message naming the redacted URL and what is wrong with it.
    pub fn parse(raw: &str) -> Result<RedisUrl, String> {
        let (redacted, secret) = redact(raw);
        let url = RedisUrl {
            raw: raw.to_string(),
            redacted,
            secret,
        };
        match redis::IntoConnectionInfo::into_connection_info(raw) {
            Ok(_) => Ok(url),
            Err(e) => Err(format!(
                "invalid Redis URL {}: {}",
                url.redacted,
                url.scrub(&e.to_string())
            )),
        }
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The real URL, for the client library only.
    pub(crate) fn expose(&self) -> &str {
        &self.raw
    }

    /// The same server and database with another user and password (for agents).
    pub fn with_credentials(&self, user: &str, password: &str) -> String {
        let (scheme, rest) = self
            .raw
            .split_once("://")
            .unwrap_or(("redis", self.raw.as_str()));
        let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{user}:{password}@{hostpart}")
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

/// Hides the password in `user:password@` (or `:password@`) and in `pass=`/`password=`
/// query parameters (unix-socket URLs). A bare `user@` is a user name, shown as it is.
/// `redis://user:secret@host:6379/0` → (`redis://user:***@host:6379/0`, Some("secret")).
fn redact(raw: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return (raw.to_string(), None);
    };
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let mut secret = None;
    let authority_end = main.find('/').unwrap_or(main.len());
    let (authority, path) = main.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, pass)) => {
                secret = Some(percent_decode(pass)).filter(|s| !s.is_empty());
                format!("{user}:***@{host}")
            }
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if k == "pass" || k == "password" => {
                    secret = Some(percent_decode(v)).filter(|s| !s.is_empty());
                    format!("{k}=***")
                }
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(&q);
    }
    (out, secret)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn bad_urls_are_rejected_without_the_password() {
        let e = RedisUrl::parse("http://u:topsecret@host")
            .err()
            .unwrap_or_default();
        assert!(!e.contains("topsecret"), "{e}");
    }
}
