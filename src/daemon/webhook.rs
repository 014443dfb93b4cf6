//! Webhook deliveries: signature checks and push payloads of GitHub, Gitea/Forgejo,
//! GitLab and a generic HMAC sender.
//!
//! Pure functions over a header lookup and the raw body, so the HTTP layer stays thin and
//! every rule is unit-tested. The signature is checked before the body is parsed, and
//! always in constant time.

use std::collections::{HashSet, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header the generic provider signs with: `sha256=<hex HMAC-SHA256 of the body>`.
pub const GENERIC_SIGNATURE: &str = "x-celeroot-signature";
/// The generic provider's optional delivery id header.
pub const GENERIC_DELIVERY: &str = "x-celeroot-delivery";

/// Who sent a delivery (the path segment of `/hooks/<provider>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    /// Gitea and Forgejo (same payload, either header family).
    Gitea,
    GitLab,
    Generic,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "github" => Some(Provider::GitHub),
            "gitea" | "forgejo" => Some(Provider::Gitea),
            "gitlab" => Some(Provider::GitLab),
            "generic" => Some(Provider::Generic),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::Gitea => "gitea",
            Provider::GitLab => "gitlab",
            Provider::Generic => "generic",
        }
    }
}

/// What a verified delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A push; `git_ref` is the pushed ref (`refs/heads/main`) when the payload names one.
    Push { git_ref: Option<String> },
    /// GitHub's `ping` on webhook creation.
    Ping,
    /// Any other event (ignored).
    Other(String),
}

/// A verified, parsed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The provider's delivery id, used to drop repeated deliveries.
    pub id: Option<String>,
    pub event: Event,
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// 401: missing or wrong signature or token.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// 400: a signed body that is not the expected JSON.
    #[error("bad request: {0}")]
    BadRequest(String),
}

fn hmac_matches(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&sig).is_ok()
}

/// Checks the delivery's signature (or GitLab's token) against `secret`.
///
/// # Errors
/// [`HookError::Unauthorized`] when the signature is missing or does not match.
pub fn verify<'h>(
    provider: Provider,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    secret: &[u8],
) -> Result<(), HookError> {
    let prefixed = |name: &str| -> Result<(), HookError> {
        let sig = header(name).ok_or(HookError::Unauthorized("missing signature header"))?;
        let hex_sig = sig
            .strip_prefix("sha256=")
            .ok_or(HookError::Unauthorized("signature must start with sha256="))?;
        if hmac_matches(secret, body, hex_sig) {
            Ok(())
        } else {
            Err(HookError::Unauthorized("signature does not match"))
        }
    };
    match provider {
        Provider::GitHub => prefixed("x-hub-signature-256"),
        Provider::Generic => prefixed(GENERIC_SIGNATURE),
        Provider::Gitea => {
            let sig = header("x-forgejo-signature")
                .or_else(|| header("x-gitea-signature"))
                .ok_or(HookError::Unauthorized("missing signature header"))?;
            if hmac_matches(secret, body, sig) {
                Ok(())
            } else {
                Err(HookError::Unauthorized("signature does not match"))
            }
        }
        Provider::GitLab => {
            let token = header("x-gitlab-token")
                .ok_or(HookError::Unauthorized("missing X-Gitlab-Token"))?;
            // Constant time; a length difference is not secret.
            if token.as_bytes().ct_eq(secret.trim_ascii()).into() {
                Ok(())
            } else {
                Err(HookError::Unauthorized("token does not match"))
            }
        }
    }
}

fn push_ref(body: &[u8], required: bool) -> Result<Option<String>, HookError> {
    if body.iter().all(u8::is_ascii_whitespace) && !required {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| HookError::BadRequest(format!("the body is not JSON: {e}")))?;
    match v.get("ref").and_then(|r| r.as_str()) {
        Some(r) => Ok(Some(r.to_string())),
        None if required => Err(HookError::BadRequest(
            "a push payload needs a \"ref\" field".into(),
        )),
        None => Ok(None),
    }
}

/// Reads the event and delivery id of a verified delivery.
///
/// # Errors
/// [`HookError::BadRequest`] when a push body is not JSON or lacks its `ref`.
pub fn parse<'h>(
    provider: Provider,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<Delivery, HookError> {
    let (event, id) = match provider {
        Provider::GitHub => (header("x-github-event"), header("x-github-delivery")),
        Provider::Gitea => (
            header("x-forgejo-event").or_else(|| header("x-gitea-event")),
            header("x-forgejo-delivery").or_else(|| header("x-gitea-delivery")),
        ),
        Provider::GitLab => (
            header("x-gitlab-event"),
            header("x-gitlab-event-uuid").or_else(|| header("idempotency-key")),
        ),
        Provider::Generic => (Some("push"), header(GENERIC_DELIVERY)),
    };
    let id = id.map(str::to_string).filter(|s| !s.is_empty());
    let event = match (provider, event.unwrap_or("")) {
        (Provider::GitHub, "ping") => Event::Ping,
        (Provider::GitHub | Provider::Gitea, "push") | (Provider::GitLab, "Push Hook") => {
            Event::Push {
                git_ref: push_ref(body, true)?,
            }
        }
        (Provider::Generic, _) => Event::Push {
            git_ref: push_ref(body, false)?,
        },
        (_, other) => Event::Other(other.to_string()),
    };
    Ok(Delivery { id, event })
}

/// The most recent delivery ids, to drop repeated deliveries (providers redeliver on
/// timeouts, and operators press "redeliver").
#[derive(Debug)]
pub struct Deliveries {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Deliveries {
    pub fn new(capacity: usize) -> Self {
        Deliveries {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; false when it was already seen.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

/// `sha256=<hex>` of `body` under `secret`: what a sender puts in the signature header
/// (used by tests, benchmarks and `docs/operations.md`'s curl example).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; the error branch is unreachable in practice.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
    }

    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"abc"}"#;

    #[test]
    fn github_signature_is_checked() {
        let sig = sign(b"s3cret", BODY);
        let h = [
            ("X-Hub-Signature-256", sig.as_str()),
            ("X-GitHub-Event", "push"),
        ];
        assert_eq!(
            verify(Provider::GitHub, headers(&h), BODY, b"s3cret"),
            Ok(())
        );
        assert_eq!(
            verify(Provider::GitHub, headers(&h), BODY, b"other"),
            Err(HookError::Unauthorized("signature does not match"))
        );
        let tampered = br#"{"ref":"refs/heads/evil","after":"abc"}"#;
        assert!(verify(Provider::GitHub, headers(&h), tampered, b"s3cret").is_err());
        assert_eq!(
            verify(Provider::GitHub, headers(&[]), BODY, b"s3cret"),
            Err(HookError::Unauthorized("missing signature header"))
        );
        let unprefixed = sig.trim_start_matches("sha256=").to_string();
        let h = [("X-Hub-Signature-256", unprefixed.as_str())];
        assert!(verify(Provider::GitHub, headers(&h), BODY, b"s3cret").is_err());
        let h = [("X-Hub-Signature-256", "sha256=zz")];
        assert!(verify(Provider::GitHub, headers(&h), BODY, b"s3cret").is_err());
    }

    #[test]
    fn gitea_and_forgejo_sign_without_prefix() {
        let sig = sign(b"k", BODY);
        let bare = sig.trim_start_matches("sha256=");
        for name in ["X-Gitea-Signature", "X-Forgejo-Signature"] {
            let h = [(name, bare)];
            assert_eq!(verify(Provider::Gitea, headers(&h), BODY, b"k"), Ok(()));
            assert!(verify(Provider::Gitea, headers(&h), BODY, b"x").is_err());
        }
    }

    #[test]
    fn gitlab_compares_the_token() {
        let h = [("X-Gitlab-Token", "tok")];
        assert_eq!(
            verify(Provider::GitLab, headers(&h), BODY, b"tok\n"),
            Ok(())
        );
        assert!(verify(Provider::GitLab, headers(&h), BODY, b"to").is_err());
        assert!(verify(Provider::GitLab, headers(&[]), BODY, b"tok").is_err());
    }

    #[test]
    fn events_and_delivery_ids() {
        let h = [("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", "d1")];
        assert_eq!(
            parse(Provider::GitHub, headers(&h), b"{}"),
            Ok(Delivery {
                id: Some("d1".into()),
                event: Event::Ping
            })
        );
        let h = [("X-GitHub-Event", "issues")];
        assert_eq!(
            parse(Provider::GitHub, headers(&h), b"{}").map(|d| d.event),
            Ok(Event::Other("issues".into()))
        );
        let h = [
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Event-UUID", "u"),
        ];
        let d = parse(Provider::GitLab, headers(&h), BODY);
        assert_eq!(
            d.map(|d| (d.id, d.event)),
            Ok((
                Some("u".into()),
                Event::Push {
                    git_ref: Some("refs/heads/main".into())
                }
            ))
        );
        let h = [("X-Forgejo-Event", "push")];
        assert!(matches!(
            parse(Provider::Gitea, headers(&h), b"not json"),
            Err(HookError::BadRequest(_))
        ));
        assert!(matches!(
            parse(Provider::Gitea, headers(&h), b"{}"),
            Err(HookError::BadRequest(_))
        ));
        // The generic sender may post an empty body: a push of the watched branch.
        assert_eq!(
            parse(Provider::Generic, headers(&[]), b"").map(|d| d.event),
            Ok(Event::Push { git_ref: None })
        );
    }

    #[test]
    fn deliveries_forget_the_oldest() {
        let mut d = Deliveries::new(2);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        assert!(d.first_time("b"));
        assert!(d.first_time("c"));
        assert!(d.first_time("a"), "a was evicted by c");
        assert!(!d.first_time("c"));
    }

    #[test]
    fn providers_parse() {
        assert_eq!(Provider::parse("forgejo"), Some(Provider::Gitea));
        assert_eq!(Provider::parse("bitbucket"), None);
        assert_eq!(Provider::GitLab.label(), "gitlab");
    }
}
