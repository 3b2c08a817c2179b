//! Prometheus metrics served at `GET /metrics`. Labels are bounded: unknown tenants and
//! endpoints collapse to `unknown`, so a scanner cannot grow the series without limit.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub tenant_ready: IntGaugeVec,
    /// Vendor role changes recorded in the audit log, by tenant.
    pub role_changes: IntCounterVec,
    /// The engine's outbox, by tenant and state (`pending`, `failed`).
    pub outbox_depth: IntGaugeVec,
    /// Age of the oldest pending change, by tenant.
    pub outbox_oldest: GaugeVec,
    /// Deliveries by tenant and outcome (`delivered`, `retried`, `refused`), as totals.
    pub deliveries: IntCounterVec,
    /// The vendor client's current send rate, by tenant.
    pub send_rate: GaugeVec,
    /// Rows written by admin exports and reports, by export (`audit`, `access`).
    pub export_rows: prometheus::IntCounterVec,
    /// The running (or last) sync's users read, and whether one runs, by tenant.
    pub sync_users: IntGaugeVec,
    pub sync_running: IntGaugeVec,
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
        let outbox_depth = IntGaugeVec::new(
            Opts::new(
                "scim_outbox_depth",
                "Objects whose vendor state differs from what the IdP asked, by state (pending: being delivered; failed: refused by the vendor for good).",
            ),
            &["tenant", "state"],
        )
        .expect("valid metric definition");
        let outbox_oldest = GaugeVec::new(
            Opts::new(
                "scim_outbox_oldest_pending_seconds",
                "Age of the oldest change not yet delivered to the vendor.",
            ),
            &["tenant"],
        )
        .expect("valid metric definition");
        let deliveries = IntCounterVec::new(
            Opts::new(
                "scim_vendor_deliveries_total",
                "Reconciles of one object since start, by outcome (delivered, retried: a transient failure, refused: the vendor refused for good; refused_capacity: of those, for lack of a licence seat, counted at each retry; removal_kept: an IdP delete the vendor answered by keeping the user without access, e.g. Tableau users who own content).",
            ),
            &["tenant", "outcome"],
        )
        .expect("valid metric definition");
        let send_rate = GaugeVec::new(
            Opts::new(
                "scim_vendor_send_rate",
                "The rate (requests per second) the bridge currently allows itself towards the vendor; lowered when the vendor throttles.",
            ),
            &["tenant"],
        )
        .expect("valid metric definition");
        let export_rows = IntCounterVec::new(
            Opts::new(
                "scim_admin_export_rows_total",
                "Rows written by admin exports and reports (audit, access) since start: a running export's progress is this counter's rate.",
            ),
            &["export"],
        )
        .expect("valid metric definition");
        let sync_users = IntGaugeVec::new(
            Opts::new(
                "scim_sync_users_seen",
                "Vendor users read by the running sync of a tenant (the last sync's count once it ended).",
            ),
            &["tenant"],
        )
        .expect("valid metric definition");
        let sync_running = IntGaugeVec::new(
            Opts::new(
                "scim_sync_running",
                "1 while a tenant's sync (a full read of the vendor directory) runs.",
            ),
            &["tenant"],
        )
        .expect("valid metric definition");
        for c in [
            Box::new(export_rows.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(sync_users.clone()),
            Box::new(sync_running.clone()),
            Box::new(outbox_depth.clone()),
            Box::new(outbox_oldest.clone()),
            Box::new(deliveries.clone()),
            Box::new(send_rate.clone()),
            Box::new(requests.clone()),
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
            outbox_depth,
            outbox_oldest,
            deliveries,
            send_rate,
            export_rows,
            sync_users,
            sync_running,
        }
    }

    /// Sets the engine's gauges of one tenant (read at scrape time).
    pub fn record_engine(&self, tenant: &str, s: &crate::engine::EngineStats) {
        self.outbox_depth
            .with_label_values(&[tenant, "pending"])
            .set(s.pending as i64);
        self.outbox_depth
            .with_label_values(&[tenant, "failed"])
            .set(s.failed as i64);
        self.outbox_oldest
            .with_label_values(&[tenant])
            .set(s.oldest_pending_s);
        for (outcome, n) in [
            ("delivered", s.delivered),
            ("retried", s.retried),
            ("refused", s.refused),
            ("refused_capacity", s.refused_capacity),
            ("removal_kept", s.removals_kept),
        ] {
            // The engine counts; the counter catches up at each scrape.
            let c = self.deliveries.with_label_values(&[tenant, outcome]);
            if n > c.get() {
                c.inc_by(n - c.get());
            }
        }
        self.send_rate.with_label_values(&[tenant]).set(s.send_rate);
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
