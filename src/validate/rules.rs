//! Syntax rules for names and values that end up in Redis keys, queues, paths or argv.
//!
//! Every rule returns `Err(expected)`, a sentence saying what is allowed.

use std::net::IpAddr;

/// RFC 1123 label: lowercase alphanumerics and `-`, 1–63 characters, alphanumeric at both ends.
pub fn rfc1123_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("expected an RFC 1123 label: 1-63 lowercase letters, digits or `-`, starting and ending with a letter or digit".into())
    }
}

/// A DNS name: dot-separated labels (letters may be upper case), at most 253 characters.
pub fn dns_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err("expected a DNS name (dot-separated labels of letters, digits and `-`)".into())
    }
}

/// An IP address or DNS name.
pub fn address(s: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let looks_numeric = s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !looks_numeric && dns_name(s).is_ok() {
        return Ok(());
    }
    Err("expected an IPv4/IPv6 address or a DNS name".into())
}

/// Label or annotation key: `[prefix/]name`, name 1–63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok = prefix.is_none_or(|p| dns_name(p).is_ok() && p == p.to_ascii_lowercase());
    if prefix_ok && label_value(name).is_ok() && !name.is_empty() {
        Ok(())
    } else {
        Err("expected a label key `[prefix/]name`: name is 1-63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit; prefix is a lowercase DNS name".into())
    }
}

/// Label value: empty, or 1–63 of `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub fn label_value(s: &str) -> Result<(), String> {
    let ok = s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err("expected a label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit".into())
    }
}

/// Dotted Python identifiers (`ops.tasks.rotate_logs`).
pub fn python_dotted_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.split('.').all(|part| {
            part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err("expected a dotted Python name such as `ops.tasks.rotate_logs` (identifiers of letters, digits and `_`, separated by `.`)".into())
    }
}

/// The prefix of queue names celeroot reserves for itself (host queues).
pub const RESERVED_QUEUE_PREFIX: &str = "celeroot.";

/// Celery queue name: 1–200 of `[A-Za-z0-9._:-]`, not under the reserved prefix.
pub fn queue_name(s: &str) -> Result<(), String> {
    if s.starts_with(RESERVED_QUEUE_PREFIX) {
        return Err(format!("queue names starting with `{RESERVED_QUEUE_PREFIX}` are reserved for celeroot's host queues"));
    }
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("expected a queue name: 1-200 letters, digits, `.`, `_`, `-` or `:`, starting with a letter or digit".into())
    }
}

/// POSIX user name as accepted by common Linux tools.
pub fn unix_user(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("expected a user name: 1-32 lowercase letters, digits, `_` or `-`, starting with a letter or `_`".into())
    }
}

/// Absolute, normalised path of safe characters (`/opt/celeroot`).
pub fn absolute_path(s: &str) -> Result<(), String> {
    let ok = s.starts_with('/')
        && s.len() <= 4096
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+' | b'@')
        })
        && s.split('/')
            .skip(1)
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err("expected an absolute path such as `/opt/celeroot` (letters, digits, `/._-+@`; no `..`, empty or trailing segments)".into())
    }
}

/// A path inside the repository (`tasks`, `pyproject.toml`, `src/app`): relative, of
/// safe characters, without `.`, `..` or empty segments.
pub fn repo_path(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 1024
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+' | b'@')
        })
        && s.trim_end_matches('/')
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err("expected a relative path inside the repository such as `tasks` or `pyproject.toml` (letters, digits, `/._-+@`; no `..`)".into())
    }
}

/// A local file path (identity file): non-empty, no control characters.
pub fn local_path(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().any(char::is_control) {
        Err("expected a file path without control characters".into())
    } else {
        Ok(())
    }
}

/// systemd unit name (`celeroot-worker`, `celery@web.service`).
pub fn unit_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'@' | b'-'))
        && !s.starts_with(['-', '.']);
    if !ok {
        return Err("expected a systemd unit name (letters, digits, `:_.@-`)".into());
    }
    if s == "celeroot-beat" {
        return Err("`celeroot-beat` is the name of beat's own unit; choose another".into());
    }
    Ok(())
}

/// An argv list: at least one element, no empty elements, no NUL or newlines.
pub fn argv(v: &[String]) -> Result<(), String> {
    if v.is_empty() {
        return Err(
            "expected a non-empty argv list such as `[systemctl, restart, celeroot-worker]`".into(),
        );
    }
    if v.iter()
        .any(|a| a.is_empty() || a.contains(['\0', '\n', '\r']))
    {
        return Err(
            "argv elements must be non-empty and must not contain NUL or line breaks".into(),
        );
    }
    Ok(())
}

/// A secret reference: `env:NAME` (an environment variable of the process that sends)
/// or `file:/absolute/path` (a file it reads). Secrets are never values in git.
pub fn secret_ref(s: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected a secret reference, `env:NAME` or `file:/absolute/path` (secrets are never written in git)";
    if let Some(name) = s.strip_prefix("env:") {
        let mut chars = name.chars();
        let ok = name.len() <= 128
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "{EXPECTED}; a variable name is letters, digits and `_`, not starting with a digit"
            ))
        };
    }
    if let Some(path) = s.strip_prefix("file:") {
        return absolute_path(path).map_err(|e| format!("{EXPECTED}; {e}"));
    }
    Err(EXPECTED.into())
}

/// An `http://` or `https://` URL without spaces or control characters, at most 2048
/// characters.
pub fn http_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    let ok = s.len() <= 2048
        && rest.is_some_and(|r| {
            !r.is_empty()
                && !r.starts_with('/')
                && r.chars().all(|c| !c.is_whitespace() && !c.is_control())
        });
    if ok {
        Ok(())
    } else {
        Err("expected an `http://` or `https://` URL".into())
    }
}

/// `host:port` of a server (a DNS name or an IP address, and a port 1–65535).
pub fn host_port(s: &str) -> Result<(), String> {
    let ok = s.rsplit_once(':').is_some_and(|(h, p)| {
        p.parse::<u16>().is_ok_and(|p| p > 0)
            && (dns_name(h).is_ok()
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err("expected `host:port`, such as `smtp.example:587`".into())
    }
}

/// An e-mail address, loosely: `local@domain` without spaces, angle brackets or control
/// characters.
pub fn email_address(s: &str) -> Result<(), String> {
    let ok = s.len() <= 254
        && s.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && dns_name(d).is_ok() && !l.contains('@'))
        && s.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '<' | '>' | ',' | ';'));
    if ok {
        Ok(())
    } else {
        Err("expected an e-mail address such as `ops@example.org`".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(rfc1123_label("web-01").is_ok());
        for bad in ["", "Web", "-web", "web-", "web_01", &"a".repeat(64)] {
            assert!(rfc1123_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        for good in ["192.0.2.1", "::1", "web01.example", "db"] {
            assert!(address(good).is_ok(), "{good}");
        }
        for bad in ["192.0.2.300", "web 01", "-x.example", "a..b", "; rm -rf /"] {
            assert!(address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        assert!(label_key("celeroot.io/zone").is_ok());
        assert!(label_key("env").is_ok());
        assert!(label_key("Bad Key").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("eu-west-1").is_ok());
        assert!(label_value("-x").is_err());
    }

    #[test]
    fn python_names_queues_paths() {
        assert!(python_dotted_name("ops.tasks.rotate_logs").is_ok());
        assert!(python_dotted_name("ops..x").is_err());
        assert!(python_dotted_name("1ops").is_err());
        assert!(queue_name("webserver").is_ok());
        assert!(queue_name("celeroot.host.x").is_err());
        assert!(absolute_path("/opt/celeroot").is_ok());
        assert!(absolute_path("/opt/../etc").is_err());
        assert!(absolute_path("opt").is_err());
        assert!(absolute_path("/opt/x;rm").is_err());
        assert!(unix_user("celery").is_ok());
        assert!(unix_user("root;id").is_err());
        assert!(argv(&[]).is_err());
        assert!(argv(&["systemctl".into(), String::new()]).is_err());
    }
}
