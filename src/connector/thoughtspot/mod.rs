//! The ThoughtSpot connector: one adapter on the provisioning engine (`crate::engine`), wire code
//! only, REST API v2.0.
//!
//! - **Sign-in** ([`ThoughtspotSignIn`]): `auth/token/full` with a password or a trusted-auth
//!   secret key, for the tenant's `org_id`, valid `token_validity_s` [B.2]. There is no refresh
//!   token: the vendor client signs in again (single-flight) before the token runs out and on a
//!   401. A token for another Org than the configured one is refused, never used.
//! - **Users** with `account_status` ACTIVE / SUSPENDED for SCIM `active` (as Okta's own
//!   ThoughtSpot integration does, [B.4]); **groups** and their membership, always with an
//!   explicit `operation` (ADD / REMOVE: the REPLACE default would wipe other members [B.5]);
//!   the Org's "All" and "Administrator" groups are never touched.
//! - **Roles** come only through groups [B.3]: a rule's role names a ThoughtSpot group, or an
//!   RBAC role, which the user holds by joining the bridge's group carrying exactly that role
//!   (`scim-bridge role <Role>`, created when missing). Role groups are exclusive.
//! - **Orgs**: every call runs in the tenant's Org; with `org_group_pattern`, SCIM groups that
//!   match it are Orgs, and their members the Org's members (created when `create_orgs`).
//! - **Formula variables** (`[tenants.attributes]`) carry per-user values for row-level
//!   security.
//!
//! Every reference to [B.n] is vendors-tableau-thoughtspot.md part B.

pub mod adapter;
pub mod wire;

use super::http::{
    post_sign_in, Authenticator, ClientSettings, RateBudget, VendorClient, VendorError,
};
use super::roles::{rule_role_names, unknown_rule_groups};
use crate::config::{
    Problem, TenantConfig, ThoughtspotAccountType, ThoughtspotAuth, ThoughtspotOrgGroups,
    VendorConfig,
};
use crate::engine::Engine;
use crate::store::Store;
use adapter::ThoughtspotAdapter;
use async_trait::async_trait;
use parking_lot::Mutex;
use reqwest::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use url::Url;

/// A token is replaced once this share of its life has passed (the rest absorbs clock skew and
/// slow calls: a token never expires in flight).
const RENEW_AT_SHARE: f64 = 0.8;

/// Signs in with `auth/token/full` [B.2] and remembers when the token must be replaced.
pub struct ThoughtspotSignIn {
    username: String,
    auth: ThoughtspotAuth,
    org_id: i64,
    validity_s: u64,
    renew_at: Mutex<Option<Instant>>,
}

impl ThoughtspotSignIn {
    pub fn new(username: &str, auth: ThoughtspotAuth, org_id: i64, validity_s: u64) -> Self {
        ThoughtspotSignIn {
            username: username.to_string(),
            auth,
            org_id,
            validity_s,
            renew_at: Mutex::new(None),
        }
    }

    fn secret(&self) -> &str {
        match &self.auth {
            ThoughtspotAuth::Password(p) | ThoughtspotAuth::SecretKey(p) => p.expose(),
        }
    }
}

#[async_trait]
impl Authenticator for ThoughtspotSignIn {
    async fn sign_in(
        &self,
        http: &reqwest::Client,
        base: &Url,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError> {
        // Never `auto_create`: it replaces the user's groups on every call [B.5].
        let mut body = json!({
            "username": self.username,
            // Always named: left out, ThoughtSpot picks the Org of the secret key or of the last
            // login [B.2], which may be another customer's.
            "org_id": self.org_id,
            "validity_time_in_sec": self.validity_s,
        });
        match &self.auth {
            ThoughtspotAuth::Password(p) => body["password"] = json!(p.expose()),
            ThoughtspotAuth::SecretKey(k) => body["secret_key"] = json!(k.expose()),
        }
        let asked = Instant::now();
        // The code and ThoughtSpot's message tell bad credentials (10097) from an Org that is
        // wrong or not this user's (10002); a message that echoes the secret is left out.
        let body = post_sign_in(http, base, &wire::path("auth/token/full"), &body, |body| {
            // Checked on the whole body, before the message is shortened.
            if String::from_utf8_lossy(body).contains(self.secret()) {
                return None;
            }
            wire::TsError::parse(body).map(|e| e.describe())
        })
        .await?;
        let answer: wire::TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| VendorError::Decode {
                reason: format!("sign-in answer: {e}"),
            })?;
        if let Some(granted) = answer.scope.as_ref().and_then(|s| s.org_id) {
            if granted != self.org_id {
                return Err(VendorError::Auth {
                    reason: format!(
                        "ThoughtSpot granted a token for Org {granted}, not the configured Org {}; nothing is sent with it",
                        self.org_id
                    ),
                });
            }
        }
        let lifetime_ms = match (
            answer.creation_time_in_millis,
            answer.expiration_time_in_millis,
        ) {
            (Some(c), Some(e)) if e > c => (e - c) as u64,
            _ => self.validity_s * 1000,
        };
        let renew_in = Duration::from_millis((lifetime_ms as f64 * RENEW_AT_SHARE) as u64);
        *self.renew_at.lock() = Some(asked + renew_in);
        let bearer = HeaderValue::from_str(&format!("Bearer {}", answer.token)).map_err(|_| {
            VendorError::Decode {
                reason: "sign-in answer carries an unusable token".into(),
            }
        })?;
        Ok(vec![
            (AUTHORIZATION, bearer),
            (ACCEPT, HeaderValue::from_static("application/json")),
        ])
    }

    fn renew_at(&self) -> Option<Instant> {
        *self.renew_at.lock()
    }

    /// A duplicate custom object id is answered with HTTP 500 and code 14009 [B.7]: that is
    /// ThoughtSpot's answer to read, not a failing vendor.
    fn is_vendor_failure(&self, status: u16, body: &[u8]) -> bool {
        status >= 500
            && wire::TsError::parse(body).and_then(|e| e.code)
                != Some(wire::code::DUPLICATE_OBJECT_ID)
    }
}

/// ThoughtSpot allows 100 requests per second per client IP with a burst of 10, then 429
/// [B.7]: the bridge stays just under it (and slows down further on a 429).
pub fn client_settings() -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_secs(30),
        max_attempts: 6,
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(8),
        rate_per_sec: 90.0,
        burst: 10,
        max_concurrency: 16,
        breaker_threshold: 20,
        breaker_cooldown: Duration::from_secs(10),
        ..ClientSettings::default()
    }
}

/// The rate budget of one ThoughtSpot cluster. Its limit is per client IP for the whole
/// cluster, across Orgs [B.7], so every tenant of this process on one cluster (one per Org, as
/// the README advises) draws on one budget rather than each sending 90 requests/s.
fn cluster_budget(base: &Url, settings: &ClientSettings) -> Arc<RateBudget> {
    static BUDGETS: std::sync::LazyLock<Mutex<HashMap<String, Weak<RateBudget>>>> =
        std::sync::LazyLock::new(Default::default);
    let key = base.origin().ascii_serialization();
    let mut budgets = BUDGETS.lock();
    if let Some(b) = budgets.get(&key).and_then(Weak::upgrade) {
        return b;
    }
    budgets.retain(|_, b| b.strong_count() > 0);
    let b = Arc::new(RateBudget::for_settings(settings));
    budgets.insert(key, Arc::downgrade(&b));
    b
}

/// A ThoughtSpot tenant's vendor settings.
struct Cluster<'a> {
    base_url: &'a Url,
    username: &'a str,
    auth: &'a ThoughtspotAuth,
    org_id: i64,
    token_validity_s: u64,
    orgs: Option<&'a ThoughtspotOrgGroups>,
    account_type: Option<ThoughtspotAccountType>,
}

fn cluster_of(tenant: &TenantConfig) -> Option<Cluster<'_>> {
    match &tenant.vendor {
        VendorConfig::Thoughtspot {
            base_url,
            username,
            auth,
            org_id,
            token_validity_s,
            orgs,
            account_type,
        } => Some(Cluster {
            base_url,
            username,
            auth,
            org_id: *org_id,
            token_validity_s: *token_validity_s,
            orgs: orgs.as_ref(),
            account_type: *account_type,
        }),
        _ => None,
    }
}

fn adapter_for(
    tenant: &TenantConfig,
    c: &Cluster<'_>,
    settings: ClientSettings,
) -> Result<(VendorClient, ThoughtspotAdapter), String> {
    let sign_in = ThoughtspotSignIn::new(c.username, c.auth.clone(), c.org_id, c.token_validity_s);
    let budget = cluster_budget(c.base_url, &settings);
    let client = VendorClient::with_budget(c.base_url.clone(), settings, Arc::new(sign_in), budget)
        .map_err(|e| e.to_string())?;
    let adapter = ThoughtspotAdapter::new(
        client.clone(),
        c.org_id,
        c.orgs.cloned(),
        rule_role_names(&tenant.roles),
        tenant.attributes.keys().cloned().collect(),
    )
    .with_account_type(c.account_type);
    Ok((client, adapter))
}

fn sign_in_problem(tenant_index: usize, c: &Cluster<'_>, reason: &str) -> Problem {
    let key = match c.auth {
        ThoughtspotAuth::Password(_) => "password",
        ThoughtspotAuth::SecretKey(_) => "secret_key",
    };
    Problem {
        key_path: format!("tenants[{tenant_index}].vendor.{key}"),
        message: format!(
            "ThoughtSpot refused the sign-in ({reason}); check username, {key} and org_id {} (the user must belong to that Org, and hold ADMINISTRATION or USER_ADMINISTRATION and GROUP_ADMINISTRATION there)",
            c.org_id
        ),
    }
}

pub fn open(
    store: &Store,
    tenant: &TenantConfig,
    tenant_index: usize,
    role_changes: Option<prometheus::IntCounter>,
) -> Result<Arc<Engine>, String> {
    let c = cluster_of(tenant).ok_or("not a ThoughtSpot tenant")?;
    let (client, adapter) = adapter_for(tenant, &c, client_settings())?;
    super::open_engine(
        store,
        tenant,
        tenant_index,
        "thoughtspot",
        Arc::new(adapter),
        client,
        role_changes,
    )
}

/// Problems a ThoughtSpot tenant has whatever the cluster says: rules naming the built-in groups.
pub fn check_offline(config: &crate::config::Config) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, t) in config.tenants.iter().enumerate() {
        if !matches!(t.vendor, VendorConfig::Thoughtspot { .. }) {
            continue;
        }
        for (k, rule) in t.roles.rules.iter().enumerate() {
            if wire::is_builtin_group(&rule.role) {
                out.push(Problem {
                    key_path: format!("tenants[{i}].roles.rules[{k}].role"),
                    message: format!(
                        "\"{}\" is a ThoughtSpot built-in group the bridge never changes; name a group or an RBAC role",
                        rule.role
                    ),
                });
            }
        }
        if let Some(d) = t
            .roles
            .default
            .as_deref()
            .filter(|d| wire::is_builtin_group(d))
        {
            out.push(Problem {
                key_path: format!("tenants[{i}].roles.default"),
                message: format!(
                    "\"{d}\" is a ThoughtSpot built-in group the bridge never changes; name a group or an RBAC role"
                ),
            });
        }
    }
    out
}

/// What `--online` and the start-up check establish: the sign-in (which proves the Org), then
/// every variable, role and rule group the config names. `creates` lists the role groups the
/// bridge will create at start.
async fn verify(
    tenant: &TenantConfig,
    tenant_index: usize,
    c: &Cluster<'_>,
    settings: ClientSettings,
    rule_groups: bool,
) -> Result<Vec<Problem>, Vec<Problem>> {
    let base_problem = |message: String| Problem {
        key_path: format!("tenants[{tenant_index}].vendor.base_url"),
        message,
    };
    let (client, adapter) = adapter_for(tenant, c, settings).map_err(|m| vec![base_problem(m)])?;
    match client.ensure_signed_in().await {
        Ok(()) => {}
        Err(VendorError::Auth { reason }) => {
            return Err(vec![sign_in_problem(tenant_index, c, &reason)])
        }
        Err(e) => return Ok(vec![base_problem(format!("cannot reach ThoughtSpot: {e}"))]),
    }
    let mut problems = Vec::new();
    // The session's own Org, said by ThoughtSpot: the token's scope may leave it out.
    match adapter.org_name().await {
        Ok(_) => {}
        Err(VendorError::Auth { reason }) => {
            return Err(vec![sign_in_problem(tenant_index, c, &reason)])
        }
        Err(e) => {
            return Ok(vec![Problem {
                key_path: format!("tenants[{tenant_index}].vendor.org_id"),
                message: format!("cannot read the session's Org from ThoughtSpot: {e}"),
            }])
        }
    }
    match adapter.missing_variables().await {
        Ok(missing) => {
            for (name, why) in missing {
                problems.push(Problem {
                    key_path: format!("tenants[{tenant_index}].attributes.{name}"),
                    message: why,
                });
            }
        }
        Err(e) => problems.push(Problem {
            key_path: format!("tenants[{tenant_index}].attributes"),
            message: format!("cannot read ThoughtSpot's formula variables: {e}"),
        }),
    }
    match adapter.resolve_roles(false).await {
        Ok(catalog) => {
            if let Err(p) =
                crate::engine::role_table::RoleTable::build(tenant_index, &tenant.roles, catalog)
            {
                problems.extend(p);
            }
        }
        Err(e) => problems.push(Problem {
            key_path: format!("tenants[{tenant_index}].roles"),
            message: format!("cannot read ThoughtSpot's groups and roles: {e}"),
        }),
    }
    if let Some(orgs) = c.orgs {
        if let Err(e) = adapter.org_names().await {
            problems.push(Problem {
                key_path: format!("tenants[{tenant_index}].vendor.org_group_pattern"),
                message: format!(
                    "cannot read ThoughtSpot's Orgs for groups named `{}` (needs a cluster administrator): {e}",
                    orgs.pattern
                ),
            });
        }
    }
    if rule_groups {
        match adapter.group_names().await {
            Ok(names) => {
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                problems.extend(unknown_rule_groups(tenant_index, &tenant.roles, &refs));
            }
            Err(e) => problems.push(Problem {
                key_path: format!("tenants[{tenant_index}].roles"),
                message: format!("cannot read ThoughtSpot groups: {e}"),
            }),
        }
    }
    Ok(problems)
}

/// The start-up check: a refused sign-in (a wrong Org included), a mapped variable that does
/// not exist, or a rule naming neither a group nor a role stops the tenant. An unreachable
/// cluster does not: the engine resolves the roles when it answers.
pub async fn preflight(
    tenant: &TenantConfig,
    tenant_index: usize,
) -> Result<Option<crate::engine::role_table::RoleTable>, Vec<Problem>> {
    let Some(c) = cluster_of(tenant) else {
        return Ok(None);
    };
    let settings = ClientSettings {
        timeout: Duration::from_secs(10),
        max_attempts: 3,
        ..client_settings()
    };
    let outcome = verify(tenant, tenant_index, &c, settings, false).await;
    super::settle_preflight(outcome)
}

pub async fn check_online(tenant: &TenantConfig, tenant_index: usize) -> Vec<Problem> {
    let Some(c) = cluster_of(tenant) else {
        return Vec::new();
    };
    let settings = ClientSettings {
        max_attempts: 2,
        ..client_settings()
    };
    match verify(tenant, tenant_index, &c, settings, true).await {
        Ok(p) | Err(p) => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_on_one_cluster_share_one_rate_budget() {
        let url = |s: &str| Url::parse(s).unwrap();
        let settings = client_settings();
        let a = cluster_budget(&url("https://acme.thoughtspot.cloud/"), &settings);
        let b = cluster_budget(&url("https://acme.thoughtspot.cloud/prefix/"), &settings);
        let other = cluster_budget(&url("https://other.thoughtspot.cloud/"), &settings);
        assert!(Arc::ptr_eq(&a, &b), "one cluster, one budget");
        assert!(!Arc::ptr_eq(&a, &other), "another cluster has its own");
        drop((a, b));
        let again = cluster_budget(&url("https://acme.thoughtspot.cloud/"), &settings);
        assert_eq!(
            Arc::strong_count(&again),
            1,
            "a budget nobody holds is not kept"
        );
    }
}
