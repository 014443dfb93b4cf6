//! The hosts of a revision indexed by role and by label, for the lookups of `validate`
//! (references) and `desired` (target resolution).
//!
//! Owns: [`HostIndex`]. Must not know: how targets are resolved or compiled.

use std::collections::BTreeMap;

use super::Host;

/// Whether a host with `labels` matches a selector's `match_labels` (every pair present).
pub fn selects(match_labels: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The hosts of a revision indexed by role and by label, so that resolving a role's
/// hosts or a selector costs the size of the answer, not the size of the fleet (a
/// 10,000-host repository with 20,000 schedules made the linear scans of
/// `desired::hosts_with_role` and `desired::select_hosts` quadratic). Answers are sorted by name and
/// equal to those functions' answers when built from hosts in name order.
#[derive(Debug, Default)]
pub struct HostIndex<'a> {
    names: Vec<&'a str>,
    by_role: std::collections::HashMap<&'a str, Vec<&'a str>>,
    by_label: std::collections::HashMap<(&'a str, &'a str), Vec<&'a str>>,
}

impl<'a> HostIndex<'a> {
    /// Indexes `hosts`, which must come in name order (as a `BTreeMap` iterates).
    pub fn new(hosts: impl Iterator<Item = (&'a String, &'a Host)>) -> Self {
        let mut ix = HostIndex::default();
        for (name, h) in hosts {
            let name = name.as_str();
            ix.names.push(name);
            for r in &h.spec.roles.value {
                let list = ix.by_role.entry(r.value.as_str()).or_default();
                if list.last() != Some(&name) {
                    list.push(name);
                }
            }
            if let Some(labels) = &h.metadata.labels {
                for (k, v) in &labels.value {
                    ix.by_label
                        .entry((k.as_str(), v.as_str()))
                        .or_default()
                        .push(name);
                }
            }
        }
        ix
    }

    /// Names of hosts that have `role` (as `desired::hosts_with_role`).
    pub fn with_role(&self, role: &str) -> &[&'a str] {
        self.by_role.get(role).map_or(&[], Vec::as_slice)
    }

    /// Names of hosts whose labels contain every pair of `match_labels` (as
    /// `desired::select_hosts`; an empty selector matches every host).
    pub fn select(&self, match_labels: &BTreeMap<String, String>) -> Vec<&'a str> {
        self.select_iter(match_labels).collect()
    }

    /// [`HostIndex::select`], one name at a time, for callers that may stop early.
    pub fn select_iter<'s>(
        &'s self,
        match_labels: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a str> + 's {
        let mut lists: Vec<&'s Vec<&'a str>> = Vec::with_capacity(match_labels.len());
        let mut none = false;
        for (k, v) in match_labels {
            match self.by_label.get(&(k.as_str(), v.as_str())) {
                Some(l) => lists.push(l),
                None => none = true,
            }
        }
        lists.sort_by_key(|l| l.len());
        let (first, rest): (&'s [&'a str], Vec<&'s Vec<&'a str>>) = if none {
            (&[], Vec::new())
        } else {
            match lists.split_first() {
                None => (self.names.as_slice(), Vec::new()),
                Some((first, rest)) => (first.as_slice(), rest.to_vec()),
            }
        };
        first
            .iter()
            .filter(move |n| rest.iter().all(|l| l.binary_search(n).is_ok()))
            .copied()
    }

    /// Whether a host named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.names.binary_search(&name).is_ok()
    }
}
