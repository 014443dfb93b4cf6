//! Leader election: one daemon per cluster applies; the others stand by, warm.
//!
//! The lease is `celeroot:{<cluster>}:leader`, taken with set-if-absent and a TTL and
//! renewed every third of the TTL by a compare-and-extend script. A daemon that cannot
//! renew (Redis unreachable, lease taken) stops leading at once; the apply script checks
//! the token again (fencing), so a paused former leader can never write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Config, Shared, Trigger};
use crate::state::{Leadership, Store};

/// Runs election rounds until `stop`, then gives the lease up.
pub(super) fn run(shared: &Shared, cfg: &Config, stop: &AtomicBool) {
    let ttl = cfg.lease_ttl;
    let every = (ttl / 3).max(Duration::from_millis(100));
    let mut store: Option<Store> = None;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        if let Some(cluster) = shared.cluster.get() {
            round(shared, cfg, cluster, ttl, &mut store);
        }
        // Sleep in short steps so shutdown is prompt; until the cluster is known (the
        // first valid revision), check again soon.
        let wait = if shared.cluster.get().is_some() {
            every
        } else {
            Duration::from_millis(50)
        };
        while started.elapsed() < wait && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(every));
        }
    }
    if shared.leading.load(Ordering::SeqCst) {
        shared.set_leading(false);
        if let Some(s) = store.as_mut() {
            match s.resign(&shared.token) {
                Ok(_) => tracing::info!("released the leader lease"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the leader lease; it expires by itself");
                }
            }
        }
    }
}

fn round(shared: &Shared, cfg: &Config, cluster: &str, ttl: Duration, store: &mut Option<Store>) {
    if store.is_none() {
        match Store::connect(&cfg.redis, cluster) {
            Ok(s) => *store = Some(s),
            Err(e) => {
                lost(shared, &e.to_string());
                return;
            }
        }
    }
    let Some(s) = store.as_mut() else { return };
    let sent = Instant::now();
    match s.lead(&shared.token, ttl, &cfg.identity) {
        Ok(Leadership::Leading { epoch }) => {
            shared.set_redis_ok(true);
            *super::lock(&shared.lease_until) = Some(sent + ttl);
            if !shared.leading.load(Ordering::SeqCst) {
                tracing::info!(epoch, cluster, "became the leader");
                shared.set_leading(true);
                shared.trigger(Trigger::Led);
            }
            shared.update(|st| {
                st.leader_holder = Some(cfg.identity.clone());
                st.leader_epoch = Some(epoch);
            });
        }
        Ok(Leadership::Standby(holder)) => {
            shared.set_redis_ok(true);
            if shared.leading.load(Ordering::SeqCst) {
                tracing::warn!("lost the leader lease to another daemon; standing by");
                shared.set_leading(false);
            }
            shared.update(|st| {
                st.leader_holder = holder.as_ref().map(|h| h.holder.clone());
                st.leader_epoch = holder.as_ref().map(|h| h.epoch);
            });
        }
        Err(e) => {
            *store = None;
            lost(shared, &e.to_string());
        }
    }
}

/// Redis did not answer: stop leading (the lease cannot be renewed) until it does.
fn lost(shared: &Shared, error: &str) {
    if shared.leading.load(Ordering::SeqCst) {
        tracing::warn!(
            error,
            "cannot renew the leader lease; standing by until Redis answers"
        );
        shared.set_leading(false);
    } else {
        tracing::debug!(error, "election round failed");
    }
    shared.set_redis_ok(false);
}
