//! Scheduled backups (`celeroot watch --backup-every`): the leader writes a backup of its
//! cluster (`state::backup`) into `--backup-dir` every interval, the first as soon as it
//! leads, and deletes this cluster's backups beyond `--backup-keep`, oldest first.
//! Replicas that do not lead take none, so there is one backup per interval.
//!
//! Must not know: the archive's format (state::backup), HTTP.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{BackupSchedule, Config, LastBackup, Shared};
use crate::state::Store;

/// Runs until `stop`.
pub(super) fn run(shared: &Shared, cfg: &Config, b: &BackupSchedule, stop: &AtomicBool) {
    let pause = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut last: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let due = last.is_none_or(|t| t.elapsed() >= b.every);
        match shared.cluster.get() {
            Some(cluster) if due && shared.is_leader() => {
                last = Some(Instant::now());
                let report = once(cfg, cluster, b);
                match &report.error {
                    None => tracing::info!(
                        file = report.file.as_deref().unwrap_or_default(),
                        generation = report.generation,
                        pruned = report.pruned,
                        "backup written"
                    ),
                    Some(e) => tracing::warn!(error = %e, "backup failed"),
                }
                shared.update(|s| s.last_backup = Some(report));
            }
            _ => {}
        }
        pause(Duration::from_millis(500));
    }
}

fn once(cfg: &Config, cluster: &str, b: &BackupSchedule) -> LastBackup {
    let at = chrono::Utc::now();
    let mut report = LastBackup {
        at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        result: "failed".into(),
        ..LastBackup::default()
    };
    let taken = Store::connect(&cfg.redis, cluster)
        .and_then(|mut s| s.backup(env!("CARGO_PKG_VERSION")))
        .map_err(|e| e.to_string());
    let archive = match taken {
        Ok(a) => a,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let path = b.dir.join(archive.file_name(at));
    if let Err(e) = crate::source::write_private(&path, &archive.to_json()) {
        report.error = Some(format!("cannot write {}: {e}", path.display()));
        return report;
    }
    report.result = "ok".into();
    report.file = Some(path.display().to_string());
    report.generation = Some(archive.generation);
    report.keys = Some(archive.keys.len());
    match prune(&b.dir, cluster, b.keep) {
        Ok(n) => report.pruned = n,
        Err(e) => {
            report.error = Some(format!(
                "written, but old backups could not be deleted: {e}"
            ));
        }
    }
    report
}

/// Deletes `cluster`'s backups in `dir` beyond the newest `keep` (by modification time);
/// returns how many.
fn prune(dir: &Path, cluster: &str, keep: usize) -> std::io::Result<usize> {
    let prefix = format!("{cluster}-g");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".celeroot-backup.json") {
            let modified = entry.metadata()?.modified()?;
            found.push((modified, entry.path()));
        }
    }
    found.sort_by(|a, b| b.cmp(a));
    let mut n = 0;
    for (_, p) in found.iter().skip(keep) {
        std::fs::remove_file(p)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_clusters_oldest_backups_go() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in [
            "prod-g1-20261201T000000Z.celeroot-backup.json",
            "prod-g2-20261202T000000Z.celeroot-backup.json",
            "prod-g3-20261203T000000Z.celeroot-backup.json",
            "staging-g1-20261201T000000Z.celeroot-backup.json",
            "notes.txt",
        ]
        .iter()
        .enumerate()
        {
            let p = dir.path().join(name);
            std::fs::write(&p, "{}").unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        assert_eq!(prune(dir.path(), "prod", 2).unwrap(), 1);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "notes.txt",
                "prod-g2-20261202T000000Z.celeroot-backup.json",
                "prod-g3-20261203T000000Z.celeroot-backup.json",
                "staging-g1-20261201T000000Z.celeroot-backup.json"
            ]
        );
    }
}
