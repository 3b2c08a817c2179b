//! When each tenant's background work runs, so that a process holding many tenants (issue 14:
//! 1,000) does not hit its vendors, its CPU or its store all at once.
//!
//! Three measures, each cheap on its own:
//!
//! - **A staggered first observe** ([`first_observe`]). Every engine of a process starts within
//!   the same second; without a stagger, all of them read their vendor's directory at once, and
//!   since they share a sync interval they would do it again together every interval for ever.
//!   The offset comes from the tenant's position in the config, not from a random draw over a
//!   fixed window: the engine knows its `tenant_index` but not how many tenants there are, and
//!   a random draw over, say, 30 s would make a one-tenant bridge wait up to 30 s for its first
//!   read (lookups wait up to `STARTUP_WAIT` for it). By position, tenant 0 observes at once,
//!   ten tenants are all observed within half a second, and 1,000 tenants are spread over
//!   `START_WINDOW` — the larger the deployment,
//!   the wider the spread, with no tenant count needed. Past 600 tenants the slots are reused
//!   (two a slot up to 1,200): the peak is 40 first observes a second for 1,000 tenants, where
//!   it would be 1,000 in one instant. A random part within the slot keeps two processes
//!   (shards) with the same config layout from hitting a shared vendor in step.
//! - **Jittered intervals** ([`jittered`]): every later interval (and every retry backoff) is
//!   ±10 % of its nominal length, so tenants that did start together drift apart within a few
//!   intervals instead of staying in lockstep, and a shared vendor that was down for everyone
//!   is not retried by every tenant in the same instant when it comes back.
//! - **Process-wide gates** ([`Gate`]): at most [`OBSERVES`] tenants read their vendor's
//!   directory at once, and at most [`ROLE_LOADS`] sign in and load roles at once. Role loads
//!   are not staggered (a tenant's readiness and its first delivery wait for its roles), so
//!   without the gate 1,000 tenants whose vendor was unreachable at preflight would sign in in
//!   the same instant. The gates are soft: a tenant that waited its gate's `patience` goes
//!   ahead anyway, so one vendor that hangs until its client's timeout holds a permit, never
//!   another tenant's sync.

use rand::Rng;
use std::time::Duration;

/// The longest the first observes of a process are spread over.
pub(crate) const START_WINDOW: Duration = Duration::from_secs(30);
/// The spacing of first observes by config position (20 a second).
pub(crate) const STEP: Duration = Duration::from_millis(50);
/// The jitter of every interval: ±10 % of its nominal length.
const JITTER_PERCENT: u64 = 10;

/// The delay of a tenant's first observe after its roles are loaded: its slot by config
/// position (`tenant_index × STEP`, wrapped round the window), plus a random part of one slot.
/// The window is `START_WINDOW`, or the sync interval when that is shorter (a tenant's first
/// observe never comes later than its second would have).
pub(crate) fn first_observe(
    tenant_index: usize,
    sync_interval: Duration,
    rng: &mut impl Rng,
) -> Duration {
    let window = START_WINDOW.min(sync_interval).as_millis() as u64;
    let step = STEP.as_millis() as u64;
    if window <= step {
        return Duration::from_millis(rng.random_range(0..=window));
    }
    let slots = window / step;
    let slot = (tenant_index as u64 % slots) * step;
    Duration::from_millis(slot + rng.random_range(0..step))
}

/// `nominal` ± 10 %, uniformly.
pub(crate) fn jittered(nominal: Duration, rng: &mut impl Rng) -> Duration {
    let ms = nominal.as_millis() as u64;
    let spread = ms * JITTER_PERCENT / 100;
    Duration::from_millis(rng.random_range(ms - spread..=ms + spread))
}

/// Uniform in `[0, cap]`: the first of a schedule that has no prompt start to keep (a sweep).
pub(crate) fn uniform_upto(cap: Duration, rng: &mut impl Rng) -> Duration {
    Duration::from_millis(rng.random_range(0..=cap.as_millis() as u64))
}

/// A soft process-wide concurrency bound (see the module's docs).
pub(crate) struct Gate {
    permits: tokio::sync::Semaphore,
    patience: Duration,
}

impl Gate {
    pub(crate) const fn new(permits: usize, patience: Duration) -> Gate {
        Gate {
            permits: tokio::sync::Semaphore::const_new(permits),
            patience,
        }
    }

    /// Waits for a permit, at most `patience`; `None` when it went ahead without one.
    pub(crate) async fn enter(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        match tokio::time::timeout(self.patience, self.permits.acquire()).await {
            Ok(Ok(p)) => Some(p),
            _ => None,
        }
    }
}

/// Tenants reading their vendor's directory at once. Eight keep two cores busy on the pages
/// of large directories without starving the IdP's requests; a shared vendor (one Tableau
/// Cloud pod for many sites) sees at most eight readers from one process.
pub(crate) static OBSERVES: Gate = Gate::new(8, Duration::from_secs(120));
/// Tenants signing in and loading roles at once: short calls that readiness waits for, so
/// more of them at once than observes, and a shorter patience.
pub(crate) static ROLE_LOADS: Gate = Gate::new(32, Duration::from_secs(15));
/// Scheduled dormant-account sweeps planning or applying at once (a plan reads every user).
pub(crate) static SWEEPS: Gate = Gate::new(2, Duration::from_secs(600));
/// Dry-run plans built in the background at once: a build of a large tenant uses every core
/// for a second or two, and many dry-run tenants imported together would otherwise build
/// side by side ([`super::plan_cache`]).
pub(crate) static PLAN_BUILDS: Gate = Gate::new(1, Duration::from_secs(600));

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MIN5: Duration = Duration::from_secs(300);

    #[test]
    fn the_first_tenant_observes_at_once_and_a_few_within_half_a_second() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            assert!(first_observe(0, MIN5, &mut rng) < STEP);
            for i in 0..10 {
                assert!(first_observe(i, MIN5, &mut rng) < Duration::from_millis(500));
            }
        }
    }

    #[test]
    fn a_thousand_tenants_spread_evenly_over_the_start_window() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut per_second = [0u32; 30];
        let mut per_slot = [0u32; 600];
        for i in 0..1000 {
            let d = first_observe(i, MIN5, &mut rng);
            assert!(d < START_WINDOW, "tenant {i} at {d:?}");
            per_second[d.as_secs() as usize] += 1;
            per_slot[(d.as_millis() / STEP.as_millis()) as usize] += 1;
        }
        // 600 slots of 50 ms: the first 400 hold two tenants, the rest one; never a burst.
        assert!(per_slot.iter().all(|n| (1..=2).contains(n)), "{per_slot:?}");
        for (s, n) in per_second.iter().enumerate() {
            let want = if s < 20 { 40 } else { 20 };
            assert_eq!(*n, want, "second {s} holds {n} first observes");
        }
    }

    #[test]
    fn a_short_sync_interval_bounds_the_first_observe() {
        let mut rng = StdRng::seed_from_u64(3);
        for i in 0..2000 {
            assert!(first_observe(i, Duration::from_secs(2), &mut rng) < Duration::from_secs(2));
            assert!(
                first_observe(i, Duration::from_millis(20), &mut rng) <= Duration::from_millis(20)
            );
            assert_eq!(first_observe(i, Duration::ZERO, &mut rng), Duration::ZERO);
        }
    }

    #[test]
    fn intervals_are_jittered_ten_percent_either_way_uniformly() {
        let mut rng = StdRng::seed_from_u64(4);
        let n = 20_000;
        let samples: Vec<u64> = (0..n)
            .map(|_| jittered(MIN5, &mut rng).as_millis() as u64)
            .collect();
        let (lo, hi) = (270_000, 330_000);
        assert!(samples.iter().all(|s| (lo..=hi).contains(s)));
        let min = *samples.iter().min().unwrap();
        let max = *samples.iter().max().unwrap();
        assert!(min < 270_600 && max > 329_400, "range {min}..{max}");
        let mean = samples.iter().sum::<u64>() as f64 / n as f64;
        assert!((mean - 300_000.0).abs() < 600.0, "mean {mean}");
        // Uniform: each of ten equal bands holds about a tenth.
        let mut bands = [0u32; 10];
        for s in &samples {
            bands[(((s - lo) * 10 / (hi - lo + 1)) as usize).min(9)] += 1;
        }
        for b in bands {
            assert!((1_700..=2_300).contains(&b), "bands {bands:?}");
        }
    }

    #[test]
    fn tenants_started_together_drift_apart() {
        // Two tenants whose first observes coincide: after ten jittered intervals of 5 minutes
        // they are more than ten seconds apart in about nine trials of ten (the difference has
        // a standard deviation of 77 s); without jitter they would still coincide.
        let mut rng = StdRng::seed_from_u64(5);
        let mut close = 0;
        for _ in 0..1000 {
            let (mut a, mut b) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..10 {
                a += jittered(MIN5, &mut rng);
                b += jittered(MIN5, &mut rng);
            }
            if a.abs_diff(b) < Duration::from_secs(10) {
                close += 1;
            }
        }
        assert!(close < 150, "{close} of 1000 pairs still within 10 s");
    }

    #[test]
    fn jitter_of_nothing_is_nothing_and_uniform_upto_stays_under_its_cap() {
        let mut rng = StdRng::seed_from_u64(6);
        assert_eq!(jittered(Duration::ZERO, &mut rng), Duration::ZERO);
        for _ in 0..1000 {
            assert!(uniform_upto(Duration::from_secs(900), &mut rng) <= Duration::from_secs(900));
        }
    }

    #[tokio::test]
    async fn a_gate_bounds_how_many_are_in_and_lets_a_waiter_through_after_its_patience() {
        let gate = Gate::new(2, Duration::from_millis(200));
        let a = gate.enter().await;
        let b = gate.enter().await;
        assert!(a.is_some() && b.is_some());
        let started = std::time::Instant::now();
        let c = gate.enter().await;
        assert!(c.is_none(), "a third entered a gate of two");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(a);
        assert!(
            gate.enter().await.is_some(),
            "a freed permit was not handed on"
        );
    }
}
