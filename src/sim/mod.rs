//! Vendor simulators: faithful fakes of the vendors' REST APIs, served over real sockets.
//!
//! The framework (this module, `faults`, `stats`, `session`, `ids`) is shared by the four vendors:
//! it binds the socket, counts every request into `GET /__sim/stats`, and injects the faults of
//! CONTRACT §1 (`--latency-ms`, `--error-rate`, `--throttle-rps`) in one middleware. Everything the
//! vendor decides — routes, bodies, its own 429/5xx shapes, token lifetime — lives in the vendor
//! module behind [`VendorSim`].
//!
//! Simulators never import connector code (ARCHITECTURE.md): the wire types here are written from
//! shared/reference on their own, so a misreading of the vendor shows up as a failing test.
//!
//! `GET /__sim/stats` → `{"requests": N, "by_route": {"METHOD /route/{pattern}": N}}` (loopback
//! only, no auth, not counted, untouched by faults); `DELETE /__sim/stats` zeroes the counters.
//! Unmatched paths count as `METHOD (unmatched)`.
//!
//! ## Switches for UNVERIFIED vendor behaviour (defaults follow shared/reference)
//!
//! | flag | default | effect |
//! |---|---|---|
//! | `--legacy-2021` | off | Sisense as the 2021 spec: `PATCH {"active"}` → 400, login form-only, no `/api/v1/roles` |
//! | `--sisense-filters-ignore-case` | off | Sisense exact-match filters ignore case |
//! | `--sisense-duplicate-group-status` | 400 | status of a duplicate group name (POST and legacy rename) |
//! | `--sisense-basic-role-name NAME` | unset | seed a "Basic User" role with that API name |
//! | `--sisense-default-limit N` | unset (all) | Sisense list page size when `limit` is absent |
//! | `--sim-switch sisense.retry_after=true` | off | Sisense 429 carries `Retry-After` |
//! | `--sim-switch sisense.scim=false` | on | Sisense native SCIM endpoint `/api/scim/v2` (off: 404) |
//! | `--sim-switch sisense.scim_token=T` | `simulator-scim-token` | Sisense SCIM bearer token |
//! | `--sim-switch sisense.scim_group_patch_returns=resource` | 204 | SCIM group PATCH → 200 + group |
//! | `--metabase-strict-redeactivate` | off | DELETE of an inactive Metabase user → 404 instead of 200 |
//! | `--metabase-login-attempts N` | 10 | failed logins per username before throttling; 0 = off |
//! | `--sim-switch metabase.retry_after=true` | off | Metabase 429 carries `Retry-After` |
//! | `--token-ttl-s N` | Sisense: never; Metabase: 14 days | token/session lifetime (not the Metabase API key) |

pub mod faults;
pub mod ids;
pub mod session;
pub mod stats;

pub mod metabase;
pub mod sisense;
pub mod tableau;
pub mod thoughtspot;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};

use faults::FaultInjector;
use stats::RequestStats;

/// The four simulated vendors (the `VENDOR` argument of `scim-bridge simulate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Vendor {
    Sisense,
    Tableau,
    Thoughtspot,
    Metabase,
}

impl Vendor {
    pub const ALL: [Vendor; 4] = [
        Vendor::Sisense,
        Vendor::Tableau,
        Vendor::Thoughtspot,
        Vendor::Metabase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Sisense => "sisense",
            Vendor::Tableau => "tableau",
            Vendor::Thoughtspot => "thoughtspot",
            Vendor::Metabase => "metabase",
        }
    }
}

impl std::fmt::Display for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fault flags (CONTRACT §1), credential overrides and vendor switches.
///
/// Switches exist for behaviour the reference marks **UNVERIFIED**: each names its default, and
/// the default is the reference's recommendation. `SimOptions::default()` has every fault off.
#[derive(Clone, Debug, clap::Args)]
pub struct SimOptions {
    /// Milliseconds added to every response (faulted ones too; not to `/__sim/stats`).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction (0.0–1.0) of requests answered with the vendor's own 5xx instead of being served.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Requests per second allowed (token bucket, burst = max(1, rps)); beyond it the vendor's
    /// own 429 answer, with `Retry-After` only where that vendor sends one.
    #[arg(long)]
    pub throttle_rps: Option<f64>,
    /// Session/token lifetime in seconds. Unset = the vendor's own default (Sisense: tokens never
    /// expire, as before L2024.1; Metabase: 14 days, MAX_SESSION_AGE=20160 minutes).
    #[arg(long)]
    pub token_ttl_s: Option<u64>,
    /// Seed for everything random (ids, tokens, which requests fail): same seed, same run.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Admin login, overriding the vendor default of CONTRACT §1 (sisense `admin@sisense.local`,
    /// tableau `admin@tableau.local`, thoughtspot `tsadmin`, metabase `admin@metabase.local`).
    #[arg(long)]
    pub admin_user: Option<String>,
    /// Admin password, overriding the vendor default (`admin` for all four).
    #[arg(long)]
    pub admin_password: Option<String>,
    /// Metabase API key (default `mb_simulator_api_key`); the key is bound to the Administrators group.
    #[arg(long)]
    pub api_key: Option<String>,
    /// ThoughtSpot trusted-auth secret key (default `simulator-secret-key`).
    #[arg(long)]
    pub secret_key: Option<String>,
    /// Tableau site contentUrl (default `default`).
    #[arg(long)]
    pub site: Option<String>,
    /// Tableau personal access token name (default `scim-bridge`).
    #[arg(long)]
    pub pat_name: Option<String>,
    /// Tableau personal access token secret (default `simulator-pat-secret`).
    #[arg(long)]
    pub pat_secret: Option<String>,
    /// Tableau connected-app client id (default `sim-client`).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Tableau connected-app secret id (default `sim-secret-id`).
    #[arg(long)]
    pub secret_id: Option<String>,
    /// Tableau connected-app secret value (default `simulator-connected-app-secret`).
    #[arg(long)]
    pub secret_value: Option<String>,

    /// Sisense: behave like the 2021 v1 spec, where the user PATCH body has no `active` field;
    /// `PATCH {"active": ...}` is then rejected (400, validation error in the Sisense envelope).
    /// Default off: `active` is accepted on PATCH, as the 2026 API guide deactivates that way.
    #[arg(long)]
    pub legacy_2021: bool,
    /// Sisense (UNVERIFIED): compare the exact-match user/group filters (`email`, `userName`,
    /// `name`, ...) ignoring case. Default off: exact, case-sensitive.
    #[arg(long)]
    pub sisense_filters_ignore_case: bool,
    /// Sisense (UNVERIFIED): HTTP status for `POST /api/v1/groups` with an existing name.
    /// Default 400 (code 2004-style envelope "The group already exists.").
    #[arg(long, default_value_t = 400)]
    pub sisense_duplicate_group_status: u16,
    /// Sisense (UNVERIFIED): API `name` of the "Basic User" role of newer releases; when set, the
    /// role is seeded next to the six built-in ones. Default unset (not seeded).
    #[arg(long)]
    pub sisense_basic_role_name: Option<String>,
    /// Sisense (UNVERIFIED): page size of list endpoints called without `limit`. The 2021 spec
    /// gives no default (unset: everything); the 2026 third-party guide says 50.
    #[arg(long)]
    pub sisense_default_limit: Option<usize>,
    /// Metabase (UNVERIFIED): `DELETE /api/user/:id` on an already deactivated user answers
    /// 200 `{"success":true}` (default). With this flag: 404 `Not found.`.
    #[arg(long)]
    pub metabase_strict_redeactivate: bool,
    /// Metabase: failed logins per username before throttling (default 10, as Metabase's
    /// login throttler); 0 disables throttling (MB_DISABLE_SESSION_THROTTLE).
    #[arg(long, default_value_t = 10)]
    pub metabase_login_attempts: u32,
    /// Vendor-specific switches not (yet) given their own flag, as `KEY=VALUE` (repeatable).
    /// Each vendor module documents the keys it reads.
    #[arg(long = "sim-switch", value_parser = parse_switch)]
    pub switches: Vec<(String, String)>,
}

fn parse_switch(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            latency_ms: 0,
            error_rate: 0.0,
            throttle_rps: None,
            token_ttl_s: None,
            seed: None,
            admin_user: None,
            admin_password: None,
            api_key: None,
            secret_key: None,
            site: None,
            pat_name: None,
            pat_secret: None,
            client_id: None,
            secret_id: None,
            secret_value: None,
            legacy_2021: false,
            sisense_filters_ignore_case: false,
            sisense_duplicate_group_status: 400,
            sisense_basic_role_name: None,
            sisense_default_limit: None,
            metabase_strict_redeactivate: false,
            metabase_login_attempts: 10,
            switches: Vec::new(),
        }
    }
}

impl SimOptions {
    /// The value of a `--sim-switch KEY=VALUE`, the last one winning.
    pub fn switch(&self, key: &str) -> Option<&str> {
        self.switches
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A seed for one consumer (`salt` tells consumers apart), derived from `--seed`, or random.
    pub fn derived_seed(&self, salt: u64) -> u64 {
        match self.seed {
            Some(s) => s ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            None => rand::random(),
        }
    }
}

/// What each vendor module gives the framework.
pub trait VendorSim: Send + Sync + 'static {
    /// Registers the vendor's routes; shared state is captured inside (e.g. `web::Data`).
    fn configure(&self, cfg: &mut web::ServiceConfig);
    /// The vendor's own 429 answer. `retry_after_s` is when the bucket has a token again; send it
    /// as `Retry-After` only if the real vendor does.
    fn throttled(&self, retry_after_s: Option<u64>) -> HttpResponse;
    /// The vendor's own 5xx answer (for `--error-rate`).
    fn server_error(&self) -> HttpResponse;
    /// The vendor's answer to a path it does not serve.
    fn not_found(&self) -> HttpResponse {
        HttpResponse::NotFound().finish()
    }
}

/// A simulator running on its own socket.
pub struct RunningSim {
    pub vendor: Vendor,
    pub addr: SocketAddr,
    pub handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningSim {
    /// `http://ADDR` (no trailing slash); the vendor's paths are appended to it.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish (at most 1 s), and waits for the server.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }

    /// Waits until the server ends (after `handle.stop`, or a fatal I/O error).
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// The vendor module behind `vendor`. Tableau and ThoughtSpot are plugged in by their module
/// (`Some(tableau::new(opts))`) once it exists.
fn vendor_sim(vendor: Vendor, opts: &SimOptions) -> Option<Arc<dyn VendorSim>> {
    match vendor {
        Vendor::Sisense => Some(sisense::new(opts)),
        Vendor::Metabase => Some(metabase::new(opts)),
        Vendor::Tableau => Some(tableau::new(opts)),
        Vendor::Thoughtspot => Some(thoughtspot::new(opts)),
    }
}

/// Shared by every worker of one simulator: the vendor, the fault injector, the counters.
pub(crate) struct SimShared {
    pub(crate) vendor: Arc<dyn VendorSim>,
    pub(crate) faults: FaultInjector,
    pub(crate) stats: RequestStats,
}

/// Binds `listen` (port 0 allowed), spawns the server on the current tokio runtime, and returns
/// at once with the bound address.
pub async fn start(
    vendor: Vendor,
    listen: SocketAddr,
    opts: SimOptions,
) -> std::io::Result<RunningSim> {
    let sim = vendor_sim(vendor, &opts).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("the {vendor} simulator is not built yet"),
        )
    })?;
    if !(0.0..=1.0).contains(&opts.error_rate) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "--error-rate must be between 0.0 and 1.0",
        ));
    }
    if opts.throttle_rps.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "--throttle-rps must be greater than 0",
        ));
    }
    let shared = web::Data::new(SimShared {
        vendor: sim,
        faults: FaultInjector::new(&opts),
        stats: RequestStats::default(),
    });
    let listener = std::net::TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        let shared = shared.clone();
        let vendor = shared.vendor.clone();
        let fallback = shared.vendor.clone();
        App::new()
            .app_data(shared)
            .wrap(actix_web::middleware::from_fn(faults::middleware))
            .route("/__sim/stats", web::get().to(stats::get_stats))
            .route("/__sim/stats", web::delete().to(stats::reset_stats))
            .configure(move |cfg| vendor.configure(cfg))
            .default_service(web::to(move || {
                let resp = fallback.not_found();
                async move { resp }
            }))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    Ok(RunningSim {
        vendor,
        addr,
        handle,
        task,
    })
}

/// The default credentials printed at start (CONTRACT §1; the README copies this table).
pub fn banner(vendor: Vendor, base_url: &str, opts: &SimOptions) -> String {
    let user = |d: &str| opts.admin_user.clone().unwrap_or_else(|| d.to_string());
    let pass = opts.admin_password.as_deref().unwrap_or("admin");
    let or = |o: &Option<String>, d: &str| o.clone().unwrap_or_else(|| d.to_string());
    let creds = match vendor {
        Vendor::Sisense => {
            let mut c = format!(
                "  login:    POST {base_url}/api/v1/authentication/login (form: username, password)\n  \
                 user:     {}\n  password: {pass}",
                user("admin@sisense.local")
            );
            if opts.switch("sisense.scim") != Some("false") {
                let token = opts
                    .switch("sisense.scim_token")
                    .filter(|t| !t.is_empty())
                    .unwrap_or(sisense::DEFAULT_SCIM_TOKEN);
                c.push_str(&format!(
                    "\n  SCIM:     {base_url}/api/scim/v2 (Authorization: Bearer {token})"
                ));
            }
            c
        }
        Vendor::Tableau => format!(
            "  site contentUrl: {}\n  PAT:             name {} / secret {}\n  \
             connected app:   client id {}, secret id {}, secret value {}\n  admin:           {} / {pass}",
            or(&opts.site, "default"),
            or(&opts.pat_name, "scim-bridge"),
            or(&opts.pat_secret, "simulator-pat-secret"),
            or(&opts.client_id, "sim-client"),
            or(&opts.secret_id, "sim-secret-id"),
            or(&opts.secret_value, "simulator-connected-app-secret"),
            user("admin@tableau.local"),
        ),
        Vendor::Thoughtspot => format!(
            "  user:       {}\n  password:   {pass}\n  secret key: {}",
            user("tsadmin"),
            or(&opts.secret_key, "simulator-secret-key"),
        ),
        Vendor::Metabase => format!(
            "  API key (x-api-key): {}\n  admin:               {} / {pass}",
            or(&opts.api_key, "mb_simulator_api_key"),
            user("admin@metabase.local"),
        ),
    };
    let mut faults = Vec::new();
    if opts.latency_ms > 0 {
        faults.push(format!("latency {} ms", opts.latency_ms));
    }
    if opts.error_rate > 0.0 {
        faults.push(format!("error rate {}", opts.error_rate));
    }
    if let Some(r) = opts.throttle_rps {
        faults.push(format!("throttle {r} req/s"));
    }
    if let Some(t) = opts.token_ttl_s {
        faults.push(format!("token ttl {t} s"));
    }
    if let Some(s) = opts.seed {
        faults.push(format!("seed {s}"));
    }
    let faults = if faults.is_empty() {
        "none".to_string()
    } else {
        faults.join(", ")
    };
    format!(
        "{vendor} simulator listening on {base_url}\n{creds}\n  faults:   {faults}\n  stats:    GET {base_url}/__sim/stats\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[arg(value_enum)]
        vendor: Vendor,
        #[command(flatten)]
        opts: SimOptions,
    }

    #[test]
    fn cli_defaults_are_the_default_options() {
        let cli = Cli::try_parse_from(["simulate", "sisense"]).unwrap();
        assert_eq!(cli.vendor, Vendor::Sisense);
        assert_eq!(
            format!("{:?}", cli.opts),
            format!("{:?}", SimOptions::default())
        );
    }

    #[test]
    fn cli_parses_fault_flags_and_switches() {
        let cli = Cli::try_parse_from([
            "simulate",
            "metabase",
            "--latency-ms",
            "20",
            "--error-rate",
            "0.1",
            "--throttle-rps",
            "50",
            "--token-ttl-s",
            "60",
            "--seed",
            "7",
            "--legacy-2021",
            "--sim-switch",
            "metabase.retry_after=true",
        ])
        .unwrap();
        let o = cli.opts;
        assert_eq!(
            (
                o.latency_ms,
                o.error_rate,
                o.throttle_rps,
                o.token_ttl_s,
                o.seed
            ),
            (20, 0.1, Some(50.0), Some(60), Some(7))
        );
        assert!(o.legacy_2021);
        assert_eq!(o.switch("metabase.retry_after"), Some("true"));
        assert!(Cli::try_parse_from(["simulate", "tableau", "--sim-switch", "nokey"]).is_err());
    }

    #[test]
    fn banner_names_the_default_credentials() {
        let o = SimOptions::default();
        let b = banner(Vendor::Sisense, "http://127.0.0.1:1", &o);
        assert!(b.contains("admin@sisense.local") && b.contains("admin"));
        assert!(b.contains("/api/scim/v2") && b.contains("simulator-scim-token"));
        let b = banner(Vendor::Metabase, "http://127.0.0.1:1", &o);
        assert!(b.contains("mb_simulator_api_key") && b.contains("admin@metabase.local"));
        let b = banner(Vendor::Tableau, "http://127.0.0.1:1", &o);
        assert!(b.contains("simulator-pat-secret") && b.contains("simulator-connected-app-secret"));
        let b = banner(Vendor::Thoughtspot, "http://127.0.0.1:1", &o);
        assert!(b.contains("tsadmin") && b.contains("simulator-secret-key"));
    }

    #[test]
    fn token_bucket_refuses_beyond_the_burst_and_says_when() {
        let mut b = faults::TokenBucket::new(2.0, 2.0);
        assert!(b.take().is_ok());
        assert!(b.take().is_ok());
        assert_eq!(b.take(), Err(1));
    }

    #[tokio::test]
    async fn stop_frees_the_port() {
        let sim = start(
            Vendor::Metabase,
            "127.0.0.1:0".parse().unwrap(),
            SimOptions::default(),
        )
        .await
        .unwrap();
        let addr = sim.addr;
        sim.stop().await;
        assert!(std::net::TcpListener::bind(addr).is_ok());
    }

    #[tokio::test]
    async fn bad_fault_values_are_refused() {
        let bad = SimOptions {
            error_rate: 1.5,
            ..SimOptions::default()
        };
        assert!(start(Vendor::Sisense, "127.0.0.1:0".parse().unwrap(), bad)
            .await
            .is_err());
        let bad = SimOptions {
            throttle_rps: Some(0.0),
            ..SimOptions::default()
        };
        assert!(start(Vendor::Sisense, "127.0.0.1:0".parse().unwrap(), bad)
            .await
            .is_err());
    }
}
