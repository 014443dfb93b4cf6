//! Plans: the ordered changes that turn one desired state into another.
//!
//! Owns: comparing two [`DesiredState`]s object by object (by content hash), and the
//! consequences an operator cares about: hosts a role change affects, a host's queues,
//! a schedule's resolved targets before and after and its next fire times.
//! A plan is data; renderers only read it.
//! Reads live key images only to rebuild a plan's "before" side ([`live_side`]);
//! [`against_live`] is the one sequence that plans a revision against the live state
//! (observe through a [`crate::state::Store`], rebuild the side, diff), shared by `diff`,
//! `drift` and `status`.
//! Must not know: git, Redis commands or key names, or output formats.

/// The key-level planner, kept with the store in [`crate::state::writes`].
pub mod keys {
    pub use crate::state::writes::*;
}

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value as Json;

use crate::desired::{
    schedule::format_duration, DesiredObject, DesiredState, ScheduleEntry, Trigger,
};
use crate::manifest::{Kind, ObjectId};

/// What happens to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Change,
    Remove,
}

impl Action {
    /// The one-character marker used in text output (`+`, `~`, `-`).
    pub fn marker(self) -> char {
        match self {
            Action::Add => '+',
            Action::Change => '~',
            Action::Remove => '-',
        }
    }
}

/// A consequence of a change, beyond the object's own spec.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Effect {
    /// Hosts whose worker configuration depends on this object.
    AffectedHosts { hosts: Vec<String> },
    /// The queues a host's worker consumes.
    Queues {
        before: Vec<String>,
        after: Vec<String>,
    },
    /// Where a schedule's task is sent.
    Targets {
        before: Vec<ScheduleEntry>,
        after: Vec<ScheduleEntry>,
    },
    /// The next fire times of a cron schedule, in its time zone (RFC 3339).
    NextRuns {
        timezone: String,
        times: Vec<String>,
    },
    /// An interval schedule's period.
    Interval { every: String },
    /// The schedule is disabled and will not fire.
    Disabled,
}

/// One object's change.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    pub action: Action,
    /// False when only derived state changed (e.g. a schedule's resolved targets after a
    /// host was relabelled) and the object's own spec is the same.
    pub spec_changed: bool,
    pub before_hash: Option<String>,
    pub after_hash: Option<String>,
    pub before: Option<Json>,
    pub after: Option<Json>,
    pub effects: Vec<Effect>,
}

impl Change {
    pub fn id(&self) -> ObjectId {
        ObjectId {
            kind: self.kind,
            name: self.name.clone(),
        }
    }
}

/// Counts of a plan, Terraform style.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub remove: usize,
}

impl Summary {
    pub fn total(&self) -> usize {
        self.add + self.change + self.remove
    }
}

/// All changes between two desired states, in kind order (Cluster, Role, Host, Schedule)
/// then by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::Add => s.add += 1,
                Action::Change => s.change += 1,
                Action::Remove => s.remove += 1,
            }
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// What the planner needs to know about the "before" side: its objects and the derived
/// facts shown as consequences. Built from a desired state (git to git) or from the
/// live state in Redis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Side {
    pub objects: BTreeMap<ObjectId, std::sync::Arc<DesiredObject>>,
    pub host_queues: BTreeMap<String, Vec<String>>,
    pub role_hosts: BTreeMap<String, Vec<String>>,
    pub schedule_entries: BTreeMap<String, Vec<ScheduleEntry>>,
}

impl Side {
    /// The part of [`Side::of`] about the objects `ids`.
    pub fn of_some<'a>(d: &DesiredState, ids: impl IntoIterator<Item = &'a ObjectId>) -> Side {
        let mut side = Side::default();
        for id in ids {
            if let Some(o) = d.objects.get(id) {
                side.objects.insert(id.clone(), o.clone());
            }
            match id.kind {
                Kind::Host => {
                    if let Some(h) = d.hosts.get(&id.name) {
                        side.host_queues.insert(id.name.clone(), h.queues.clone());
                    }
                }
                Kind::Role => {
                    if let Some(r) = d.roles.get(&id.name) {
                        side.role_hosts.insert(id.name.clone(), r.hosts.clone());
                    }
                }
                Kind::Schedule => {
                    if let Some(s) = d.schedules.get(&id.name) {
                        side.schedule_entries
                            .insert(id.name.clone(), s.entries.clone());
                    }
                }
                Kind::Cluster => {}
            }
        }
        side
    }

    pub fn of(d: &DesiredState) -> Side {
        Side {
            objects: d.objects.clone(),
            host_queues: d
                .hosts
                .iter()
                .map(|(k, h)| (k.clone(), h.queues.clone()))
                .collect(),
            role_hosts: d
                .roles
                .iter()
                .map(|(k, r)| (k.clone(), r.hosts.clone()))
                .collect(),
            schedule_entries: d
                .schedules
                .iter()
                .map(|(k, s)| (k.clone(), s.entries.clone()))
                .collect(),
        }
    }
}

/// Compares two desired states. `now` anchors the next fire times shown for schedules.
pub fn diff(before: &DesiredState, after: &DesiredState, now: DateTime<Utc>) -> Plan {
    // Only the candidates can change; the sides are built for them alone (copying every
    // object of a large fleet cost more than the comparison).
    let ids = candidates(before, after);
    let before_side = Side::of_some(before, &ids);
    let after_side = Side::of_some(after, &ids);
    diff_among(&before_side, &after_side, after, &ids, now)
}

/// The objects that may differ between two desired states: added, removed or changed
/// specs, hosts whose queues changed and schedules whose targets changed (what
/// [`diff_sides`] would report), in plan order. Compares without copying.
///
/// Values the two states share (the daemon's per-object compile keeps the previous
/// revision's `Arc`s for what a change did not reach) are equal without a look inside.
pub fn candidates(before: &DesiredState, after: &DesiredState) -> Vec<ObjectId> {
    use std::sync::Arc;
    let mut out: BTreeSet<ObjectId> = BTreeSet::new();
    merge_changed(&before.objects, &after.objects, |b, a| match (b, a) {
        (Some(b), Some(a)) => !Arc::ptr_eq(b, a) && b.hash != a.hash,
        _ => true,
    })
    .for_each(|id| {
        out.insert(id.clone());
    });
    // Derived facts of objects present on both sides (an added or removed object is a
    // candidate already).
    let both = |kind: Kind, name: &String| {
        let id = ObjectId {
            kind,
            name: name.clone(),
        };
        (before.objects.contains_key(&id) && after.objects.contains_key(&id)).then_some(id)
    };
    for name in merge_changed(&before.hosts, &after.hosts, |b, a| match (b, a) {
        (Some(b), Some(a)) => !Arc::ptr_eq(b, a) && b.queues != a.queues,
        _ => false,
    }) {
        out.extend(both(Kind::Host, name));
    }
    for name in merge_changed(&before.schedules, &after.schedules, |b, a| match (b, a) {
        (Some(b), Some(a)) => !Arc::ptr_eq(b, a) && b.entries != a.entries,
        _ => false,
    }) {
        out.extend(both(Kind::Schedule, name));
    }
    out.into_iter().collect()
}

/// The keys of two sorted maps for which `changed(before, after)` holds (`None`: the
/// key is absent on that side), walking both maps once.
fn merge_changed<'a, K: Ord, V>(
    before: &'a BTreeMap<K, V>,
    after: &'a BTreeMap<K, V>,
    changed: impl Fn(Option<&V>, Option<&V>) -> bool + 'a,
) -> impl Iterator<Item = &'a K> + 'a {
    let mut b = before.iter().peekable();
    let mut a = after.iter().peekable();
    std::iter::from_fn(move || loop {
        let (key, bv, av) = match (b.peek(), a.peek()) {
            (None, None) => return None,
            (Some(&(bk, bv)), None) => {
                b.next();
                (bk, Some(bv), None)
            }
            (None, Some(&(ak, av))) => {
                a.next();
                (ak, None, Some(av))
            }
            (Some(&(bk, bv)), Some(&(ak, av))) => match bk.cmp(ak) {
                std::cmp::Ordering::Less => {
                    b.next();
                    (bk, Some(bv), None)
                }
                std::cmp::Ordering::Greater => {
                    a.next();
                    (ak, None, Some(av))
                }
                std::cmp::Ordering::Equal => {
                    b.next();
                    a.next();
                    (bk, Some(bv), Some(av))
                }
            },
        };
        if changed(bv, av) {
            return Some(key);
        }
    })
}

/// Compares a "before" side (e.g. the live state) with a desired state.
pub fn diff_sides(before: &Side, after: &DesiredState, now: DateTime<Utc>) -> Plan {
    let after_side = Side::of(after);
    let ids: BTreeSet<&ObjectId> = before.objects.keys().chain(after.objects.keys()).collect();
    diff_among(before, &after_side, after, ids, now)
}

/// [`diff_sides`] over the objects `ids` only, with the "after" side given: both sides
/// need to hold only these objects (and the hosts, roles and schedules they name), so an
/// incremental planner that knows which objects may differ does not copy the rest.
pub fn diff_among<'a>(
    before: &Side,
    after_side: &Side,
    after: &DesiredState,
    ids: impl IntoIterator<Item = &'a ObjectId>,
    now: DateTime<Utc>,
) -> Plan {
    let mut changes = Vec::new();
    for id in ids {
        let b = before.objects.get(id);
        let a = after.objects.get(id);
        let action = match (b, a) {
            (None, Some(_)) => Action::Add,
            (Some(_), None) => Action::Remove,
            (Some(x), Some(y)) if x.hash != y.hash => Action::Change,
            (Some(_), Some(_)) => {
                if derived_changed(id, before, after_side) {
                    Action::Change
                } else {
                    continue;
                }
            }
            (None, None) => continue,
        };
        let spec_changed = b.map(|o| &o.hash) != a.map(|o| &o.hash);
        changes.push(Change {
            kind: id.kind,
            name: id.name.clone(),
            action,
            spec_changed,
            before_hash: b.map(|o| o.hash.clone()),
            after_hash: a.map(|o| o.hash.clone()),
            before: b.map(|o| o.normalized.tree()),
            after: a.map(|o| o.normalized.tree()),
            effects: effects(id, action, before, after_side, after, now),
        });
    }
    Plan { changes }
}

/// Whether an object with an unchanged spec still changes what the fleet sees.
fn derived_changed(id: &ObjectId, before: &Side, after: &Side) -> bool {
    match id.kind {
        Kind::Schedule => {
            before.schedule_entries.get(&id.name) != after.schedule_entries.get(&id.name)
        }
        Kind::Host => before.host_queues.get(&id.name) != after.host_queues.get(&id.name),
        Kind::Cluster | Kind::Role => false,
    }
}

fn effects(
    id: &ObjectId,
    action: Action,
    before: &Side,
    after_side: &Side,
    after: &DesiredState,
    now: DateTime<Utc>,
) -> Vec<Effect> {
    let mut out = Vec::new();
    match id.kind {
        Kind::Cluster => {
            if action == Action::Change {
                out.push(Effect::AffectedHosts {
                    hosts: after.hosts.keys().cloned().collect(),
                });
            }
        }
        Kind::Role => {
            let mut hosts: BTreeSet<String> = BTreeSet::new();
            for s in [before, after_side] {
                if let Some(r) = s.role_hosts.get(&id.name) {
                    hosts.extend(r.iter().cloned());
                }
            }
            out.push(Effect::AffectedHosts {
                hosts: hosts.into_iter().collect(),
            });
        }
        Kind::Host => {
            let q = |s: &Side| s.host_queues.get(&id.name).cloned().unwrap_or_default();
            let (b, a) = (q(before), q(after_side));
            if b != a {
                out.push(Effect::Queues {
                    before: b,
                    after: a,
                });
            }
        }
        Kind::Schedule => {
            let entries = |s: &Side| {
                s.schedule_entries
                    .get(&id.name)
                    .cloned()
                    .unwrap_or_default()
            };
            out.push(Effect::Targets {
                before: entries(before),
                after: entries(after_side),
            });
            let a = after.schedules.get(&id.name);
            if let Some(s) = a {
                if !s.enabled {
                    out.push(Effect::Disabled);
                }
                match &s.trigger {
                    Trigger::Cron(ct) if s.enabled => {
                        if let Ok(tz) = s.timezone.parse::<chrono_tz::Tz>() {
                            out.push(Effect::NextRuns {
                                timezone: s.timezone.clone(),
                                times: ct
                                    .next_fire_times(tz, now, 3)
                                    .iter()
                                    .map(DateTime::to_rfc3339)
                                    .collect(),
                            });
                        }
                    }
                    Trigger::Every(secs) if s.enabled => out.push(Effect::Interval {
                        every: format_duration(*secs),
                    }),
                    _ => {}
                }
            }
        }
    }
    out
}

/// The "before" side of a plan, rebuilt from the live image.
pub fn live_side(keys: &crate::state::Keys, image: &crate::state::Image) -> Side {
    use crate::state::KeyValue;
    let objects = crate::state::live_objects(keys, image);
    let mut side = Side::default();
    for (id, o) in &objects {
        match id.kind {
            Kind::Host => {
                let queues = match image.get(&keys.worker(&id.name)) {
                    Some(KeyValue::Hash(w)) => w
                        .get("queues")
                        .and_then(|q| serde_json::from_str(q).ok())
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                side.host_queues.insert(id.name.clone(), queues);
            }
            Kind::Role => {
                let hosts = match image.get(&keys.role_hosts(&id.name)) {
                    Some(KeyValue::Set(s)) => s.iter().cloned().collect(),
                    _ => Vec::new(),
                };
                side.role_hosts.insert(id.name.clone(), hosts);
            }
            Kind::Schedule => {
                side.schedule_entries
                    .insert(id.name.clone(), o.entries.clone());
            }
            Kind::Cluster => {}
        }
    }
    side.objects = objects
        .into_iter()
        .map(|(id, o)| (id, std::sync::Arc::new(o.object)))
        .collect();
    side
}

/// A plan against the live state, with what was observed to make it.
#[derive(Debug)]
pub struct LivePlan {
    pub plan: Plan,
    /// The "before" side, rebuilt from the live image.
    pub side: Side,
    pub observed: crate::state::Observed,
}

impl LivePlan {
    /// The commit the live state was applied from, when recorded.
    pub fn applied_revision(&self) -> Option<String> {
        self.observed
            .applied
            .get("revision")
            .cloned()
            .filter(|s| !s.is_empty())
    }
}

/// Plans `desired` against the live state: observes the keys `desired` would write (and
/// those the digests index lists), rebuilds the live side, and diffs. Reads only.
///
/// # Errors
/// Redis errors.
pub fn against_live(
    store: &mut crate::state::Store,
    desired: &DesiredState,
    now: DateTime<Utc>,
) -> Result<LivePlan, crate::state::StateError> {
    let keys = store.keys().clone();
    let image = crate::state::desired_image(&keys, desired, &None);
    let wanted: Vec<String> = image.into_keys().collect();
    let observed = store.observe(&wanted)?;
    let side = live_side(&keys, &observed.image);
    let plan = diff_sides(&side, desired, now);
    Ok(LivePlan {
        plan,
        side,
        observed,
    })
}
