//! Keep-alive pools, one per worker and pool key: idle HTTP/1.1
//! connections and the shared HTTP/2 connection, each tagged with the
//! endpoint it goes to (for outlier detection and retries on another
//! endpoint).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use hyper::client::conn::{http1, http2};

use super::connect::Sender;
use super::key::PoolKey;
use super::limits::DestState;
use crate::runtime::http::Body;
use crate::runtime::per_worker::PerWorker;

/// Idle keep-alive connections kept per pool key.
const MAX_IDLE_PER_KEY: usize = 512;

struct IdleConn {
    sender: http1::SendRequest<Body>,
    uses: u32,
    since: Instant,
    endpoint: usize,
}

/// The connections of one pool key on one worker.
struct Pool {
    /// HTTP/1.1 connections waiting for a request.
    idle: Vec<IdleConn>,
    /// The HTTP/2 connection (h2 or h2c), shared by concurrent requests,
    /// and its endpoint.
    h2: Option<(http2::SendRequest<Body>, usize)>,
    /// The destination's limits and endpoint health (shared by workers).
    state: Arc<DestState>,
    /// The last configuration generation that used this pool.
    used: u64,
}

/// One worker's connections. An HTTP connection is driven by a task on
/// the worker that opened it, so only that worker uses it: a request and
/// its upstream connection never cross threads.
#[derive(Default)]
struct Shard {
    pools: Mutex<HashMap<Arc<PoolKey>, Pool>>,
}

/// A connection taken from the pool.
pub struct Checked {
    /// Where requests go.
    pub sender: Sender,
    /// Requests it carried before.
    pub uses: u32,
    /// The endpoint it goes to.
    pub endpoint: usize,
}

/// Every worker's pools.
pub struct Pools {
    shards: PerWorker<Shard>,
}

impl Pools {
    /// Empty pools for `shards` threads.
    pub fn new(shards: usize) -> Pools {
        Pools {
            shards: PerWorker::new(shards),
        }
    }

    /// Pool keys held across all workers.
    pub fn len(&self) -> usize {
        self.shards.all().map(|s| lock(&s.pools).len()).sum()
    }

    /// Drops pools whose last use fails `keep`, and connections that are
    /// closed or idle for longer than their key's idle timeout.
    pub fn evict(&self, keep: impl Fn(u64) -> bool) {
        for shard in self.shards.all() {
            lock(&shard.pools).retain(|key, pool| {
                let max_idle = key.policy.idle_timeout;
                pool.idle.retain(|c| {
                    !c.sender.is_closed() && (max_idle.is_zero() || c.since.elapsed() <= max_idle)
                });
                if pool.h2.as_ref().is_some_and(|(s, _)| s.is_closed()) {
                    pool.h2 = None;
                }
                // Requests in flight hold the state: their connections come
                // back to this pool.
                let in_flight = Arc::strong_count(&pool.state) > 1;
                keep(pool.used) && (pool.h2.is_some() || !pool.idle.is_empty() || in_flight)
            });
        }
    }

    /// This worker's state for `key` (made by `make` the first time).
    pub fn state(
        &self,
        key: &Arc<PoolKey>,
        generation: u64,
        make: impl FnOnce() -> Arc<DestState>,
    ) -> Arc<DestState> {
        let mut pools = lock(&self.shards.get().pools);
        let pool = pools.entry(key.clone()).or_insert_with(|| Pool {
            idle: Vec::new(),
            h2: None,
            state: make(),
            used: generation,
        });
        pool.used = pool.used.max(generation);
        pool.state.clone()
    }

    /// A connection ready for a request: the HTTP/2 one, or the most
    /// recently used ready HTTP/1.1 one. Connections to endpoints `ejected`
    /// names are closed; those `avoid` names are left for other requests.
    pub fn checkout(
        &self,
        key: &Arc<PoolKey>,
        ejected: &(dyn Fn(usize) -> bool + Sync),
        avoid: &(dyn Fn(usize) -> bool + Sync),
    ) -> Option<Checked> {
        let mut pools = lock(&self.shards.get().pools);
        let pool = pools.get_mut(key)?;
        if let Some((s, endpoint)) = &pool.h2 {
            if s.is_closed() || ejected(*endpoint) {
                pool.h2 = None;
            } else if !avoid(*endpoint) {
                return Some(Checked {
                    sender: Sender::H2(s.clone()),
                    uses: 0,
                    endpoint: *endpoint,
                });
            }
        }
        let max_idle = key.policy.idle_timeout;
        // Released connections may still be finishing their last response
        // (not ready yet): skip those, drop closed, idled-out or ejected
        // ones, take the most recently used ready one.
        let list = &mut pool.idle;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let c = &list[i];
            let expired = !max_idle.is_zero() && c.since.elapsed() > max_idle;
            if expired || c.sender.is_closed() || ejected(c.endpoint) {
                list.swap_remove(i);
            } else if c.sender.is_ready() && !avoid(c.endpoint) {
                let c = list.swap_remove(i);
                return Some(Checked {
                    sender: Sender::H1(c.sender),
                    uses: c.uses,
                    endpoint: c.endpoint,
                });
            }
        }
        None
    }

    /// An HTTP/1.1 connection still finishing a response (not ready yet),
    /// for a request that waits for it rather than for a new connection.
    pub fn checkout_busy(
        &self,
        key: &Arc<PoolKey>,
        avoid: &(dyn Fn(usize) -> bool + Sync),
    ) -> Option<(http1::SendRequest<Body>, u32, usize)> {
        let mut pools = lock(&self.shards.get().pools);
        let list = &mut pools.get_mut(key)?.idle;
        let i = list
            .iter()
            .position(|c| !c.sender.is_closed() && !avoid(c.endpoint))?;
        let c = list.swap_remove(i);
        Some((c.sender, c.uses, c.endpoint))
    }

    /// Closes one ready idle connection of `key` held by another worker, so
    /// that its slot in the connection limit frees up for this one.
    pub fn close_idle_elsewhere(&self, key: &Arc<PoolKey>) {
        let mine = self.shards.get() as *const Shard;
        for shard in self.shards.all() {
            if std::ptr::eq(shard, mine) {
                continue;
            }
            let mut pools = lock(&shard.pools);
            let Some(pool) = pools.get_mut(key) else {
                continue;
            };
            if let Some(i) = pool.idle.iter().position(|c| c.sender.is_ready()) {
                // Dropping the sender ends the connection's task on its
                // worker, which releases the slot.
                drop(pool.idle.swap_remove(i));
                return;
            }
        }
    }

    /// Returns an HTTP/1.1 connection to this worker's pool.
    pub fn release(
        &self,
        key: &Arc<PoolKey>,
        sender: http1::SendRequest<Body>,
        uses: u32,
        endpoint: usize,
    ) {
        let mut pools = lock(&self.shards.get().pools);
        let Some(pool) = pools.get_mut(key) else {
            return; // evicted meanwhile: the connection closes
        };
        let list = &mut pool.idle;
        if list.len() >= MAX_IDLE_PER_KEY {
            list.retain(|c| !c.sender.is_closed());
            if list.len() >= MAX_IDLE_PER_KEY {
                list.remove(0);
            }
        }
        list.push(IdleConn {
            sender,
            uses,
            since: Instant::now(),
            endpoint,
        });
    }

    /// Makes `sender` the HTTP/2 connection of `key` on this worker.
    pub fn set_h2(&self, key: &Arc<PoolKey>, sender: &http2::SendRequest<Body>, endpoint: usize) {
        if let Some(pool) = lock(&self.shards.get().pools).get_mut(key) {
            pool.h2 = Some((sender.clone(), endpoint));
        }
    }

    /// Forgets the HTTP/2 connection of `key` (it failed).
    pub fn forget_h2(&self, key: &Arc<PoolKey>) {
        if let Some(pool) = lock(&self.shards.get().pools).get_mut(key) {
            pool.h2 = None;
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent
    // (single inserts/removes), so keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
