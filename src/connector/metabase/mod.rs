//! The Metabase connector: one adapter on the provisioning engine (`crate::engine`), wire code
//! only, over Metabase's REST API (open source, Starter, Pro and Enterprise alike; Metabase's
//! own SCIM is Pro/Enterprise only and never exposes "admin" [A.6]).
//!
//! - **Sign-in** ([`MetabaseSignIn`]): an API key (`x-api-key`), or a session from
//!   `POST /api/session` sent as `X-Metabase-Session` [A.1]. The vendor client caches the
//!   session, signs in once (single-flight) for every request of the tenant, and again on a
//!   401. Metabase throttles failed logins per username [A.1]: a refused password is not tried
//!   again for a minute, then two, four… up to an hour, so the bridge never keeps the account
//!   throttled for the person who owns it.
//! - **Users**: created in `All Users` (the role group the rules give follows as one
//!   membership call), updated, deactivated by `DELETE /api/user/:id` and reactivated by `PUT …/reactivate`.
//!   Metabase has no hard delete: an IdP DELETE deactivates, and a later create of the same
//!   email takes that user back and reactivates it.
//! - **Groups** are permission groups; membership is added by `POST /api/permissions/membership`
//!   and removed by membership id, which the adapter keeps.
//! - **Roles** are permission groups the rules name, `Administrators` (is_superuser) among them:
//!   each user the IdP wrote holds exactly one. The bridge never creates one.
//! - **Sandboxing attributes** (`[tenants.attributes]`) are `login_attributes` keys.
//!
//! Every reference to [A.n] is vendors-sisense-metabase.md part A.

pub mod adapter;
pub mod wire;

use super::http::{post_sign_in, Authenticator, ClientSettings, VendorClient, VendorError};
use super::roles::{rule_role_names, unknown_rule_groups};
use crate::config::{MetabaseAuth, Problem, TenantConfig, VendorConfig};
use crate::engine::Engine;
use crate::store::Store;
use adapter::MetabaseAdapter;
use async_trait::async_trait;
use parking_lot::Mutex;
use reqwest::header::{HeaderName, HeaderValue, ACCEPT};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// The first hold-off after a refused password; it doubles with each refusal in a row.
const REFUSED_HOLD_OFF: Duration = Duration::from_secs(60);
/// The longest hold-off: an operator who fixes the password restarts or reloads anyway.
const REFUSED_HOLD_OFF_MAX: Duration = Duration::from_secs(3600);

/// A refused password, remembered so that it is not sent again too soon.
struct Refusal {
    until: Instant,
    in_a_row: u32,
    reason: String,
}

/// Signs in with an API key or a password [A.1].
pub struct MetabaseSignIn {
    auth: MetabaseAuth,
    refused: Mutex<Option<Refusal>>,
}

impl MetabaseSignIn {
    pub fn new(auth: MetabaseAuth) -> Self {
        MetabaseSignIn {
            auth,
            refused: Mutex::new(None),
        }
    }

    fn sensitive(value: &str) -> Result<HeaderValue, VendorError> {
        let mut v = HeaderValue::from_str(value).map_err(|_| VendorError::Auth {
            reason: "the credential holds characters a header cannot carry".into(),
        })?;
        v.set_sensitive(true);
        Ok(v)
    }

    async fn log_in(
        &self,
        http: &reqwest::Client,
        base: &Url,
        username: &str,
        password: &str,
    ) -> Result<String, VendorError> {
        if let Some(r) = &*self.refused.lock() {
            let left = r.until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Err(VendorError::Auth {
                    reason: format!(
                        "{}; not tried again for {} s (Metabase throttles failed logins)",
                        r.reason,
                        left.as_secs().max(1)
                    ),
                });
            }
        }
        let wait_s = AtomicU64::new(0);
        let body = json!({"username": username, "password": password});
        let answer = post_sign_in(http, base, &wire::path("session"), &body, |body| {
            if String::from_utf8_lossy(body).contains(password) {
                return None;
            }
            let e = wire::MbError::parse(body)?;
            // "Too many attempts! You must wait N seconds before trying again." [A.1]
            if let Some(n) = e
                .message
                .split("wait ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                wait_s.store(n, Ordering::Relaxed);
            }
            Some(e.message)
        })
        .await;
        match answer {
            Ok(body) => {
                *self.refused.lock() = None;
                let s: wire::SessionAnswer =
                    serde_json::from_slice(&body).map_err(|e| VendorError::Decode {
                        reason: format!("sign-in answer: {e}"),
                    })?;
                Ok(s.id)
            }
            Err(VendorError::Auth { reason }) => {
                let mut refused = self.refused.lock();
                let in_a_row = refused.as_ref().map_or(0, |r| r.in_a_row) + 1;
                let hold = REFUSED_HOLD_OFF
                    .saturating_mul(1 << (in_a_row - 1).min(6))
                    .min(REFUSED_HOLD_OFF_MAX)
                    .max(Duration::from_secs(wait_s.load(Ordering::Relaxed)));
                *refused = Some(Refusal {
                    until: Instant::now() + hold,
                    in_a_row,
                    reason: reason.clone(),
                });
                Err(VendorError::Auth { reason })
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Authenticator for MetabaseSignIn {
    async fn sign_in(
        &self,
        http: &reqwest::Client,
        base: &Url,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError> {
        let accept = (ACCEPT, HeaderValue::from_static("application/json"));
        match &self.auth {
            // No call: a wrong key shows as a 401 on the first request [A.1].
            MetabaseAuth::ApiKey(key) => Ok(vec![
                (
                    HeaderName::from_static("x-api-key"),
                    Self::sensitive(key.expose())?,
                ),
                accept,
            ]),
            MetabaseAuth::Password { username, password } => {
                let session = self.log_in(http, base, username, password.expose()).await?;
                Ok(vec![
                    (
                        HeaderName::from_static("x-metabase-session"),
                        Self::sensitive(&session)?,
                    ),
                    accept,
                ])
            }
        }
    }

    /// A membership added twice breaks a unique constraint and Metabase answers 500 with the
    /// database's message [A.5]: the adapter's answer to read (it counts as done), not a
    /// failing Metabase.
    fn is_vendor_failure(&self, status: u16, body: &[u8]) -> bool {
        status >= 500 && !wire::is_duplicate_membership(status, body)
    }
}

/// Metabase documents no API rate limit (it is usually self-hosted, one JVM and its app
/// database): what protects it is the number of calls in flight, which a slow Metabase then
/// paces by itself; the rate ceiling only stops a runaway, and the client slows down on a 429
/// from a proxy.
pub fn client_settings() -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_secs(30),
        max_attempts: 6,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
        rate_per_sec: 1000.0,
        burst: 100,
        max_concurrency: 24,
        breaker_threshold: 20,
        breaker_cooldown: Duration::from_secs(10),
        ..ClientSettings::default()
    }
}

fn instance_of(tenant: &TenantConfig) -> Option<(&Url, &MetabaseAuth)> {
    match &tenant.vendor {
        VendorConfig::Metabase { base_url, auth } => Some((base_url, auth)),
        _ => None,
    }
}

fn adapter_for(
    tenant: &TenantConfig,
    base_url: &Url,
    auth: &MetabaseAuth,
    settings: ClientSettings,
) -> Result<(VendorClient, MetabaseAdapter), String> {
    let client = VendorClient::new(
        base_url.clone(),
        settings,
        Arc::new(MetabaseSignIn::new(auth.clone())),
    )
    .map_err(|e| e.to_string())?;
    let adapter = MetabaseAdapter::new(
        client.clone(),
        rule_role_names(&tenant.roles),
        tenant.attributes.keys().cloned().collect(),
    );
    Ok((client, adapter))
}

fn sign_in_problem(tenant_index: usize, auth: &MetabaseAuth, reason: &str) -> Problem {
    let (key, hint) = match auth {
        MetabaseAuth::ApiKey(_) => (
            "api_key",
            "check api_key (Admin settings → Authentication → API keys; the key's group must be Administrators)",
        ),
        MetabaseAuth::Password { .. } => (
            "password",
            "check username and password (the user must be a Metabase admin); the bridge waits before trying a refused password again, since Metabase throttles failed logins",
        ),
    };
    Problem {
        key_path: format!("tenants[{tenant_index}].vendor.{key}"),
        message: format!("Metabase refused the sign-in ({reason}); {hint}"),
    }
}

pub fn open(
    store: &Store,
    tenant: &TenantConfig,
    tenant_index: usize,
    role_changes: Option<prometheus::IntCounter>,
) -> Result<Arc<Engine>, String> {
    let (base_url, auth) = instance_of(tenant).ok_or("not a Metabase tenant")?;
    let (client, adapter) = adapter_for(tenant, base_url, auth, client_settings())?;
    super::open_engine(
        store,
        tenant,
        tenant_index,
        "metabase",
        Arc::new(adapter),
        client,
        role_changes,
    )
}

/// Problems a Metabase tenant has whatever the instance says: a rule naming "All Users", which
/// every user is in.
pub fn check_offline(config: &crate::config::Config) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, t) in config.tenants.iter().enumerate() {
        if !matches!(t.vendor, VendorConfig::Metabase { .. }) {
            continue;
        }
        let why = "\"All Users\" holds every Metabase user and cannot be a role; name another permission group or Administrators";
        for (k, rule) in t.roles.rules.iter().enumerate() {
            if wire::names_all_users(&rule.role) {
                out.push(Problem {
                    key_path: format!("tenants[{i}].roles.rules[{k}].role"),
                    message: why.into(),
                });
            }
        }
        if t.roles
            .default
            .as_deref()
            .is_some_and(wire::names_all_users)
        {
            out.push(Problem {
                key_path: format!("tenants[{i}].roles.default"),
                message: why.into(),
            });
        }
    }
    out
}

/// What `--online` and the start-up check establish: the sign-in and the admin privilege, then
/// every role group and (for `--online`) rule group the config names.
async fn verify(
    tenant: &TenantConfig,
    tenant_index: usize,
    settings: ClientSettings,
    rule_groups: bool,
) -> Result<Vec<Problem>, Vec<Problem>> {
    let Some((base_url, auth)) = instance_of(tenant) else {
        return Ok(Vec::new());
    };
    let base_problem = |message: String| Problem {
        key_path: format!("tenants[{tenant_index}].vendor.base_url"),
        message,
    };
    let (_client, adapter) =
        adapter_for(tenant, base_url, auth, settings).map_err(|m| vec![base_problem(m)])?;
    match adapter.check_admin().await {
        Ok(()) => {}
        Err(VendorError::Auth { reason }) => {
            return Err(vec![sign_in_problem(tenant_index, auth, &reason)])
        }
        Err(VendorError::Rejected { status: 403, .. }) => {
            return Err(vec![sign_in_problem(
                tenant_index,
                auth,
                "the bridge's user is not a Metabase admin",
            )])
        }
        Err(e) => return Ok(vec![base_problem(format!("cannot reach Metabase: {e}"))]),
    }
    let mut problems = Vec::new();
    match adapter.resolve_roles().await {
        Ok(catalog) => {
            if let Err(p) =
                crate::engine::role_table::RoleTable::build(tenant_index, &tenant.roles, catalog)
            {
                problems.extend(p.into_iter().map(|mut p| {
                    p.message = format!(
                        "{} (the bridge never creates permission groups: create it in Metabase, or fix the name)",
                        p.message
                    );
                    p
                }));
            }
        }
        Err(e) => problems.push(Problem {
            key_path: format!("tenants[{tenant_index}].roles"),
            message: format!("cannot read Metabase's permission groups: {e}"),
        }),
    }
    if rule_groups {
        match adapter.group_names().await {
            Ok(names) => {
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                problems.extend(unknown_rule_groups(tenant_index, &tenant.roles, &refs));
            }
            Err(e) => problems.push(Problem {
                key_path: format!("tenants[{tenant_index}].roles"),
                message: format!("cannot read Metabase groups: {e}"),
            }),
        }
    }
    Ok(problems)
}

/// The start-up check: a refused sign-in, a bridge user who is no admin, or a rule naming a
/// permission group Metabase does not have stops the tenant. An unreachable instance does not:
/// the engine resolves the roles when it answers.
pub async fn preflight(
    tenant: &TenantConfig,
    tenant_index: usize,
) -> Result<Option<crate::engine::role_table::RoleTable>, Vec<Problem>> {
    if instance_of(tenant).is_none() {
        return Ok(None);
    }
    let settings = ClientSettings {
        timeout: Duration::from_secs(10),
        max_attempts: 3,
        ..client_settings()
    };
    let outcome = verify(tenant, tenant_index, settings, false).await;
    super::settle_preflight(outcome)
}

pub async fn check_online(tenant: &TenantConfig, tenant_index: usize) -> Vec<Problem> {
    let settings = ClientSettings {
        max_attempts: 2,
        ..client_settings()
    };
    match verify(tenant, tenant_index, settings, true).await {
        Ok(p) | Err(p) => p,
    }
}
