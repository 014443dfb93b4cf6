//! Property tests for the planner: applying a plan to the state it was made from yields
//! the target state, an unchanged state plans nothing, and plans are symmetric.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is the report

use std::collections::BTreeMap;

use celeroot::desired::{DesiredObject, DesiredState};
use celeroot::manifest::ObjectId;
use celeroot::plan::keys::{apply_ops, plan_keys};
use celeroot::plan::{diff, Action, Plan};
use celeroot::source::{Snapshot, SourceFile};
use celeroot::state::{desired_image, Keys};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Fleet {
    roles: BTreeMap<usize, u32>,
    hosts: BTreeMap<usize, (Vec<usize>, bool)>,
    schedules: BTreeMap<usize, (u32, Target, bool)>,
    timezone: bool,
}

#[derive(Debug, Clone)]
enum Target {
    Role(usize),
    Host(usize),
    Selector(bool),
    AnyRole(usize),
}

fn fleet() -> impl Strategy<Value = Fleet> {
    (
        prop::collection::btree_map(0usize..4, 1u32..8, 1..4),
        prop::collection::btree_map(
            0usize..6,
            (prop::collection::vec(0usize..4, 1..3), any::<bool>()),
            0..6,
        ),
        prop::collection::btree_map(
            0usize..4,
            (
                1u32..60,
                prop_oneof![
                    (0usize..4).prop_map(Target::Role),
                    (0usize..6).prop_map(Target::Host),
                    any::<bool>().prop_map(Target::Selector),
                    (0usize..4).prop_map(Target::AnyRole),
                ],
                any::<bool>(),
            ),
            0..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(roles, hosts, schedules, timezone)| Fleet {
            roles,
            hosts,
            schedules,
            timezone,
        })
}

/// Renders a fleet as manifest files, dropping references that would not validate.
fn files(f: &Fleet) -> Vec<SourceFile> {
    let mut out = Vec::new();
    let tz = if f.timezone { "Europe/Berlin" } else { "UTC" };
    out.push(SourceFile {
        path: "manifests/cluster.yaml".into(),
        text: format!("apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: prop\nspec:\n  timezone: {tz}\n"),
    });
    for (r, conc) in &f.roles {
        out.push(SourceFile {
            path: format!("manifests/roles/r{r}.yaml"),
            text: format!("apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: r{r}\nspec:\n  concurrency: {conc}\n"),
        });
    }
    for (h, (roles, env_a)) in &f.hosts {
        let mut rs: Vec<String> = roles
            .iter()
            .filter(|r| f.roles.contains_key(r))
            .map(|r| format!("r{r}"))
            .collect();
        rs.sort();
        rs.dedup();
        if rs.is_empty() {
            continue;
        }
        let env = if *env_a { "a" } else { "b" };
        out.push(SourceFile {
            path: format!("manifests/hosts/h{h}.yaml"),
            text: format!(
                "apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: h{h}\n  labels:\n    env: {env}\nspec:\n  address: 192.0.2.{h}\n  roles: [{}]\n",
                rs.join(", ")
            ),
        });
    }
    let host_exists = |h: &usize| {
        out.iter()
            .any(|s| s.path == format!("manifests/hosts/h{h}.yaml"))
    };
    let mut scheds = Vec::new();
    for (s, (minutes, target, enabled)) in &f.schedules {
        let (target, mode) = match target {
            Target::Role(r) if f.roles.contains_key(r) => (format!("role: r{r}"), "each"),
            Target::AnyRole(r) if f.roles.contains_key(r) => (format!("role: r{r}"), "any"),
            Target::Host(h) if host_exists(h) => (format!("host: h{h}"), "each"),
            Target::Selector(a) => (
                format!(
                    "selector: {{matchLabels: {{env: {}}}}}",
                    if *a { "a" } else { "b" }
                ),
                "each",
            ),
            _ => continue,
        };
        scheds.push(SourceFile {
            path: format!("manifests/schedules/s{s}.yaml"),
            text: format!(
                "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: s{s}\nspec:\n  every: {minutes}m\n  task: ops.tasks.t{s}\n  targets:\n    - {target}\n  mode: {mode}\n  enabled: {enabled}\n"
            ),
        });
    }
    out.extend(scheds);
    out
}

fn compile(f: &Fleet) -> DesiredState {
    let snapshot = Snapshot {
        label: "prop".into(),
        commit: None,
        files: files(f),
    };
    match celeroot::compile_snapshot(snapshot) {
        Ok(c) => std::sync::Arc::unwrap_or_clone(c.state),
        Err(e) => panic!("generated fleet must be valid: {e:?}"),
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default()
}

/// Applies a plan's object changes to a set of objects.
fn apply(
    objects: &BTreeMap<ObjectId, std::sync::Arc<DesiredObject>>,
    plan: &Plan,
) -> BTreeMap<ObjectId, serde_json::Value> {
    let mut out: BTreeMap<ObjectId, serde_json::Value> = objects
        .iter()
        .map(|(k, v)| (k.clone(), v.normalized.tree()))
        .collect();
    for c in &plan.changes {
        match (c.action, &c.after) {
            (Action::Add | Action::Change, Some(after)) => {
                out.insert(c.id(), after.clone());
            }
            (Action::Remove, None) => {
                out.remove(&c.id());
            }
            other => panic!("inconsistent change {other:?} for {}", c.id()),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn applying_the_plan_yields_the_target_state(a in fleet(), b in fleet()) {
        let (sa, sb) = (compile(&a), compile(&b));
        let plan = diff(&sa, &sb, now());
        let applied = apply(&sa.objects, &plan);
        let expected: BTreeMap<ObjectId, serde_json::Value> = sb.objects.iter().map(|(k, v)| (k.clone(), v.normalized.tree())).collect();
        prop_assert_eq!(applied, expected);
        // Every derived change (spec unchanged) really changes a schedule's targets or a host's queues.
        for c in plan.changes.iter().filter(|c| !c.spec_changed) {
            prop_assert_eq!(c.action, Action::Change);
            let name = &c.name;
            let derived = sa.schedules.get(name).map(|s| &s.entries) != sb.schedules.get(name).map(|s| &s.entries)
                || sa.hosts.get(name).map(|h| &h.queues) != sb.hosts.get(name).map(|h| &h.queues);
            prop_assert!(derived, "{} changed without a reason", c.id());
        }
    }

    #[test]
    fn the_key_plan_turns_the_live_image_into_the_desired_one(a in fleet(), b in fleet()) {
        // Live = what reconciling fleet `a` wrote; desired = fleet `b`.
        let keys = Keys::new("prop");
        let live = desired_image(&keys, &compile(&a), &None);
        let want = desired_image(&keys, &compile(&b), &Some("r-1".into()));
        let ops = plan_keys(&want, &live);
        prop_assert_eq!(apply_ops(live, &ops), want.clone());
        // Reconciling again plans nothing.
        prop_assert!(plan_keys(&want, &want).is_empty());
    }

    #[test]
    fn an_unchanged_state_plans_nothing(a in fleet()) {
        let s = compile(&a);
        prop_assert!(diff(&s, &s, now()).is_empty());
    }

    #[test]
    fn plans_are_symmetric(a in fleet(), b in fleet()) {
        let (sa, sb) = (compile(&a), compile(&b));
        let forward = diff(&sa, &sb, now()).summary();
        let backward = diff(&sb, &sa, now()).summary();
        prop_assert_eq!((forward.add, forward.change, forward.remove), (backward.remove, backward.change, backward.add));
    }
}
