//! Targets: one type, one grammar, one resolver for where a task goes.
//!
//! Owns: [`Target`] (a role, a host, or a label selector), its command-line grammar
//! (`role:NAME`, `host:NAME`, `selector:KEY=VALUE[,KEY=VALUE...]`, where `selector:`
//! alone selects every host), its manifest form (`{role: NAME}`, `{host: NAME}`,
//! `{selector: {matchLabels: {...}}}`), and [`resolve`]: the queues a set of targets
//! reaches in a [`Mode`], with what did not resolve. Schedules (at compile time),
//! `task run` and the editing commands all use it.
//! Must not know: how the fleet is stored (a [`Fleet`] answers the lookups), the
//! command line, Redis.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde_json::{json, Map, Value as Json};

use super::{host_queue, CompiledRole, DesiredState, EntryKind, ScheduleEntry};
use crate::manifest::{HostIndex, Mode};
use crate::validate::rules;

/// Where a task goes: every host of a role (or, in mode `any`, the role's queue), one
/// host, or the hosts whose labels contain every pair of a selector.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Role(String),
    Host(String),
    /// Hosts whose labels contain every pair; empty selects every host.
    Selector(BTreeMap<String, String>),
}

/// What the grammar accepts, for error messages.
pub const GRAMMAR: &str = "role:NAME, host:NAME or selector:KEY=VALUE[,KEY=VALUE...]";

/// Why a target's text was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target `{text}`: {reason}")]
pub struct TargetSyntaxError {
    pub text: String,
    pub reason: String,
}

impl FromStr for Target {
    type Err = TargetSyntaxError;

    /// Parses `role:NAME`, `host:NAME` or `selector:KEY=VALUE[,KEY=VALUE...]`. `label:`
    /// (the spelling of earlier `task run` versions) is the same as `selector:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| TargetSyntaxError {
            text: s.to_string(),
            reason,
        };
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| fail(format!("expected {GRAMMAR}")))?;
        match kind {
            "role" | "host" if rest.is_empty() => {
                Err(fail(format!("the name is empty (expected {GRAMMAR})")))
            }
            "role" => Ok(Target::Role(rest.to_string())),
            "host" => Ok(Target::Host(rest.to_string())),
            "selector" | "label" => {
                let mut labels = BTreeMap::new();
                for pair in rest.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').ok_or_else(|| {
                        fail(format!(
                            "`{pair}` is not KEY=VALUE (a selector is selector:KEY=VALUE[,KEY=VALUE...])"
                        ))
                    })?;
                    rules::label_key(k).map_err(|e| fail(format!("label key: {e}")))?;
                    rules::label_value(v).map_err(|e| fail(format!("label value: {e}")))?;
                    labels.insert(k.to_string(), v.to_string());
                }
                Ok(Target::Selector(labels))
            }
            _ => Err(fail(format!("unknown kind `{kind}`; expected {GRAMMAR}"))),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Role(n) => write!(f, "role:{n}"),
            Target::Host(n) => write!(f, "host:{n}"),
            Target::Selector(m) => {
                let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "selector:{}", pairs.join(","))
            }
        }
    }
}

impl Target {
    /// The target as a manifest writes it.
    pub fn to_manifest(&self) -> Json {
        match self {
            Target::Role(n) => json!({ "role": n }),
            Target::Host(n) => json!({ "host": n }),
            Target::Selector(m) => {
                let labels: Map<String, Json> = m
                    .iter()
                    .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                    .collect();
                json!({ "selector": { "matchLabels": labels } })
            }
        }
    }

    /// The target a manifest's target object means, when it is one (exactly one of
    /// `role`, `host`, `selector` with string values).
    pub fn from_manifest(v: &Json) -> Option<Target> {
        let m = v.as_object().filter(|m| m.len() == 1)?;
        let (key, value) = m.iter().next()?;
        match key.as_str() {
            "role" => Some(Target::Role(value.as_str()?.to_string())),
            "host" => Some(Target::Host(value.as_str()?.to_string())),
            "selector" => {
                let labels = match value.get("matchLabels") {
                    None | Some(Json::Null) => BTreeMap::new(),
                    Some(l) => l
                        .as_object()?
                        .iter()
                        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect::<Option<_>>()?,
                };
                Some(Target::Selector(labels))
            }
            _ => None,
        }
    }

    /// The target of a parsed manifest.
    pub fn of(t: &crate::manifest::Target) -> Option<Target> {
        if let Some(r) = &t.role {
            Some(Target::Role(r.value.clone()))
        } else if let Some(h) = &t.host {
            Some(Target::Host(h.value.clone()))
        } else {
            t.selector
                .as_ref()
                .map(|s| Target::Selector(s.match_labels.clone()))
        }
    }
}

/// The lookups [`resolve`] needs, answered by the compiled state or, while compiling, by
/// a [`HostIndex`] and the compiled roles. Host lists are sorted by name.
pub trait Fleet {
    /// The role's queue and its hosts, when the role exists.
    fn role(&self, name: &str) -> Option<(&str, Vec<&str>)>;
    /// Whether the host exists.
    fn has_host(&self, name: &str) -> bool;
    /// Hosts whose labels contain every pair (every host for an empty selector).
    fn select(&self, labels: &BTreeMap<String, String>) -> Vec<&str>;
}

impl Fleet for DesiredState {
    fn role(&self, name: &str) -> Option<(&str, Vec<&str>)> {
        self.roles.get(name).map(|r| {
            (
                r.queue.as_str(),
                r.hosts.iter().map(String::as_str).collect(),
            )
        })
    }

    fn has_host(&self, name: &str) -> bool {
        self.hosts.contains_key(name)
    }

    fn select(&self, labels: &BTreeMap<String, String>) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|(_, h)| crate::manifest::selects(labels, &h.labels))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// The fleet while compiling: hosts from the index, queues from the compiled roles.
pub struct Compiling<'i, 'a> {
    pub index: &'i HostIndex<'a>,
    pub roles: &'i BTreeMap<String, CompiledRole>,
}

impl Fleet for Compiling<'_, '_> {
    fn role(&self, name: &str) -> Option<(&str, Vec<&str>)> {
        self.roles
            .get(name)
            .map(|r| (r.queue.as_str(), self.index.with_role(name).to_vec()))
    }

    fn has_host(&self, name: &str) -> bool {
        self.index.contains(name)
    }

    fn select(&self, labels: &BTreeMap<String, String>) -> Vec<&str> {
        self.index.select(labels)
    }
}

/// A target that reaches no queue, or one no worker consumes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("role:{0}: no Role `{0}`")]
    NoRole(String),
    #[error("host:{0}: no Host `{0}`")]
    NoHost(String),
    /// Mode `any` sends to the role queue; no host runs the role, so nothing consumes it.
    #[error("role:{role}: the role has no hosts, so no worker consumes its queue `{queue}`")]
    EmptyRole { role: String, queue: String },
    #[error("{0}: matches no host")]
    NoMatch(Target),
    /// Mode `any` takes role targets only.
    #[error("{0}: mode any sends one message per role queue, so it takes role targets only")]
    NotARole(Target),
}

/// Where targets lead: the queues (sorted, each once) and what did not resolve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    pub entries: Vec<ScheduleEntry>,
    pub unresolved: Vec<Unresolved>,
}

/// Resolves `targets` in `mode`: in `each`, every matched host's own queue; in `any`,
/// each role's queue (a role without hosts still gets its entry, and is reported).
pub fn resolve<'t>(
    targets: impl IntoIterator<Item = &'t Target>,
    mode: Mode,
    fleet: &impl Fleet,
) -> Resolution {
    let mut set: BTreeSet<ScheduleEntry> = BTreeSet::new();
    let mut unresolved = Vec::new();
    for t in targets {
        match (mode, t) {
            (Mode::Any, Target::Role(name)) => match fleet.role(name) {
                None => unresolved.push(Unresolved::NoRole(name.clone())),
                Some((queue, hosts)) => {
                    if hosts.is_empty() {
                        unresolved.push(Unresolved::EmptyRole {
                            role: name.clone(),
                            queue: queue.to_string(),
                        });
                    }
                    set.insert(ScheduleEntry {
                        kind: EntryKind::Role,
                        name: name.clone(),
                        queue: queue.to_string(),
                    });
                }
            },
            (Mode::Any, _) => unresolved.push(Unresolved::NotARole(t.clone())),
            (Mode::Each, _) => {
                let hosts: Vec<&str> = match t {
                    Target::Role(name) => match fleet.role(name) {
                        None => {
                            unresolved.push(Unresolved::NoRole(name.clone()));
                            continue;
                        }
                        Some((_, hosts)) => hosts,
                    },
                    Target::Host(name) if fleet.has_host(name) => vec![name.as_str()],
                    Target::Host(name) => {
                        unresolved.push(Unresolved::NoHost(name.clone()));
                        continue;
                    }
                    Target::Selector(labels) => fleet.select(labels),
                };
                if hosts.is_empty() {
                    unresolved.push(Unresolved::NoMatch(t.clone()));
                }
                set.extend(hosts.into_iter().map(|n| ScheduleEntry {
                    kind: EntryKind::Host,
                    name: n.to_string(),
                    queue: host_queue(n),
                }));
            }
        }
    }
    Resolution {
        entries: set.into_iter().collect(),
        unresolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grammar_round_trips() {
        assert_eq!("role:web".parse(), Ok(Target::Role("web".into())));
        assert_eq!("host:web01".parse(), Ok(Target::Host("web01".into())));
        let one = Target::Selector(BTreeMap::from([("zone".into(), "fra1-a".into())]));
        assert_eq!("label:zone=fra1-a".parse(), Ok(one.clone()));
        assert_eq!("selector:zone=fra1-a".parse(), Ok(one.clone()));
        assert_eq!("selector:".parse(), Ok(Target::Selector(BTreeMap::new())));
        let two: Target = "selector:zone=fra1-a,tier=frontend".parse().unwrap_or(one);
        assert_eq!(two.to_string(), "selector:tier=frontend,zone=fra1-a");
        for t in [
            Target::Role("web".into()),
            Target::Host("web01".into()),
            two,
            Target::Selector(BTreeMap::new()),
        ] {
            assert_eq!(t.to_string().parse(), Ok(t.clone()), "{t}");
            assert_eq!(Target::from_manifest(&t.to_manifest()), Some(t.clone()));
        }
        for bad in [
            "web01",
            "role:",
            "host:",
            "node:x",
            "label:zone",
            "label:-x=1",
            "label:k=a b",
            "selector:zone",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        assert_eq!(
            "node:x".parse::<Target>().map_err(|e| e.to_string()),
            Err(format!(
                "invalid target `node:x`: unknown kind `node`; expected {GRAMMAR}"
            ))
        );
    }

    #[test]
    fn manifest_forms_that_are_not_one_target_are_refused() {
        for v in [
            json!({}),
            json!({"role": "a", "host": "b"}),
            json!({"role": 1}),
            json!({"selector": {"matchLabels": {"a": 1}}}),
            json!("role:a"),
        ] {
            assert_eq!(Target::from_manifest(&v), None, "{v}");
        }
    }
}
