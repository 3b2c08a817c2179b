//! What one slow or hostile client can hold of the bridge (`[limits]`, `trusted_proxies`):
//! per-tenant request slots, the per-tenant request rate, and the count of failed sign-ins per
//! client address. The deadlines themselves are applied in `scim_routes`.
//!
//! Per-tenant state is made on a tenant's first authenticated request, not at start: tenants
//! come and go with a config reload, and only a request that passed authentication reaches it,
//! so its size is bounded by the configured tenants (see [`Guard::retain_tenants`]).

use crate::config::RequestLimits;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The window failed authentications are counted in (`auth_failure_limit` per minute).
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses tracked at most; beyond it (after dropping every expired window) a new
/// address is not tracked, so a flood of addresses costs bounded memory.
const MAX_TRACKED: usize = 100_000;

/// The server's request limits and the state they need, shared by every worker.
pub struct Guard {
    /// The limits in force; [`Guard::update_limits`] swaps them on a config reload.
    current: RwLock<RequestLimits>,
    pub trusted_proxies: Vec<IpNet>,
    /// Per tenant: its request slots and its rate bucket. One short-held lock: each request
    /// holds it for a map lookup and a few float operations, never across an await.
    tenants: Mutex<HashMap<String, TenantState>>,
    pub failures: AuthFailures,
}

struct TenantState {
    slots: Arc<Semaphore>,
    /// The `tenant_concurrency` `slots` was made with: when a reload changes it, the next
    /// request gets a new semaphore (requests in flight keep their permits of the old one).
    size: usize,
    bucket: Bucket,
}

impl TenantState {
    fn new(limits: &RequestLimits, now: Instant) -> TenantState {
        let size = slots_of(limits);
        TenantState {
            slots: Arc::new(Semaphore::new(size)),
            size,
            bucket: Bucket::full(limits.burst(), now),
        }
    }
}

fn slots_of(limits: &RequestLimits) -> usize {
    limits.tenant_concurrency.clamp(1, Semaphore::MAX_PERMITS)
}

impl Guard {
    /// `tenants` get their state at once; any other tenant gets it on its first request.
    pub fn new<'a>(
        limits: &RequestLimits,
        trusted_proxies: &[IpNet],
        tenants: impl IntoIterator<Item = &'a str>,
    ) -> Guard {
        let now = Instant::now();
        Guard {
            current: RwLock::new(limits.clone()),
            trusted_proxies: trusted_proxies.to_vec(),
            tenants: Mutex::new(
                tenants
                    .into_iter()
                    .map(|t| (t.to_string(), TenantState::new(limits, now)))
                    .collect(),
            ),
            failures: AuthFailures::new(limits.auth_failure_limit, AUTH_FAILURE_WINDOW),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> RequestLimits {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `limits` in force for the requests that arrive from now on (a config reload).
    /// Requests in flight keep their deadlines and slots; a changed `tenant_concurrency` gives
    /// each tenant a new set of slots at its next request; a tenant's bucket keeps its tokens,
    /// cut to the new `tenant_burst`, and refills at the new `tenant_rate`.
    pub fn update_limits(&self, limits: &RequestLimits) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = limits.clone();
        self.failures.set_limit(limits.auth_failure_limit);
    }

    /// Forgets the state of the tenants `keep` refuses (tenants a reload removed).
    pub fn retain_tenants(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|t, _| keep(t));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantState>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one request of `tenant` from its `tenant_rate` bucket: `Err(seconds)` (whole, at
    /// least 1) until the bucket holds one again when it is empty. Always `Ok` with
    /// `tenant_rate = 0`. A refused request takes nothing, so a client that keeps retrying
    /// early is not pushed further back.
    pub fn admit(&self, tenant: &str, now: Instant) -> Result<(), u64> {
        let limits = self.limits();
        if limits.tenant_rate == 0 {
            return Ok(());
        }
        let mut map = self.lock();
        let state = match map.get_mut(tenant) {
            Some(s) => s,
            None => map
                .entry(tenant.to_string())
                .or_insert_with(|| TenantState::new(&limits, now)),
        };
        state.bucket.take(limits.tenant_rate, limits.burst(), now)
    }

    /// One of `tenant`'s `tenant_concurrency` request slots, waiting for one until `deadline`.
    /// `Err(())` when the deadline passed first. `Option` for callers that tolerate no slot;
    /// every tenant has slots now (made on its first request).
    pub async fn slot(
        &self,
        tenant: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let sem = {
            let limits = self.limits();
            let size = slots_of(&limits);
            let mut map = self.lock();
            let state = match map.get_mut(tenant) {
                Some(s) => s,
                None => map
                    .entry(tenant.to_string())
                    .or_insert_with(|| TenantState::new(&limits, Instant::now())),
            };
            if state.size != size {
                state.slots = Arc::new(Semaphore::new(size));
                state.size = size;
            }
            state.slots.clone()
        };
        match tokio::time::timeout_at(deadline, sem.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // The semaphore is never closed.
            Ok(Err(_)) => Ok(None),
            Err(_) => Err(()),
        }
    }

    /// Free slots of `tenant` (for tests and diagnostics); `None` before its first request.
    pub fn free_slots(&self, tenant: &str) -> Option<usize> {
        self.lock().get(tenant).map(|s| s.slots.available_permits())
    }
}

/// A token bucket: `burst` requests at once, refilled at `rate` per second. Written here, not
/// taken from a crate (`governor`): it is a dozen lines, and its rate and size must follow a
/// config reload, which a keyed `governor` limiter (quota fixed at construction) does not.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn take(&mut self, rate: u32, burst: u32, now: Instant) -> Result<(), u64> {
        let rate = f64::from(rate.max(1));
        let burst = f64::from(burst.max(1));
        // `now` may be older than `at` when two workers race: time never runs back.
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        // RFC 9110 §10.2.3: Retry-After in whole seconds; rounded up, so that the retry finds
        // a token.
        let wait = (1.0 - self.tokens) / rate;
        Err((wait.ceil() as u64).max(1))
    }
}

/// Failed authentications per client address and tenant path in a fixed window that opens at
/// the first failure: after `limit` of them the address is refused on that tenant's path until
/// the window closes.
///
/// Per tenant, not per address alone: Okta and Entra provision every customer from shared
/// egress addresses, so one customer's wrong token must not lock every other tenant out of
/// its IdP. A guesser is still held to `limit` guesses per tenant per window.
pub struct AuthFailures {
    /// Changed by a config reload ([`Guard::update_limits`]).
    limit: AtomicU32,
    window: Duration,
    by_address: Mutex<HashMap<(IpAddr, String), Window>>,
}

#[derive(Clone, Copy)]
struct Window {
    opened: Instant,
    failures: u32,
}

impl AuthFailures {
    /// `limit` 0 turns the count off.
    pub fn new(limit: u32, window: Duration) -> AuthFailures {
        AuthFailures {
            limit: AtomicU32::new(limit),
            window,
            by_address: Mutex::new(HashMap::new()),
        }
    }

    fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Seconds until `address` may try `tenant` again (rounded up, at least 1), or `None` when
    /// it may now.
    pub fn refused(&self, address: IpAddr, tenant: &str, now: Instant) -> Option<u64> {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 {
            return None;
        }
        let map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let w = map.get(&(address, tenant.to_string()))?;
        let closes = w.opened + self.window;
        if w.failures < limit || now >= closes {
            return None;
        }
        let left = closes - now;
        Some((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1))
    }

    /// Counts one failed authentication of `address` on `tenant`'s path.
    pub fn record(&self, address: IpAddr, tenant: &str, now: Instant) {
        if self.limit.load(Ordering::Relaxed) == 0 {
            return;
        }
        let window = self.window;
        let key = (address, tenant.to_string());
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED / 2 {
            map.retain(|_, w| now < w.opened + window);
            if map.len() >= MAX_TRACKED {
                return;
            }
        }
        let w = map.entry(key).or_insert(Window {
            opened: now,
            failures: 0,
        });
        if now >= w.opened + window {
            *w = Window {
                opened: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refused_after_the_limit_until_the_window_closes() {
        let f = AuthFailures::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..3 {
            assert_eq!(f.refused(a, "t", t0), None, "after {i} failures");
            f.record(a, "t", t0 + Duration::from_secs(i));
        }
        assert_eq!(f.refused(a, "t", t0 + Duration::from_secs(2)), Some(58));
        assert_eq!(
            f.refused(a, "t", t0 + Duration::from_millis(59_500)),
            Some(1)
        );
        // Another address is not affected, nor the same address on another tenant (a shared
        // IdP egress address serving other customers).
        assert_eq!(f.refused(ip("192.0.2.2"), "t", t0), None);
        assert_eq!(f.refused(a, "other", t0), None);
        // The window closes: the address may try again, and a new failure opens a new window.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(f.refused(a, "t", later), None);
        f.record(a, "t", later);
        assert_eq!(f.refused(a, "t", later), None);
    }

    #[test]
    fn zero_turns_it_off() {
        let f = AuthFailures::new(0, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..100 {
            f.record(ip("192.0.2.1"), "t", t0);
        }
        assert_eq!(f.refused(ip("192.0.2.1"), "t", t0), None);
    }

    #[tokio::test]
    async fn slots_are_per_tenant() {
        let limits = RequestLimits {
            tenant_concurrency: 1,
            ..RequestLimits::default()
        };
        let g = Guard::new(&limits, &[], ["a", "b"]);
        let soon = || tokio::time::Instant::now() + Duration::from_millis(50);
        let held = g.slot("a", soon()).await.unwrap();
        assert!(held.is_some());
        assert!(g.slot("a", soon()).await.is_err());
        assert!(g.slot("b", soon()).await.unwrap().is_some());
        drop(held);
        assert!(g.slot("a", soon()).await.unwrap().is_some());
        // A tenant not known at construction (added by a reload) gets its own slots.
        assert_eq!(g.free_slots("late"), None);
        let late = g.slot("late", soon()).await.unwrap();
        assert!(late.is_some());
        assert!(g.slot("late", soon()).await.is_err());
        assert!(g.slot("a", soon()).await.unwrap().is_some());
        // A reload that raises the cap: the next request gets the new slots.
        g.update_limits(&RequestLimits {
            tenant_concurrency: 2,
            ..RequestLimits::default()
        });
        let one = g.slot("late", soon()).await.unwrap();
        let two = g.slot("late", soon()).await.unwrap();
        assert!(one.is_some() && two.is_some());
        assert!(g.slot("late", soon()).await.is_err());
        drop(late);
        g.retain_tenants(|t| t != "late");
        assert_eq!(g.free_slots("late"), None);
    }

    #[test]
    fn the_bucket_refuses_beyond_its_burst_and_refills_at_the_rate() {
        let limits = RequestLimits {
            tenant_rate: 2,
            tenant_burst: 4,
            ..RequestLimits::default()
        };
        let g = Guard::new(&limits, &[], ["a"]);
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(g.admit("a", t0), Ok(()), "request {i} of the burst");
        }
        assert_eq!(g.admit("a", t0), Err(1));
        // Refused requests take nothing: 0.6 s later (rate 2/s) one token is back.
        assert_eq!(g.admit("a", t0 + Duration::from_millis(100)), Err(1));
        assert_eq!(g.admit("a", t0 + Duration::from_millis(600)), Ok(()));
        assert_eq!(g.admit("a", t0 + Duration::from_millis(600)), Err(1));
        // Another tenant, even one unknown at construction, has its own full bucket.
        for _ in 0..4 {
            assert_eq!(g.admit("b", t0), Ok(()));
        }
        assert_eq!(g.admit("b", t0), Err(1));
        // A long idle time refills to the burst, no further.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..4 {
            assert_eq!(g.admit("a", later), Ok(()));
        }
        assert_eq!(g.admit("a", later), Err(1));
        // A slow rate: Retry-After is the whole seconds until the next token.
        g.update_limits(&RequestLimits {
            tenant_rate: 1,
            tenant_burst: 1,
            ..RequestLimits::default()
        });
        let t1 = later + Duration::from_millis(200);
        assert_eq!(g.admit("a", t1), Err(1));
        // Rate 0 (a reload turned it off): everything passes.
        g.update_limits(&RequestLimits::default());
        for _ in 0..100 {
            assert_eq!(g.admit("a", t1), Ok(()));
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let t0 = Instant::now();
        let mut b = Bucket::full(1, t0);
        assert_eq!(b.take(1, 1, t0), Ok(()));
        // Empty at rate 1/s: the next token is 1 s away; after 0.3 s, 0.7 s (told 1).
        assert_eq!(b.take(1, 1, t0), Err(1));
        assert_eq!(b.take(1, 1, t0 + Duration::from_millis(300)), Err(1));
        assert_eq!(b.take(1, 1, t0 + Duration::from_millis(1000)), Ok(()));
        // An earlier `now` than the last one (two workers racing) does not run time back.
        assert_eq!(b.take(1, 1, t0), Err(1));
    }
}
