//! Request counters behind `GET /__sim/stats` (CONTRACT §1): a test counts the vendor calls that
//! one SCIM operation cost. Keys are `METHOD /route/pattern` so that ids don't grow the map.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{web, HttpRequest, HttpResponse};
use parking_lot::RwLock;
use serde_json::{json, Map, Value};

use super::SimShared;

/// Counts requests. The hot path takes only a read lock and an atomic add; the write lock is
/// taken once per new route key.
#[derive(Default)]
pub struct RequestStats {
    total: AtomicU64,
    by_route: RwLock<HashMap<String, AtomicU64>>,
}

impl RequestStats {
    pub fn record(&self, method: &str, pattern: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let key = format!("{method} {pattern}");
        if let Some(n) = self.by_route.read().get(&key) {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.by_route
            .write()
            .entry(key)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Value {
        let routes = self.by_route.read();
        let mut keys: Vec<&String> = routes.keys().collect();
        keys.sort();
        let mut by_route = Map::new();
        for k in keys {
            by_route.insert(k.clone(), json!(routes[k].load(Ordering::Relaxed)));
        }
        json!({"requests": self.total.load(Ordering::Relaxed), "by_route": by_route})
    }

    pub fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        self.by_route.write().clear();
    }
}

fn from_loopback(req: &HttpRequest) -> bool {
    req.peer_addr().is_some_and(|a| a.ip().is_loopback())
}

/// `GET /__sim/stats`: loopback only, no auth, not counted itself.
pub(crate) async fn get_stats(req: HttpRequest, shared: web::Data<SimShared>) -> HttpResponse {
    if !from_loopback(&req) {
        return HttpResponse::Forbidden().body("/__sim/stats answers loopback clients only");
    }
    HttpResponse::Ok().json(shared.stats.snapshot())
}

/// `DELETE /__sim/stats`: zeroes the counters (between test phases).
pub(crate) async fn reset_stats(req: HttpRequest, shared: web::Data<SimShared>) -> HttpResponse {
    if !from_loopback(&req) {
        return HttpResponse::Forbidden().body("/__sim/stats answers loopback clients only");
    }
    shared.stats.reset();
    HttpResponse::NoContent().finish()
}
