//! Prometheus metrics served at `GET /metrics`. Labels are bounded: unknown tenants and
//! endpoints collapse to `unknown`, so a scanner cannot grow the series without limit.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub tenant_ready: IntGaugeVec,
    /// Vendor role changes recorded in the audit log, by tenant.
    pub role_changes: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "scim_requests_total",
                "SCIM requests by tenant, resource, method and status.",
            ),
            &["tenant", "resource", "method", "status"],
        )
        .expect("valid metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new("scim_request_duration_seconds", "SCIM request latency.").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            ),
            &["tenant", "resource", "method"],
        )
        .expect("valid metric definition");
        let tenant_ready = IntGaugeVec::new(
            Opts::new(
                "scim_tenant_ready",
                "1 when the tenant's connector is ready, else 0.",
            ),
            &["tenant"],
        )
        .expect("valid metric definition");
        let role_changes = IntCounterVec::new(
            Opts::new(
                "scim_role_changes_total",
                "Vendor role changes made by role rules (entries of the audit log).",
            ),
            &["tenant"],
        )
        .expect("valid metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(tenant_ready.clone()),
            Box::new(role_changes.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            latency,
            tenant_ready,
            role_changes,
        }
    }

    pub fn observe(&self, tenant: &str, resource: &str, method: &str, status: u16, seconds: f64) {
        // Any token is a valid HTTP method to actix: collapse the rest so a client cannot mint
        // series without limit.
        let method = match method {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
            _ => "other",
        };
        let status = status.to_string();
        self.requests
            .with_label_values(&[tenant, resource, method, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[tenant, resource, method])
            .observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
