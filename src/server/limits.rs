//! What one slow or hostile client can hold of the bridge (`[limits]`, `trusted_proxies`):
//! per-tenant request slots, and the count of failed sign-ins per client address. The deadlines
//! themselves are applied in `scim_routes`.

use crate::config::RequestLimits;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The window failed authentications are counted in (`auth_failure_limit` per minute).
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses tracked at most; beyond it (after dropping every expired window) a new
/// address is not tracked, so a flood of addresses costs bounded memory.
const MAX_TRACKED: usize = 100_000;

/// The server's request limits and the state they need, shared by every worker.
pub struct Guard {
    pub limits: RequestLimits,
    pub trusted_proxies: Vec<IpNet>,
    slots: HashMap<String, Arc<Semaphore>>,
    pub failures: AuthFailures,
}

impl Guard {
    pub fn new<'a>(
        limits: &RequestLimits,
        trusted_proxies: &[IpNet],
        tenants: impl IntoIterator<Item = &'a str>,
    ) -> Guard {
        let per_tenant = limits.tenant_concurrency.clamp(1, Semaphore::MAX_PERMITS);
        Guard {
            limits: limits.clone(),
            trusted_proxies: trusted_proxies.to_vec(),
            slots: tenants
                .into_iter()
                .map(|t| (t.to_string(), Arc::new(Semaphore::new(per_tenant))))
                .collect(),
            failures: AuthFailures::new(limits.auth_failure_limit, AUTH_FAILURE_WINDOW),
        }
    }

    /// One of `tenant`'s `tenant_concurrency` request slots, waiting for one until `deadline`.
    /// `Ok(None)` for a tenant without slots (none configured); `Err(())` when the deadline
    /// passed first.
    pub async fn slot(
        &self,
        tenant: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let Some(sem) = self.slots.get(tenant) else {
            return Ok(None);
        };
        match tokio::time::timeout_at(deadline, sem.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // The semaphore is never closed.
            Ok(Err(_)) => Ok(None),
            Err(_) => Err(()),
        }
    }

    /// Free slots of `tenant` (for tests and diagnostics).
    pub fn free_slots(&self, tenant: &str) -> Option<usize> {
        self.slots.get(tenant).map(|s| s.available_permits())
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
    limit: u32,
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
            limit,
            window,
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `address` may try `tenant` again (rounded up, at least 1), or `None` when
    /// it may now.
    pub fn refused(&self, address: IpAddr, tenant: &str, now: Instant) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let w = map.get(&(address, tenant.to_string()))?;
        let closes = w.opened + self.window;
        if w.failures < self.limit || now >= closes {
            return None;
        }
        let left = closes - now;
        Some((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1))
    }

    /// Counts one failed authentication of `address` on `tenant`'s path.
    pub fn record(&self, address: IpAddr, tenant: &str, now: Instant) {
        if self.limit == 0 {
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
        assert!(g.slot("nobody", soon()).await.unwrap().is_none());
    }
}
