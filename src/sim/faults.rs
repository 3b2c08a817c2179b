//! Fault injection for every simulator (CONTRACT §1): `--latency-ms`, `--error-rate`,
//! `--throttle-rps`. One middleware, wrapped around all vendor routes; it also counts requests.

use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{SimOptions, SimShared};

pub struct FaultInjector {
    latency: Option<Duration>,
    error_rate: f64,
    rng: Mutex<StdRng>,
    bucket: Option<Mutex<TokenBucket>>,
}

/// Classic token bucket: `rate` tokens per second, capacity `burst`.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes a token, or says in how many seconds (rounded up, at least 1) one is available.
    pub fn take(&mut self) -> Result<(), u64> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.rate;
            Err((wait.ceil() as u64).max(1))
        }
    }
}

/// Salt separating the fault RNG from the vendors' id generators under one `--seed`.
const FAULT_SEED_SALT: u64 = 0xFA17;

impl FaultInjector {
    pub fn new(opts: &SimOptions) -> Self {
        FaultInjector {
            latency: (opts.latency_ms > 0).then(|| Duration::from_millis(opts.latency_ms)),
            error_rate: opts.error_rate.clamp(0.0, 1.0),
            rng: Mutex::new(StdRng::seed_from_u64(opts.derived_seed(FAULT_SEED_SALT))),
            bucket: opts
                .throttle_rps
                .map(|rps| Mutex::new(TokenBucket::new(rps, rps.max(1.0)))),
        }
    }

    fn throttle(&self) -> Result<(), u64> {
        match &self.bucket {
            Some(b) => b.lock().take(),
            None => Ok(()),
        }
    }

    fn should_fail(&self) -> bool {
        self.error_rate > 0.0 && self.rng.lock().random_bool(self.error_rate)
    }
}

pub(crate) async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if req.path().starts_with("/__sim/") {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    }
    let Some(shared) = req.app_data::<web::Data<SimShared>>().cloned() else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    // The route pattern, not the path: `/api/v1/users/{id}` counts once whatever the id.
    let pattern = req
        .resource_map()
        .match_pattern(req.path())
        .unwrap_or_else(|| "(unmatched)".to_string());
    shared.stats.record(req.method().as_str(), &pattern);

    if let Some(d) = shared.faults.latency {
        actix_web::rt::time::sleep(d).await;
    }
    if let Err(retry_after) = shared.faults.throttle() {
        let resp = shared.vendor.throttled(Some(retry_after));
        return Ok(req.into_response(resp));
    }
    if shared.faults.should_fail() {
        let resp = shared.vendor.server_error();
        return Ok(req.into_response(resp));
    }
    next.call(req).await.map(|r| r.map_into_boxed_body())
}
