//! The control thread: reads the control record in Redis (`celeroot suspend`, `resume`,
//! `sync`) every [`POLL`], so every replica knows whether it may apply, and hands the
//! leader's reconcile loop each new sync request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Config, Shared, Trigger};
use crate::state::Store;

/// How often the control record is read: the delay before a `sync` is acted on.
pub(super) const POLL: Duration = Duration::from_millis(500);

pub(super) fn run(shared: &Shared, cfg: &Config, stop: &AtomicBool) {
    let mut store: Option<Store> = None;
    // The last request handed to the reconcile loop (answered by it, in Redis).
    let mut handed: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        if let Some(cluster) = shared.cluster.get() {
            if store.is_none() {
                store = Store::connect(&cfg.redis, cluster).ok();
            }
            if let Some(s) = store.as_mut() {
                match s.control() {
                    Ok(c) => {
                        shared.set_suspended(c.suspended.clone());
                        if let Some(n) = c.pending_sync() {
                            if shared.is_leader() && n > handed {
                                handed = n;
                                tracing::info!(request = n, "sync requested");
                                shared.trigger(Trigger::Sync(n));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "reading the control record failed");
                        store = None;
                    }
                }
            }
        }
        while started.elapsed() < POLL && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
