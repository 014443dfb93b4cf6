//! Incremental work for the `watch` daemon: compile a new revision re-reading only the
//! manifest files git says changed, and reconcile it against the state the daemon last
//! applied instead of observing every key (see [`super::reconcile_from`]).
//!
//! Correctness rule: everything here must give exactly what the full path gives (the
//! differential test `tests/cli/test_perf_incremental.rs` checks plans and the resulting
//! Redis state over a generated history).

use std::collections::BTreeMap;

use git2::Repository;

use super::{Options, Revision};
use crate::desired::DesiredState;
use crate::manifest::{self, LoadedFiles};
use crate::render::RevisionInfo;
use crate::source::{self, BlobFile};
use crate::state::{self, Image, Keys, Observed, Release};
use crate::CompileError;

/// What the live state was left as by the last reconcile of this process.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// The applied commit.
    pub revision: String,
    /// The generation the reconcile left (its own apply, or the one it found for a no-op).
    pub generation: u64,
    /// The applied desired state (shared with the compiled revision).
    pub state: std::sync::Arc<DesiredState>,
    /// The managed keys as they were left (with the digests hash).
    pub image: Image,
    /// The release recorded with them.
    pub release: Release,
}

impl Baseline {
    /// Whether `head` (from [`crate::state::Store::observe_head`]) shows the live state
    /// still as this baseline left it: same revision, same generation, current layout.
    pub fn matches(&self, head: &Observed) -> bool {
        head.layout.as_deref() == Some(state::LAYOUT_VERSION)
            && head.generation == self.generation
            && head.applied.get("revision") == Some(&self.revision)
    }

    /// Whether every object removed from git since the baseline would be removed (the
    /// baseline path cannot keep objects: keeping needs their live keys).
    pub fn prunes_all(&self, next: &DesiredState, opts: &Options) -> bool {
        self.state
            .objects
            .iter()
            .filter(|(id, _)| !next.objects.contains_key(*id))
            .all(|(_, o)| {
                opts.prune
                    && o.normalized.annotation(super::PRUNE_ANNOTATION).as_deref()
                        != Some("disabled")
            })
    }
}

/// The desired image of `next`, reusing the baseline's digests for unchanged values.
pub fn desired_image_from(
    keys: &Keys,
    baseline: &Baseline,
    next: &DesiredState,
    release: &Release,
) -> Image {
    let img = state::desired_image_undigested(keys, next, release);
    state::with_digests_reusing(keys, img, &baseline.image)
}

/// Drops `value` on a short-lived thread: freeing a large fleet's desired state takes
/// tens of milliseconds that a reconcile need not wait for. Drops inline when no thread
/// can be started.
pub fn drop_later<T: Send + 'static>(value: T) {
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(value)));
    let theirs = std::sync::Arc::clone(&slot);
    let spawned = std::thread::Builder::new()
        .name("celeroot-drop".into())
        .spawn(move || {
            let v = theirs.lock().ok().and_then(|mut g| g.take());
            drop(v);
        });
    if spawned.is_err() {
        let v = slot.lock().ok().and_then(|mut g| g.take());
        drop(v);
    }
}

/// Counters of one [`Compiler::load`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Manifest files read and parsed.
    pub files_read: usize,
    /// Whether every file was read (no earlier revision, or the diff could not be used).
    pub full: bool,
    /// Whether only the objects the change reached were validated and compiled again
    /// (otherwise every object was).
    pub per_object: bool,
}

/// A compiler that keeps the parsed files of the last revision it loaded, keyed by
/// path and blob id. Loading a descendant (or any other commit) re-reads only the blobs
/// that git's tree diff reports as added, modified or removed; validation and
/// compilation then run over the cached objects.
///
/// After a revision compiled, it also keeps the validated manifests, each file's own
/// diagnostics and the compiled state ([`Warm`]). A change that touches no Cluster and
/// is still valid is then validated and compiled per object: the own checks of the
/// changed files' objects, the cross-object checks again (they only read), and
/// [`crate::desired::recompile`] of what the change reaches. Anything else (an error,
/// a Cluster change, a name defined twice) compiles every object again, so its
/// diagnostics are exactly the full path's.
#[derive(Debug)]
pub struct Compiler {
    path: String,
    commit: Option<String>,
    files: BTreeMap<String, (git2::Oid, LoadedFiles)>,
    sources: BTreeMap<String, String>,
    warm: Option<Warm>,
}

/// What the last successful compile left, for the next one to start from.
#[derive(Debug)]
struct Warm {
    manifests: crate::validate::Manifests,
    /// Own diagnostics ([`crate::validate::own_diagnostics`]) by file; files without
    /// any are left out.
    own: crate::validate::OwnDiagnostics,
    /// Each schedule's cross-object diagnostics ([`crate::validate::revalidate`]).
    schedules: crate::validate::ScheduleDiagnostics,
    state: std::sync::Arc<DesiredState>,
}

fn parse_one(f: &BlobFile) -> LoadedFiles {
    manifest::load_files(std::slice::from_ref(&f.file))
}

fn parse_all(files: &[BlobFile]) -> Vec<LoadedFiles> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(8);
    if threads < 2 || files.len() < 256 {
        return files.iter().map(parse_one).collect();
    }
    let per = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|chunk| s.spawn(move || chunk.iter().map(parse_one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

impl Compiler {
    /// A compiler for the manifests under `path` (relative to the repository root).
    pub fn new(path: &str) -> Self {
        Compiler {
            path: path.to_string(),
            commit: None,
            files: BTreeMap::new(),
            sources: BTreeMap::new(),
            warm: None,
        }
    }

    /// Loads, validates and compiles `rev` of `repo` like [`super::load_revision`].
    ///
    /// # Errors
    /// As [`super::load_revision`].
    pub fn load(
        &mut self,
        repo: &Repository,
        rev: &str,
    ) -> Result<(Revision, LoadStats), CompileError> {
        let (compiled, stats) = self.compile(repo, rev)?;
        let commit = compiled.revision.commit.clone().unwrap_or_default();
        let subject = source::commit_subject(repo, &commit)?;
        let release = source::release_id(repo, &commit, &compiled.state.deploy.paths)?;
        Ok((
            Revision {
                compiled,
                subject,
                release,
                path: Some(source::normalize_path(&self.path)?),
            },
            stats,
        ))
    }

    /// Loads, validates and compiles `rev` of `repo` like [`crate::compile_snapshot`] of
    /// [`source::read_git`] (`celeroot diff --from A --to B` compiles B from A's files).
    ///
    /// # Errors
    /// As [`crate::compile_snapshot`] and [`source::read_git`].
    pub fn compile(
        &mut self,
        repo: &Repository,
        rev: &str,
    ) -> Result<(crate::Compiled, LoadStats), CompileError> {
        let commit = source::resolve_commit(repo, rev)?.id().to_string();
        let changes = match &self.commit {
            Some(prev) => source::changed_files(repo, prev, &commit, &self.path).ok(),
            None => None,
        };
        let revision = RevisionInfo {
            rev: rev.to_string(),
            commit: Some(commit.clone()),
        };
        let (stats, warm) = match changes {
            Some(ch) => {
                let mut old: Vec<LoadedFiles> = Vec::new();
                for p in &ch.removed {
                    if let Some((_, l)) = self.files.remove(p) {
                        old.push(l);
                    }
                    self.sources.remove(p);
                }
                for w in &ch.written {
                    let l = parse_one(w);
                    if let Some((_, l)) = self.files.insert(w.file.path.clone(), (w.blob, l)) {
                        old.push(l);
                    }
                    self.sources
                        .insert(w.file.path.clone(), w.file.text.clone());
                }
                let warm = self.warm.take().and_then(|w| {
                    let paths = ch
                        .removed
                        .iter()
                        .chain(ch.written.iter().map(|w| &w.file.path));
                    self.warm_compile(w, &old, paths, revision.clone())
                });
                (
                    LoadStats {
                        files_read: ch.written.len(),
                        full: false,
                        per_object: warm.is_some(),
                    },
                    warm,
                )
            }
            None => {
                self.commit = None;
                self.warm = None;
                self.files.clear();
                self.sources.clear();
                let (_, files) = source::read_git_blobs(repo, &commit, &self.path)?;
                let parsed = parse_all(&files);
                for (f, l) in files.into_iter().zip(parsed) {
                    self.files.insert(f.file.path.clone(), (f.blob, l));
                    self.sources.insert(f.file.path, f.file.text);
                }
                (
                    LoadStats {
                        files_read: self.files.len(),
                        full: true,
                        per_object: false,
                    },
                    None,
                )
            }
        };
        self.commit = Some(commit.clone());
        if let Some(compiled) = warm {
            return Ok((compiled, stats));
        }
        let mut loaded = LoadedFiles::default();
        for (_, l) in self.files.values() {
            loaded.objects.extend(l.objects.iter().cloned());
            loaded.diagnostics.extend(l.diagnostics.iter().cloned());
            loaded.undecoded.extend(l.undecoded.iter().cloned());
        }
        let sources = &self.sources;
        let (compiled, manifests, kept) = crate::compile_loaded_keeping(revision, loaded, |d| {
            crate::diagnostic::attach_source_lines(d, sources);
        })?;
        self.warm = Some(Warm {
            manifests,
            own: kept.own,
            schedules: kept.schedules,
            state: std::sync::Arc::clone(&compiled.state),
        });
        Ok((compiled, stats))
    }

    /// The per-object compile of a change from `warm` (see [`Compiler`]): `old` holds
    /// the changed files' previous contents, `self.files` their new ones. `None` when
    /// the change must be compiled in full.
    fn warm_compile<'p>(
        &mut self,
        mut warm: Warm,
        old: &[LoadedFiles],
        paths: impl Iterator<Item = &'p String>,
        revision: RevisionInfo,
    ) -> Option<crate::Compiled> {
        use crate::manifest::Kind;
        use std::collections::BTreeSet;
        let paths: BTreeSet<&String> = paths.collect();
        let mut removed: Vec<crate::manifest::ObjectId> = Vec::new();
        for l in old {
            if !l.undecoded.is_empty()
                || l.diagnostics
                    .iter()
                    .any(crate::diagnostic::Diagnostic::is_error)
            {
                return None;
            }
            removed.extend(l.objects.iter().map(|o| o.body.id()));
        }
        let mut added: Vec<crate::manifest::Object> = Vec::new();
        let mut own: Vec<(&String, Vec<crate::diagnostic::Diagnostic>)> = Vec::new();
        for &p in &paths {
            let Some((_, l)) = self.files.get(p) else {
                own.push((p, Vec::new()));
                continue;
            };
            if !l.undecoded.is_empty()
                || l.diagnostics
                    .iter()
                    .any(crate::diagnostic::Diagnostic::is_error)
            {
                return None;
            }
            let mut diags = Vec::new();
            for o in &l.objects {
                diags.extend(crate::validate::own_diagnostics(o));
            }
            if diags.iter().any(crate::diagnostic::Diagnostic::is_error) {
                return None;
            }
            own.push((p, diags));
            added.extend(l.objects.iter().cloned());
        }
        let mut changed: BTreeSet<crate::manifest::ObjectId> = removed.iter().cloned().collect();
        changed.extend(added.iter().map(|o| o.body.id()));
        if changed.iter().any(|id| id.kind == Kind::Cluster) {
            return None;
        }
        let cross =
            crate::validate::revalidate(&mut warm.manifests, &mut warm.schedules, &removed, added)?;
        for (p, diags) in own {
            if diags.is_empty() {
                warm.own.remove(p);
            } else {
                warm.own.insert(p.clone(), diags);
            }
        }
        let state = std::sync::Arc::new(crate::desired::recompile(
            &warm.state,
            &warm.manifests,
            &changed,
        ));
        let mut warnings: Vec<crate::diagnostic::Diagnostic> = self
            .files
            .values()
            .flat_map(|(_, l)| l.diagnostics.iter().cloned())
            .chain(warm.own.values().flatten().cloned())
            .chain(cross)
            .collect();
        crate::diagnostic::sort(&mut warnings);
        crate::diagnostic::attach_source_lines(&mut warnings, &self.sources);
        warm.state = std::sync::Arc::clone(&state);
        self.warm = Some(warm);
        Some(crate::Compiled {
            revision,
            state,
            warnings,
        })
    }
}

/// The objects that may differ between two desired states ([`crate::plan::candidates`]).
pub fn candidates(before: &DesiredState, after: &DesiredState) -> Vec<crate::manifest::ObjectId> {
    crate::plan::candidates(before, after)
}

/// The digest of the objects hash `fields`, patched from `recorded` (its digest before)
/// with the fields that changed and their values before (`None`: `recorded` is of an
/// earlier format).
fn objects_digest(
    recorded: &str,
    fields: &BTreeMap<String, String>,
    changed: &BTreeMap<String, Option<String>>,
) -> Option<String> {
    use state::digest::{Sum, Tag};
    let mut sum = Sum::parse(recorded)?;
    for (f, was) in changed {
        if let Some(v) = was {
            sum.sub(Sum::element(Tag::Hash, &[f, v]));
        }
        if let Some(v) = fields.get(f) {
            sum.add(Sum::element(Tag::Hash, &[f, v]));
        }
    }
    Some(sum.render())
}

/// The digest of RedBeat's index `members`, patched from `recorded` with the members
/// that may have changed and whether each was a member before (`None`: `recorded` is of
/// an earlier format).
fn index_digest(
    recorded: &str,
    members: &std::collections::BTreeSet<String>,
    changed: &BTreeMap<String, bool>,
) -> Option<String> {
    use state::digest::{Sum, Tag};
    let mut sum = Sum::parse(recorded)?;
    for (m, was) in changed {
        match (*was, members.contains(m)) {
            (true, false) => sum.sub(Sum::element(Tag::Members, &[m])),
            (false, true) => sum.add(Sum::element(Tag::Members, &[m])),
            _ => {}
        }
    }
    Some(sum.render())
}

/// The result of [`patch_image`]: the new image, and the keys it changed with their
/// values before and after (absent: no such key), for the key-level planner.
pub struct Patched {
    pub image: Image,
    pub before: Image,
    pub after: Image,
}

/// Patches the baseline's image into the desired image of `after`, touching only the
/// keys of the objects in `ids` (from [`candidates`]) and what depends on them: the
/// objects, hosts and digests hashes, the workers of changed hosts and of the hosts of
/// changed roles, the role indexes, and the RedBeat entries of changed schedules.
/// `None` when the change is not local (the Cluster object or the release changed):
/// then the caller builds the whole image.
pub fn patch_image(
    keys: &Keys,
    before: &DesiredState,
    image: Image,
    before_release: &Release,
    after: &DesiredState,
    release: &Release,
    ids: &[crate::manifest::ObjectId],
) -> Result<Patched, Image> {
    use crate::manifest::Kind;
    use state::KeyValue;
    use std::collections::BTreeSet;
    if before_release != release || ids.iter().any(|id| id.kind == Kind::Cluster) {
        return Err(image);
    }
    let mut img = image;
    let mut old = Image::new();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    fn touch(touched: &mut BTreeSet<String>, img: &Image, k: &str, old: &mut Image) {
        if touched.insert(k.to_string()) {
            if let Some(v) = img.get(k) {
                old.insert(k.to_string(), v.clone());
            }
        }
    }
    let set_or_remove = |img: &mut Image, k: String, v: Option<KeyValue>| match v {
        Some(v) => {
            img.insert(k, v);
        }
        None => {
            img.remove(&k);
        }
    };

    let mut hosts: BTreeSet<&str> = BTreeSet::new();
    let mut roles: BTreeSet<&str> = BTreeSet::new();
    // The objects and digests hashes are large: the planner gets only their changed
    // fields (the others are equal on both sides).
    let objects_key = keys.objects();
    touched.insert(objects_key.clone());
    let mut object_fields: BTreeMap<String, Option<String>> = BTreeMap::new();
    for id in ids {
        let entry = after.objects.get(id).map(|o| {
            let entries = match id.kind {
                Kind::Schedule => after.schedules.get(&id.name).map(|s| s.entries.as_slice()),
                _ => None,
            };
            state::object_entry(&o.hash, &o.normalized, entries)
        });
        if let Some(KeyValue::Hash(fields)) = img.get_mut(&objects_key) {
            let field = id.to_string();
            let was = match entry {
                Some(e) => fields.insert(field.clone(), e),
                None => fields.remove(&field),
            };
            object_fields.entry(field).or_insert(was);
        }
        match id.kind {
            Kind::Host => {
                hosts.insert(&id.name);
                for s in [before, after] {
                    if let Some(h) = s.hosts.get(&id.name) {
                        roles.extend(h.roles.iter().map(String::as_str));
                    }
                }
            }
            Kind::Role => {
                roles.insert(&id.name);
                for s in [before, after] {
                    if let Some(r) = s.roles.get(&id.name) {
                        hosts.extend(r.hosts.iter().map(String::as_str));
                    }
                }
            }
            Kind::Schedule | Kind::Cluster => {}
        }
    }
    // The hosts set (touched only when a host comes or goes: it has a member per host,
    // and a touched key is copied and digested) and the workers.
    let hosts_key = keys.hosts();
    for h in &hosts {
        let present = after.hosts.contains_key(*h);
        let listed = matches!(img.get(&hosts_key), Some(KeyValue::Set(set)) if set.contains(*h));
        if present != listed {
            touch(&mut touched, &img, &hosts_key, &mut old);
            if let Some(KeyValue::Set(set)) = img.get_mut(&hosts_key) {
                if present {
                    set.insert(h.to_string());
                } else {
                    set.remove(*h);
                }
            } else if present {
                img.insert(
                    hosts_key.clone(),
                    KeyValue::Set(BTreeSet::from([h.to_string()])),
                );
            }
        }
        let k = keys.worker(h);
        touch(&mut touched, &img, &k, &mut old);
        let v = state::worker_fields(after, h, release).map(KeyValue::Hash);
        set_or_remove(&mut img, k, v);
    }
    // The role indexes.
    for r in &roles {
        let k = keys.role_hosts(r);
        touch(&mut touched, &img, &k, &mut old);
        let v = after
            .roles
            .get(*r)
            .map(|c| KeyValue::Set(c.hosts.iter().cloned().collect()));
        set_or_remove(&mut img, k, v);
    }
    // RedBeat entries of the changed schedules, and the schedule index (a changed entry
    // is re-indexed: `state::plan_keys`).
    let zkey = keys.redbeat_schedule();
    let now = chrono::Utc::now();
    // The index has a member per entry (20,000 on a large fleet): like the objects hash,
    // it is not copied; the planner gets the members that may have changed (and whether
    // each was a member before), and its digest is patched with them.
    let z_existed = img.contains_key(&zkey);
    let mut z_members: BTreeMap<String, bool> = BTreeMap::new();
    let mut z_track = |img: &Image, k: &str| {
        let was = matches!(img.get(&zkey), Some(KeyValue::Members { members, .. }) if members.contains(k));
        z_members.entry(k.to_string()).or_insert(was);
    };
    if ids.iter().any(|id| id.kind == Kind::Schedule) {
        touched.insert(zkey.clone());
    }
    for id in ids.iter().filter(|id| id.kind == Kind::Schedule) {
        if let Some(s) = before.schedules.get(&id.name) {
            for e in &s.entries {
                let k = keys.redbeat_entry(&state::redbeat_entry_name(&id.name, e));
                touch(&mut touched, &img, &k, &mut old);
                z_track(&img, &k);
                img.remove(&k);
                if let Some(KeyValue::Members { members, .. }) = img.get_mut(&zkey) {
                    members.remove(&k);
                }
            }
        }
        if let Some(s) = after.schedules.get(&id.name) {
            for e in &s.entries {
                let entry = state::redbeat_entry_name(&id.name, e);
                let k = keys.redbeat_entry(&entry);
                touch(&mut touched, &img, &k, &mut old);
                z_track(&img, &k);
                let owned = BTreeMap::from([(
                    "definition".to_string(),
                    state::redbeat_definition(&entry, s, &e.queue),
                )]);
                let init =
                    BTreeMap::from([("meta".to_string(), state::redbeat_meta(now, &s.timezone))]);
                img.insert(k.clone(), KeyValue::Fields { owned, init });
                match img.get_mut(&zkey) {
                    Some(KeyValue::Members { members, .. }) => {
                        members.insert(k);
                    }
                    _ => {
                        img.insert(
                            zkey.clone(),
                            KeyValue::Members {
                                members: BTreeSet::from([k]),
                                now: 0,
                            },
                        );
                    }
                }
            }
        }
    }
    if let Some(KeyValue::Members { now: n, .. }) = img.get_mut(&zkey) {
        *n = u64::try_from(now.timestamp()).unwrap_or(0);
    }
    // Redis has no empty collections; then the digests of what changed.
    for k in &touched {
        let empty = match img.get(k) {
            Some(KeyValue::Hash(m)) => m.is_empty(),
            Some(KeyValue::Set(s)) => s.is_empty(),
            Some(KeyValue::Fields { owned, .. }) => owned.is_empty(),
            Some(KeyValue::Members { members, .. }) => members.is_empty(),
            _ => false,
        };
        if empty {
            img.remove(k);
        }
    }
    // Each digest is patched from the one recorded for the value before: only the
    // elements that changed are hashed (the objects hash holds 20 MB on 10,000 hosts).
    let dkey = keys.digests();
    let recorded = |k: &str| match img.get(&dkey) {
        Some(KeyValue::Hash(d)) => d.get(k).cloned(),
        _ => None,
    };
    let fresh: Vec<(String, Option<String>)> = touched
        .iter()
        .map(|k| {
            let now = img.get(k);
            let digest = match (now, recorded(k)) {
                (Some(KeyValue::Hash(fields)), Some(r)) if *k == objects_key => {
                    objects_digest(&r, fields, &object_fields)
                }
                (Some(KeyValue::Members { members, .. }), Some(r)) if *k == zkey => {
                    index_digest(&r, members, &z_members)
                }
                (Some(v), Some(r)) => match old.get(k) {
                    Some(was) => Some(v.digest_from(was, &r)),
                    None => Some(v.digest()),
                },
                (Some(v), None) => Some(v.digest()),
                (None, _) => None,
            };
            (k.clone(), digest.or_else(|| now.map(KeyValue::digest)))
        })
        .collect();
    let mut digest_fields: BTreeMap<String, Option<String>> = BTreeMap::new();
    if let Some(KeyValue::Hash(d)) = img.get_mut(&dkey) {
        for (k, v) in fresh {
            let was = match v {
                Some(v) => d.insert(k.clone(), v),
                None => d.remove(&k),
            };
            digest_fields.insert(k, was);
        }
    }
    let mut after_sub: Image = touched
        .iter()
        .filter(|k| **k != objects_key && **k != zkey)
        .filter_map(|k| img.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    match img.get(&zkey).filter(|_| touched.contains(&zkey)) {
        Some(KeyValue::Members { members, now }) => {
            // The members that may have changed, and one that did not on both sides (an
            // empty side would read as "delete the key").
            let common = members.iter().find(|m| !z_members.contains_key(*m));
            let side = |before: bool| -> std::collections::BTreeSet<String> {
                z_members
                    .iter()
                    .filter(|(m, was)| if before { **was } else { members.contains(*m) })
                    .map(|(m, _)| m)
                    .chain(common)
                    .cloned()
                    .collect()
            };
            if z_existed {
                old.insert(
                    zkey.clone(),
                    KeyValue::Members {
                        members: side(true),
                        now: *now,
                    },
                );
            }
            after_sub.insert(
                zkey.clone(),
                KeyValue::Members {
                    members: side(false),
                    now: *now,
                },
            );
        }
        _ if z_existed && touched.contains(&zkey) => {
            // The last entry went: the index is deleted.
            old.insert(
                zkey.clone(),
                KeyValue::Members {
                    members: z_members
                        .iter()
                        .filter(|(_, was)| **was)
                        .map(|(m, _)| m.clone())
                        .collect(),
                    now: 0,
                },
            );
        }
        _ => {}
    }
    for (key, fields) in [(&objects_key, object_fields), (&dkey, digest_fields)] {
        let now_fields = match img.get(key) {
            Some(KeyValue::Hash(h)) => Some(h),
            _ => None,
        };
        let mut b = BTreeMap::new();
        let mut a = BTreeMap::new();
        // One unchanged field on both sides: an empty side would read as "delete the key".
        if let Some((f, v)) =
            now_fields.and_then(|h| h.iter().find(|(f, _)| !fields.contains_key(*f)))
        {
            b.insert(f.clone(), v.clone());
            a.insert(f.clone(), v.clone());
        }
        for (f, was) in fields {
            if let Some(v) = was {
                b.insert(f.clone(), v);
            }
            if let Some(v) = now_fields.and_then(|h| h.get(&f)) {
                a.insert(f, v.clone());
            }
        }
        old.insert(key.clone(), KeyValue::Hash(b));
        after_sub.insert(key.clone(), KeyValue::Hash(a));
    }
    Ok(Patched {
        image: img,
        before: old,
        after: after_sub,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;

    fn compiled(keep: impl Fn(&str) -> bool) -> crate::Compiled {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut snapshot = source::read_worktree(root, "manifests")
            .unwrap_or_else(|e| panic!("the example manifests: {e}"));
        snapshot.files.retain(|f| keep(&f.path));
        crate::compile_snapshot(snapshot).unwrap_or_else(|e| panic!("it compiles: {e}"))
    }

    /// Patching from `a` to `b` gives `b`'s whole image, and the writes planned from the
    /// patch's sides turn `a`'s image into it.
    fn patch_equals_whole(a: &DesiredState, b: &DesiredState) {
        let keys = Keys::new(&a.cluster);
        let image = state::desired_image(&keys, a, &None);
        let whole = state::desired_image(&keys, b, &None);
        let ids = candidates(a, b);
        let patched = patch_image(&keys, a, image.clone(), &None, b, &None, &ids)
            .unwrap_or_else(|_| panic!("a local change"));
        assert_eq!(patched.image, whole, "the patched image");
        let ops = state::writes::plan_keys(&patched.after, &patched.before);
        assert_eq!(
            state::writes::apply_ops(image, &ops),
            whole,
            "the planned writes"
        );
        for (k, d) in match whole.get(&keys.digests()) {
            Some(state::KeyValue::Hash(d)) => d.clone(),
            _ => BTreeMap::new(),
        } {
            assert_eq!(
                patched.image.get(&k).map(state::KeyValue::digest),
                Some(d),
                "{k}"
            );
        }
    }

    #[test]
    fn the_last_schedule_removed_and_the_first_added_patch_like_a_whole_image() {
        let with = compiled(|_| true);
        let without = compiled(|p| !p.contains("schedules/"));
        assert!(with
            .state
            .objects
            .keys()
            .any(|id| id.kind == Kind::Schedule));
        assert!(without.state.schedules.is_empty());
        patch_equals_whole(&with.state, &without.state);
        patch_equals_whole(&without.state, &with.state);
    }

    #[test]
    fn one_schedule_removed_and_added_back_patch_like_a_whole_image() {
        let with = compiled(|_| true);
        let one = with
            .state
            .objects
            .keys()
            .find(|id| id.kind == Kind::Schedule)
            .map(|id| id.name.clone())
            .unwrap_or_default();
        let without = compiled(|p| !p.ends_with(&format!("/{one}.yaml")));
        assert_eq!(
            without.state.schedules.len() + 1,
            with.state.schedules.len()
        );
        patch_equals_whole(&with.state, &without.state);
        patch_equals_whole(&without.state, &with.state);
    }
}
