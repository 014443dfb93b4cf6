//! Alerts: when a schedule target's run health changes into a problem (late, missed,
//! failed, stuck), notify the channels the Cluster's `alerts.routes` pick; when it
//! recovers, send a resolve. The leading daemon sends, once per change: what each channel
//! was last told about each target is kept in Redis (`runs::alerts`), so a new leader
//! neither repeats nor forgets (docs/runs.md#alerts).
//!
//! Owns: routing, the payloads (Slack incoming webhook, a signed generic webhook,
//! PagerDuty Events v2), secret references, and delivery over HTTP.
//! Must not know: the CLI, the daemon's threads, how health is evaluated.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use sha2::Sha256;

use super::expect::{RunHealth, TargetHealth};

/// The default PagerDuty Events API v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// The header carrying a generic webhook's HMAC-SHA256 signature, `sha256=<hex>` (the
/// same one `celeroot watch` checks on the webhooks it receives).
pub const SIGNATURE_HEADER: &str = "X-Celeroot-Signature";
/// How long one delivery may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The Cluster's `alerts`, as applied (the normalized spec: references, never secrets).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub name: String,
    #[serde(default)]
    pub slack: Option<Slack>,
    #[serde(default)]
    pub webhook: Option<Webhook>,
    #[serde(default)]
    pub pagerduty: Option<PagerDuty>,
    #[serde(default)]
    pub email: Option<Email>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slack {
    pub webhook_url: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub url: String,
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PagerDuty {
    pub routing_key: String,
    #[serde(default)]
    pub events_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Email {
    pub server: String,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub tls: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    #[serde(default)]
    pub schedules: Vec<String>,
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub states: Vec<String>,
    pub channels: Vec<String>,
}

impl Settings {
    /// Reads them from the Cluster object's normalized spec (none when absent).
    pub fn of_cluster_spec(spec: &Json) -> Settings {
        serde_json::from_value(spec["alerts"].clone()).unwrap_or_default()
    }
}

impl Route {
    fn matches(&self, t: &TargetHealth) -> bool {
        (self.schedules.is_empty() || self.schedules.contains(&t.schedule))
            && self
                .match_labels
                .iter()
                .all(|(k, v)| t.labels.get(k) == Some(v))
    }

    fn wants(&self, state: &str) -> bool {
        if self.states.is_empty() {
            matches!(state, "late" | "missed" | "failed" | "stuck")
        } else {
            self.states.iter().any(|s| s == state)
        }
    }
}

/// Why a notification was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("secret reference {reference}: {reason}")]
    Secret { reference: String, reason: String },
    #[error("{0}")]
    Delivery(String),
}

/// Resolves a secret reference on this machine: `env:NAME` (the variable's value) or
/// `file:/path` (the file's content, without a trailing newline). Any other text is a
/// plain value (a webhook's URL).
///
/// # Errors
/// [`AlertError::Secret`] when the variable is unset or empty, or the file unreadable.
pub fn resolve(reference: &str) -> Result<String, AlertError> {
    let err = |reason: String| AlertError::Secret {
        reference: reference.to_string(),
        reason,
    };
    if let Some(name) = reference.strip_prefix("env:") {
        return match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(err(format!(
                "the environment variable {name} is not set on this machine"
            ))),
        };
    }
    if let Some(path) = reference.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|t| t.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| err(format!("cannot read {path}: {e}")));
    }
    Ok(reference.to_string())
}

/// The alert secret references of `d` that do not resolve on this machine, as located
/// errors (`celeroot validate --secrets`; `celeroot watch` refuses such a revision, since
/// it could not alert).
pub fn unresolved(d: &crate::desired::DesiredState) -> Vec<crate::diagnostic::Diagnostic> {
    d.secret_refs
        .iter()
        .filter_map(|r| {
            let reason = match resolve(&r.reference) {
                Ok(_) => return None,
                Err(AlertError::Secret { reason, .. }) => reason,
                Err(e) => e.to_string(),
            };
            Some(
                crate::diagnostic::Diagnostic::error(
                    &r.file,
                    r.pos,
                    format!("{} ({}): {reason}", r.what, r.reference),
                )
                .help("secrets are read where alerts are sent: set it in `celeroot watch`'s environment, or point to a readable file"),
            )
        })
        .collect()
}

/// One notification to send: a target changed into `state` (or recovered from
/// `previous`).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub channel: String,
    /// The field of `runs::alerts`: `<channel>|<schedule>|<target>`.
    pub key: String,
    pub target: TargetHealth,
    /// What the channel was last told (`None`: nothing, the target was fine).
    pub previous: Option<String>,
    /// A recovery: the target is fine again.
    pub resolved: bool,
}

/// `<channel>|<schedule>|<target>`.
pub fn notice_key(channel: &str, t: &TargetHealth) -> String {
    format!("{channel}|{}|{}", t.schedule, t.target)
}

/// What to send now: for every target and every channel of a route that matches it, a
/// change into a problem state the route wants (once: `sent` holds what each channel
/// was last told), or a resolve when a target the channel was told about is fine again.
/// Targets whose health is unknown (no collector) change nothing. Also returns the
/// fields of `sent` that name targets or channels that no longer exist.
pub fn plan(
    settings: &Settings,
    health: &[TargetHealth],
    sent: &BTreeMap<String, String>,
) -> (Vec<Notice>, Vec<String>) {
    let channels: BTreeSet<&str> = settings.channels.iter().map(|c| c.name.as_str()).collect();
    let mut out: BTreeMap<String, Notice> = BTreeMap::new();
    let mut live = BTreeSet::new();
    for t in health {
        for r in settings.routes.iter().filter(|r| r.matches(t)) {
            for ch in r.channels.iter().filter(|c| channels.contains(c.as_str())) {
                let key = notice_key(ch, t);
                live.insert(key.clone());
                if t.state == RunHealth::Unknown || out.contains_key(&key) {
                    continue;
                }
                let previous = sent.get(&key).cloned();
                let notice = if t.state.is_problem() {
                    (r.wants(t.state.as_str()) && previous.as_deref() != Some(t.state.as_str()))
                        .then_some(false)
                } else {
                    previous.is_some().then_some(true)
                };
                if let Some(resolved) = notice {
                    out.insert(
                        key.clone(),
                        Notice {
                            channel: ch.clone(),
                            key,
                            target: t.clone(),
                            previous,
                            resolved,
                        },
                    );
                }
            }
        }
    }
    let stale = sent
        .keys()
        .filter(|k| !live.contains(*k))
        .cloned()
        .collect();
    (out.into_values().collect(), stale)
}

/// One line for people: `schedule db-backup on host/db01 is missed (due …; last run …)`.
pub fn summary(cluster: &str, n: &Notice) -> String {
    let t = &n.target;
    if n.resolved {
        return format!(
            "[{cluster}] schedule {} on {} recovered: {} (was {})",
            t.schedule,
            t.target,
            t.state,
            n.previous.as_deref().unwrap_or("?")
        );
    }
    let last = t.last.as_ref().map_or_else(
        || "no run recorded".to_string(),
        |l| format!("last run {} ({})", l.state, rfc3339(l.fired)),
    );
    let due = t
        .due
        .map_or_else(String::new, |d| format!("due {}; ", rfc3339(d)));
    format!(
        "[{cluster}] schedule {} on {} is {} ({due}{last})",
        t.schedule, t.target, t.state
    )
}

fn rfc3339(secs: f64) -> String {
    chrono::DateTime::from_timestamp_millis((secs * 1000.0) as i64).map_or_else(
        || secs.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// The generic webhook's JSON (docs/runs.md#alerts).
pub fn webhook_payload(cluster: &str, n: &Notice, at: &str) -> Json {
    json!({
        "formatVersion": 1,
        "event": if n.resolved { "schedule-recovered" } else { "schedule-problem" },
        "cluster": cluster,
        "schedule": n.target.schedule,
        "target": n.target.target,
        "state": n.target.state,
        "previous": n.previous,
        "resolved": n.resolved,
        "due": n.target.due,
        "last": n.target.last,
        "summary": summary(cluster, n),
        "at": at,
    })
}

/// Slack's incoming-webhook JSON: `text` (with a colour bar in an attachment).
pub fn slack_payload(cluster: &str, n: &Notice) -> Json {
    let colour = match (n.resolved, n.target.state) {
        (true, _) => "good",
        (false, RunHealth::Late) => "warning",
        _ => "danger",
    };
    json!({
        "text": summary(cluster, n),
        "attachments": [{
            "color": colour,
            "fields": [
                {"title": "Schedule", "value": n.target.schedule, "short": true},
                {"title": "Target", "value": n.target.target, "short": true},
                {"title": "State", "value": n.target.state.as_str(), "short": true},
            ],
        }],
    })
}

/// PagerDuty Events API v2: `trigger` with a dedup key per target, `resolve` on recovery.
pub fn pagerduty_payload(cluster: &str, n: &Notice, routing_key: &str, at: &str) -> Json {
    let dedup = format!(
        "celeroot/{cluster}/{}/{}",
        n.target.schedule, n.target.target
    );
    if n.resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup,
        });
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": {
            "summary": summary(cluster, n),
            "source": format!("celeroot/{cluster}"),
            "severity": if n.target.state == RunHealth::Late { "warning" } else { "error" },
            "timestamp": at,
            "component": n.target.target,
            "group": n.target.schedule,
            "class": n.target.state.as_str(),
            "custom_details": {
                "due": n.target.due,
                "last": n.target.last,
                "previous": n.previous,
            },
        },
    })
}

/// What one round of notifications did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Notices delivered (channel, what).
    pub delivered: Vec<(String, String)>,
    /// Notices that failed (channel, why); they are tried again at the next round.
    pub failed: Vec<(String, String)>,
}

/// Sends what changed since the last round and records it, so each change is told once
/// (and a failed delivery is tried again next round). Call it from the leader only.
///
/// # Errors
/// [`crate::state::StateError`] when Redis fails (deliveries' failures are in the outcome).
pub fn notify(
    store: &mut crate::state::Store,
    cluster: &str,
    settings: &Settings,
    health: &[TargetHealth],
) -> Result<Outcome, crate::state::StateError> {
    let mut out = Outcome::default();
    if settings.routes.is_empty() {
        return Ok(out);
    }
    let sent = store.alert_state()?;
    let (notices, stale) = plan(settings, health, &sent);
    store.forget_alert_state(&stale)?;
    for n in notices {
        let Some(ch) = settings.channels.iter().find(|c| c.name == n.channel) else {
            continue;
        };
        let what = if n.resolved {
            format!("{} {} resolved", n.target.schedule, n.target.target)
        } else {
            format!(
                "{} {} {}",
                n.target.schedule, n.target.target, n.target.state
            )
        };
        match deliver(cluster, ch, &n) {
            Ok(()) => {
                store.set_alert_state(&n.key, (!n.resolved).then(|| n.target.state.as_str()))?;
                out.delivered.push((n.channel.clone(), what));
            }
            Err(e) => out.failed.push((n.channel.clone(), format!("{what}: {e}"))),
        }
    }
    Ok(out)
}

/// The plain-text body of an alert e-mail.
pub fn email_body(cluster: &str, n: &Notice) -> String {
    let t = &n.target;
    let mut body = format!(
        "{}\n\ncluster:  {cluster}\nschedule: {}\ntarget:   {}\nstate:    {}\n",
        summary(cluster, n),
        t.schedule,
        t.target,
        t.state
    );
    if let Some(p) = &n.previous {
        body.push_str(&format!("previous: {p}\n"));
    }
    if let Some(l) = &t.last {
        body.push_str(&format!(
            "last run: {} ({}), task id {}{}\n",
            l.state,
            rfc3339(l.fired),
            l.id,
            l.host
                .as_ref()
                .map_or_else(String::new, |h| format!(", on {h}"))
        ));
    }
    body.push_str("\n(see `celeroot health` and `celeroot runs SCHEDULE`)\n");
    body
}

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends one notice through `channel`.
///
/// # Errors
/// [`AlertError`] when a secret does not resolve or the receiver does not accept it.
/// Error texts never contain the resolved secrets (a Slack URL holds a token).
pub fn deliver(cluster: &str, channel: &Channel, n: &Notice) -> Result<(), AlertError> {
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let Some(s) = &channel.slack {
        let url = resolve(&s.webhook_url)?;
        return post(&url, &slack_payload(cluster, n), &[]);
    }
    if let Some(w) = &channel.webhook {
        let url = resolve(&w.url)?;
        let body = webhook_payload(cluster, n, &at);
        let text = body.to_string();
        let sig = match &w.secret {
            Some(r) => Some(signature(resolve(r)?.as_bytes(), text.as_bytes())),
            None => None,
        };
        let mut headers = vec![("X-Celeroot-Event", "schedule-state".to_string())];
        if let Some(sig) = sig {
            headers.push((SIGNATURE_HEADER, sig));
        }
        return post(&url, &body, &headers);
    }
    if let Some(p) = &channel.pagerduty {
        let key = resolve(&p.routing_key)?;
        let url = p.events_url.as_deref().unwrap_or(PAGERDUTY_EVENTS_URL);
        return post(url, &pagerduty_payload(cluster, n, &key, &at), &[]);
    }
    if let Some(e) = &channel.email {
        let credentials = match (&e.username, &e.password) {
            (Some(u), Some(p)) => Some((resolve(u)?, resolve(p)?)),
            _ => None,
        };
        return super::mail::send(&super::mail::Mail {
            server: &e.server,
            from: &e.from,
            to: &e.to,
            credentials,
            plain: e.tls.as_deref() == Some("none"),
            ca_file: e.ca_file.as_deref(),
            subject: summary(cluster, n),
            body: email_body(cluster, n),
            timeout: DELIVERY_TIMEOUT,
        })
        .map_err(AlertError::Delivery);
    }
    Err(AlertError::Delivery(format!(
        "channel {} has no kind",
        channel.name
    )))
}

fn post(url: &str, body: &Json, headers: &[(&str, String)]) -> Result<(), AlertError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(DELIVERY_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header(
            "User-Agent",
            concat!("celeroot/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    // The URL may hold a token (Slack): errors name the host only.
    let host = url
        .split_once("://")
        .map_or("", |(_, r)| r.split(['/', '?']).next().unwrap_or(""));
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    match req.send(body.to_string().as_bytes()) {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(mut resp) => {
            let status = resp.status();
            let text = resp
                .body_mut()
                .with_config()
                .limit(512)
                .read_to_string()
                .unwrap_or_default();
            Err(AlertError::Delivery(format!(
                "{host} answered {status}: {}",
                text.chars().take(200).collect::<String>()
            )))
        }
        Err(e) => Err(AlertError::Delivery(format!(
            "cannot reach {host}: {}",
            e.to_string().replace(url, "<url>")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::runs::Latest;

    fn target(schedule: &str, state: RunHealth) -> TargetHealth {
        TargetHealth {
            schedule: schedule.into(),
            target: "host/db01".into(),
            state,
            due: Some(1_795_400_100.0),
            last: Some(Latest {
                id: "t1".into(),
                state: "failed".into(),
                fired: 1_795_400_100.0,
                ..Latest::default()
            }),
            grace_secs: 60,
            timeout_secs: None,
            labels: BTreeMap::from([("team".to_string(), "db".to_string())]),
        }
    }

    fn settings() -> Settings {
        serde_json::from_value(json!({
            "channels": [{"name": "ops", "slack": {"webhookUrl": "env:X"}},
                         {"name": "pager", "pagerduty": {"routingKey": "env:Y"}}],
            "routes": [{"channels": ["ops"]},
                       {"matchLabels": {"team": "db"}, "states": ["missed"], "channels": ["pager", "ops"]}],
        }))
        .expect("settings")
    }

    #[test]
    fn a_change_notifies_once_and_a_recovery_resolves() {
        let s = settings();
        let mut sent = BTreeMap::new();
        let (n, _) = plan(&s, &[target("backup", RunHealth::Late)], &sent);
        let keys: Vec<(&str, bool)> = n.iter().map(|n| (n.channel.as_str(), n.resolved)).collect();
        assert_eq!(keys, [("ops", false)], "pager only wants missed");
        sent.insert(n[0].key.clone(), "late".to_string());
        // Again late: nothing new.
        assert!(plan(&s, &[target("backup", RunHealth::Late)], &sent)
            .0
            .is_empty());
        // Missed: both channels, once each although two routes name ops.
        let (n, _) = plan(&s, &[target("backup", RunHealth::Missed)], &sent);
        let chans: Vec<&str> = n.iter().map(|n| n.channel.as_str()).collect();
        assert_eq!(chans, ["ops", "pager"]);
        assert_eq!(n[0].previous.as_deref(), Some("late"));
        for x in &n {
            sent.insert(x.key.clone(), "missed".to_string());
        }
        // Unknown (no collector) changes nothing; ok resolves both.
        assert!(plan(&s, &[target("backup", RunHealth::Unknown)], &sent)
            .0
            .is_empty());
        let (n, stale) = plan(&s, &[target("backup", RunHealth::Ok)], &sent);
        assert!(n.iter().all(|n| n.resolved) && n.len() == 2, "{n:?}");
        assert!(stale.is_empty());
        // A target that is gone: its fields are stale.
        let (_, stale) = plan(&s, &[], &sent);
        assert_eq!(stale.len(), 2);
    }

    #[test]
    fn payloads_follow_each_services_format() {
        let n = Notice {
            channel: "pager".into(),
            key: "k".into(),
            target: target("backup", RunHealth::Missed),
            previous: Some("late".into()),
            resolved: false,
        };
        let p = pagerduty_payload("prod", &n, "RK", "2026-12-02T00:00:00Z");
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["dedup_key"], "celeroot/prod/backup/host/db01");
        assert_eq!(p["payload"]["severity"], "error");
        assert_eq!(p["payload"]["source"], "celeroot/prod");
        let r = pagerduty_payload(
            "prod",
            &Notice {
                resolved: true,
                ..n.clone()
            },
            "RK",
            "x",
        );
        assert_eq!(
            r,
            json!({"routing_key": "RK", "event_action": "resolve", "dedup_key": "celeroot/prod/backup/host/db01"})
        );
        let s = slack_payload("prod", &n);
        assert!(s["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("[prod] schedule backup on host/db01 is missed")));
        // RFC 4231-style vector: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn secret_references_resolve_on_this_machine() {
        assert_eq!(
            resolve("https://hooks.example/x"),
            Ok("https://hooks.example/x".into())
        );
        assert!(matches!(
            resolve("env:CELEROOT_TEST_SURELY_UNSET_VARIABLE"),
            Err(AlertError::Secret { .. })
        ));
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("key");
        std::fs::write(&f, "s3cret\n").expect("write");
        assert_eq!(
            resolve(&format!("file:{}", f.display())),
            Ok("s3cret".into())
        );
    }
}
