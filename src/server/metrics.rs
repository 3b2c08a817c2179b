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
    /// SCIM requests refused by `[limits] tenant_rate` (429), by tenant.
    pub rate_limited: IntCounterVec,
    /// Config reloads (SIGHUP) by `result`: `applied` or `refused`.
    pub config_reloads: IntCounterVec,
    /// The admin exports running now, with their progress (the dashboard's list).
    pub exports: std::sync::Arc<RunningExports>,
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
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "scim_rate_limited_total",
                "SCIM requests answered 429 because the tenant was over [limits] tenant_rate.",
            ),
            &["tenant"],
        )
        .expect("valid metric definition");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "scim_config_reloads_total",
                "Config reloads (SIGHUP), by result: applied, or refused (the running config kept).",
            ),
            &["result"],
        )
        .expect("valid metric definition");
        for c in [
            Box::new(export_rows.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(config_reloads.clone()),
            Box::new(rate_limited.clone()),
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
            rate_limited,
            config_reloads,
            exports: Default::default(),
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

    /// Drops every series labelled with `tenant`, a tenant a config reload removed: its id is
    /// often a customer's name, and its series would otherwise be scraped, frozen, until the
    /// next restart.
    pub fn forget_tenant(&self, tenant: &str) {
        forget(&self.requests, tenant);
        forget(&self.latency, tenant);
        forget(&self.tenant_ready, tenant);
        forget(&self.role_changes, tenant);
        forget(&self.outbox_depth, tenant);
        forget(&self.outbox_oldest, tenant);
        forget(&self.deliveries, tenant);
        forget(&self.send_rate, tenant);
        forget(&self.sync_users, tenant);
        forget(&self.sync_running, tenant);
        forget(&self.rate_limited, tenant);
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

/// Removes the series of `vec` whose `tenant` label is `tenant` (the crate removes by full label
/// set only, so the series are read back to find them).
fn forget<T: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<T>,
    tenant: &str,
) {
    use prometheus::core::Collector;
    for family in vec.collect() {
        for m in family.get_metric() {
            let labels: std::collections::HashMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get("tenant") == Some(&tenant) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The admin exports and reports running now (audit export, access report), each with the rows
/// written so far and the total once known: the dashboard lists them as it shows a sync's
/// progress. `export_rows` counts the same rows for `/metrics`. An export leaves the list when
/// its [`ExportProgress`] handle is dropped, however it ended (done, failed, client gone).
#[derive(Default)]
pub struct RunningExports {
    next: std::sync::atomic::AtomicU64,
    running: parking_lot::Mutex<std::collections::BTreeMap<u64, std::sync::Arc<ExportState>>>,
}

struct ExportState {
    export: &'static str,
    tenant: Option<String>,
    format: String,
    started_at: String,
    rows: std::sync::atomic::AtomicU64,
    /// `u64::MAX` while unknown.
    total: std::sync::atomic::AtomicU64,
}

/// One running export as the dashboard and `GET /admin/api/exports` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportView {
    pub id: u64,
    /// `audit` or `access`.
    pub export: String,
    /// The tenant asked for (`None`: every tenant).
    pub tenant: Option<String>,
    pub format: String,
    pub started_at: String,
    pub rows: u64,
    pub total: Option<u64>,
}

impl RunningExports {
    /// Lists a new export until the handle is dropped.
    pub fn start(
        self: &std::sync::Arc<Self>,
        export: &'static str,
        tenant: Option<&str>,
        format: &str,
    ) -> ExportProgress {
        use std::sync::atomic::Ordering;
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let state = std::sync::Arc::new(ExportState {
            export,
            tenant: tenant.map(str::to_string),
            format: format.to_string(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            rows: Default::default(),
            total: std::sync::atomic::AtomicU64::new(u64::MAX),
        });
        self.running.lock().insert(id, state.clone());
        ExportProgress {
            id,
            state,
            list: self.clone(),
        }
    }

    /// The exports running now, oldest first.
    pub fn snapshot(&self) -> Vec<ExportView> {
        use std::sync::atomic::Ordering;
        self.running
            .lock()
            .iter()
            .map(|(id, s)| ExportView {
                id: *id,
                export: s.export.to_string(),
                tenant: s.tenant.clone(),
                format: s.format.clone(),
                started_at: s.started_at.clone(),
                rows: s.rows.load(Ordering::Relaxed),
                total: Some(s.total.load(Ordering::Relaxed)).filter(|t| *t != u64::MAX),
            })
            .collect()
    }
}

impl ExportView {
    /// One line for the dashboard (the console's JS writes the same words).
    pub fn text(&self) -> String {
        let what = match self.export.as_str() {
            "audit" => "audit export",
            "access" => "access report",
            other => other,
        };
        let whom = match &self.tenant {
            Some(t) => format!("tenant {t}"),
            None => "all tenants".to_string(),
        };
        let total = self.total.map(|t| format!(" / {t}")).unwrap_or_default();
        format!(
            "{what} ({whom}, {}): {}{total} rows",
            self.format, self.rows
        )
    }
}

/// The handle of one running export: it reports the rows written and leaves the list when
/// dropped.
pub struct ExportProgress {
    id: u64,
    state: std::sync::Arc<ExportState>,
    list: std::sync::Arc<RunningExports>,
}

impl ExportProgress {
    /// Rows written so far (never more than the total, once known).
    pub fn rows(&self, n: u64) {
        use std::sync::atomic::Ordering;
        let total = self.state.total.load(Ordering::Relaxed);
        self.state.rows.store(n.min(total), Ordering::Relaxed);
    }

    pub fn total(&self, n: u64) {
        self.state
            .total
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for ExportProgress {
    fn drop(&mut self) {
        self.list.running.lock().remove(&self.id);
    }
}
