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

/// `redis://user:secret@host:6379/0` → (`redis://user:***@host:6379/0`, Some("secret")).
/// A bare `redis://secret@host` (password only) is redacted the same way.
fn redact(raw: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return (raw.to_string(), None);
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (raw.to_string(), None);
    };
    let (user, secret) = match userinfo.split_once(':') {
        Some((u, p)) => (u, p),
        None => ("", userinfo),
    };
    let shown = if user.is_empty() {
        ":***".to_string()
    } else {
        format!("{user}:***")
    };
    let secret = percent_decode(secret);
    (
        format!("{scheme}://{shown}@{host}{tail}"),
        Some(secret).filter(|s| !s.is_empty()),
    )
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
    }

    #[test]
    fn bad_urls_are_rejected_without_the_password() {
        let e = RedisUrl::parse("http://u:topsecret@host")
            .err()
            .unwrap_or_default();
        assert!(!e.contains("topsecret"), "{e}");
    }
}
