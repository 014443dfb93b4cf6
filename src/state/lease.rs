//! Keeping the reconcile lease alive while its holder works.
//!
//! The lease is taken with a short TTL ([`super::LEASE_TTL`]) so that a holder that
//! crashes, or loses Redis, leaves it behind for seconds, not minutes. A [`LeaseKeeper`]
//! renews it every [`LEASE_RENEW_EVERY`] from its own thread and its own connection (made
//! only when the first renewal is due, so a short reconcile costs nothing), for as long
//! as the holder keeps the keeper: through a reconcile and, for `celeroot reconcile`, the
//! rollout after it.
//! Must not know: what the holder does under the lease.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{RedisUrl, Store};

/// How often a held lease is renewed: a third of its TTL, so two renewals may fail (a
/// Redis restart, a slow network) before it expires.
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(5);

/// Renews one lease until dropped.
pub struct LeaseKeeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    lost: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts renewing the lease `id` of `cluster` on the Redis at `url`.
    pub fn start(url: RedisUrl, cluster: String, id: String) -> LeaseKeeper {
        Self::start_every(url, cluster, id, LEASE_RENEW_EVERY)
    }

    fn start_every(url: RedisUrl, cluster: String, id: String, every: Duration) -> LeaseKeeper {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let lost = Arc::new(AtomicBool::new(false));
        let (s, l) = (Arc::clone(&stop), Arc::clone(&lost));
        let handle = std::thread::Builder::new()
            .name("lease-keeper".into())
            .spawn(move || {
                let mut conn: Option<Store> = None;
                loop {
                    let (lock, cv) = &*s;
                    let Ok(guard) = lock.lock() else { return };
                    let Ok((guard, _)) = cv.wait_timeout_while(guard, every, |stopped| !*stopped)
                    else {
                        return;
                    };
                    if *guard {
                        return;
                    }
                    drop(guard);
                    if conn.is_none() {
                        conn = Store::connect(&url, &cluster).ok();
                    }
                    let Some(store) = conn.as_mut() else { continue };
                    match store.renew_lease(&id) {
                        Ok(true) => {}
                        Ok(false) => {
                            // Expired or taken over: the holder's writes are fenced by
                            // the lease check inside the apply script.
                            l.store(true, Ordering::SeqCst);
                            return;
                        }
                        // Reconnect at the next turn.
                        Err(_) => conn = None,
                    }
                }
            })
            .ok();
        LeaseKeeper { stop, lost, handle }
    }

    /// Whether a renewal found the lease gone or held by someone else.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        if let Ok(mut stopped) = lock.lock() {
            *stopped = true;
        }
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
