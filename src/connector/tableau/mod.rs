//! The Tableau connector: one adapter on the provisioning engine (`crate::engine`), wire code
//! only. Tableau Server and Tableau Cloud, REST API 3.x, JSON form.
//!
//! - **Sign-in** ([`TableauSignIn`]): a personal access token, or a connected-app JWT (direct
//!   trust) minted here per sign-in [A.2]. One session per tenant, shared by every worker
//!   through the vendor client's single-flight sign-in: a second sign-in with the same PAT ends
//!   the first, so two bridges (or two tenants) sharing one PAT log each other out — use a
//!   connected app there. A 401 signs in again and retries once.
//! - **Site roles** come from the role rules; deactivation is `Unlicensed`; an IdP DELETE
//!   unlicenses or removes the user (`deprovision`), and a user who owns content stays
//!   `Unlicensed` (409003), reported in the audit log.
//! - **Groups** and their membership (kept on the group). "All Users" is never touched.
//!
//! Every reference to [A.n] is vendors-tableau-thoughtspot.md part A.

pub mod adapter;
pub mod wire;

use super::http::{post_sign_in, Authenticator, ClientSettings, VendorClient, VendorError};
use super::roles::unknown_rule_groups;
use crate::config::{
    Problem, TableauAuth, TableauAuthSetting, TableauDeprovision, TableauFlavor, TenantConfig,
    VendorConfig,
};
use crate::engine::adapter::VendorAdapter;
use crate::engine::role_table::RoleTable;
use crate::engine::Engine;
use crate::store::Store;
use async_trait::async_trait;
use parking_lot::Mutex;
use reqwest::header::{HeaderName, HeaderValue, ACCEPT};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// What a sign-in tells: the site's LUID, which every later path carries, and the signed-in
/// user (who may not change their own site role, 403009) [A.2].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSession {
    pub site_id: String,
    pub user_id: String,
}

/// The session of a tenant's client, filled by each sign-in and read by the adapter.
pub type SharedSession = Arc<Mutex<Option<SiteSession>>>;

/// The scopes a connected-app token needs: users and groups, read and write
/// (`groups:update` covers membership) [A.2, DOC-scopes].
const SCOPES: [&str; 8] = [
    "tableau:users:read",
    "tableau:users:create",
    "tableau:users:update",
    "tableau:users:delete",
    "tableau:groups:read",
    "tableau:groups:create",
    "tableau:groups:update",
    "tableau:groups:delete",
];

/// How long a connected-app JWT is valid: Tableau refuses more than 10 minutes [A.2]; it is
/// used once, at sign-in.
const JWT_LIFETIME_S: u64 = 300;

/// Signs in to one site and sends `X-Tableau-Auth` with JSON on every request.
pub struct TableauSignIn {
    site: String,
    version: String,
    auth: TableauAuth,
    session: SharedSession,
}

impl TableauSignIn {
    pub fn new(site: &str, version: &str, auth: TableauAuth) -> TableauSignIn {
        TableauSignIn {
            site: site.to_string(),
            version: version.to_string(),
            auth,
            session: Arc::new(Mutex::new(None)),
        }
    }

    /// The site and user of the current session, shared with the adapter.
    pub fn session(&self) -> SharedSession {
        self.session.clone()
    }

    fn credentials(&self) -> Result<serde_json::Value, VendorError> {
        let site = json!({ "contentUrl": self.site });
        Ok(match &self.auth {
            TableauAuth::Pat { name, secret } => json!({"credentials": {
                "personalAccessTokenName": name,
                "personalAccessTokenSecret": secret.expose(),
                "site": site,
            }}),
            TableauAuth::ConnectedApp {
                client_id,
                secret_id,
                secret_value,
                username,
            } => json!({"credentials": {
                "jwt": connected_app_jwt(client_id, secret_id, secret_value.expose(), username)?,
                "site": site,
            }}),
        })
    }
}

/// A connected-app JWT (direct trust) [A.2, CA-JWT]: HS256 with the secret value, `kid` = the
/// secret id, `iss` = the client id (in the claims; tableau-mcp leaves it out of the header
/// too), `sub` = the admin user, `aud` = "tableau", `exp` 5 minutes ahead, a unique `jti`, and the scopes.
pub fn connected_app_jwt(
    client_id: &str,
    secret_id: &str,
    secret_value: &str,
    username: &str,
) -> Result<String, VendorError> {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(secret_id.to_string());
    header.typ = Some("JWT".into());
    let claims = json!({
        "iss": client_id,
        "sub": username,
        "aud": "tableau",
        "exp": now + JWT_LIFETIME_S,
        // A few seconds back: Tableau's clock may lag ours (tableau-mcp does the same).
        "iat": now.saturating_sub(5),
        "jti": uuid::Uuid::new_v4().to_string(),
        "scp": SCOPES,
    });
    encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret_value.as_bytes()),
    )
    .map_err(|e| VendorError::Auth {
        reason: format!("cannot sign the connected-app JWT: {e}"),
    })
}

#[async_trait]
impl Authenticator for TableauSignIn {
    async fn sign_in(
        &self,
        http: &reqwest::Client,
        base: &Url,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError> {
        // Tableau's code tells bad credentials (401001) from a host without its pod (405000)
        // [A.2]; its code and summary never echo what was sent (the detail is left out all the
        // same).
        let body = post_sign_in(
            http,
            base,
            &wire::SitePaths::sign_in(&self.version),
            &self.credentials()?,
            |body| {
                wire::TableauError::parse(body).map(|e| format!("Tableau {} {}", e.code, e.summary))
            },
        )
        .await?;
        let answer: wire::SignInAnswer =
            serde_json::from_slice(&body).map_err(|e| VendorError::Decode {
                reason: format!("sign-in answer: {e}"),
            })?;
        let token =
            HeaderValue::from_str(&answer.credentials.token).map_err(|_| VendorError::Decode {
                reason: "sign-in answer carries an unusable token".into(),
            })?;
        *self.session.lock() = Some(SiteSession {
            site_id: answer.credentials.site.id,
            user_id: answer.credentials.user.id,
        });
        Ok(vec![
            (HeaderName::from_static("x-tableau-auth"), token),
            (ACCEPT, HeaderValue::from_static("application/json")),
        ])
    }
}

/// Tableau publishes no general rate limit; Cloud answers 429000 without `Retry-After` when it
/// throttles [A.7]. Moderate concurrency, and the shared client's adaptive rate and retries.
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

/// The pieces of a Tableau tenant's config.
struct Site<'a> {
    base_url: &'a Url,
    site: &'a str,
    api_version: &'a str,
    auth: &'a TableauAuth,
    deprovision: TableauDeprovision,
    flavor: TableauFlavor,
    auth_setting: Option<TableauAuthSetting>,
}

fn site_of(tenant: &TenantConfig) -> Option<Site<'_>> {
    match &tenant.vendor {
        VendorConfig::Tableau {
            base_url,
            site,
            api_version,
            auth,
            deprovision,
            flavor,
            auth_setting,
        } => Some(Site {
            base_url,
            site,
            api_version,
            auth,
            deprovision: *deprovision,
            flavor: *flavor,
            auth_setting: *auth_setting,
        }),
        _ => None,
    }
}

fn client_for(
    s: &Site<'_>,
    settings: ClientSettings,
) -> Result<(VendorClient, SharedSession), String> {
    let sign_in = TableauSignIn::new(s.site, s.api_version, s.auth.clone());
    let session = sign_in.session();
    let client = VendorClient::new(s.base_url.clone(), settings, Arc::new(sign_in))
        .map_err(|e| e.to_string())?;
    Ok((client, session))
}

/// The key path an operator fixes when Tableau refuses the sign-in.
fn auth_key(tenant_index: usize, auth: &TableauAuth) -> String {
    match auth {
        TableauAuth::Pat { .. } => format!("tenants[{tenant_index}].vendor.pat_secret"),
        TableauAuth::ConnectedApp { .. } => format!("tenants[{tenant_index}].vendor.client_id"),
    }
}

fn sign_in_problem(tenant_index: usize, s: &Site<'_>, reason: &str) -> Problem {
    let what = match s.auth {
        TableauAuth::Pat { .. } => "check pat_name, pat_secret (a PAT expires after 15 days unused) and site",
        TableauAuth::ConnectedApp { .. } => "check client_id, secret_id, secret_value, username (an administrator of the site) and site",
    };
    Problem {
        key_path: auth_key(tenant_index, s.auth),
        message: format!("Tableau refused the sign-in ({reason}); {what}"),
    }
}

/// Opens the engine of one Tableau tenant (nothing is sent yet). `role_changes` is the
/// tenant's `/metrics` counter of role changes.
pub fn open(
    store: &Store,
    tenant: &TenantConfig,
    tenant_index: usize,
    role_changes: Option<prometheus::IntCounter>,
) -> Result<Arc<Engine>, String> {
    let s = site_of(tenant).ok_or("not a Tableau tenant")?;
    let (client, session) = client_for(&s, client_settings())?;
    let adapter: Arc<dyn VendorAdapter> = Arc::new(
        adapter::TableauAdapter::new(
            client.clone(),
            session,
            s.api_version,
            s.deprovision,
            s.flavor,
        )
        .with_auth_setting(s.auth_setting),
    );
    super::open_engine(
        store,
        tenant,
        tenant_index,
        "tableau",
        adapter,
        client,
        role_changes,
    )
}

/// Start-up check of a Tableau tenant: signs in and resolves the role rules against Tableau's
/// site roles. `Ok(Some)` resolved; `Ok(None)` Tableau cannot be reached now (resolved later;
/// writes are queued meanwhile); `Err` the problems with their key paths.
pub async fn preflight(
    tenant: &TenantConfig,
    tenant_index: usize,
) -> Result<Option<RoleTable>, Vec<Problem>> {
    let Some(s) = site_of(tenant) else {
        return Ok(None);
    };
    let settings = ClientSettings {
        timeout: Duration::from_secs(10),
        max_attempts: 3,
        ..client_settings()
    };
    let (client, _) = client_for(&s, settings).map_err(|message| {
        vec![Problem {
            key_path: format!("tenants[{tenant_index}].vendor.base_url"),
            message,
        }]
    })?;
    match client.ensure_signed_in().await {
        Ok(()) => RoleTable::build(tenant_index, &tenant.roles, adapter::catalog()).map(Some),
        Err(VendorError::Auth { reason }) => Err(vec![sign_in_problem(tenant_index, &s, &reason)]),
        Err(e) => {
            tracing::warn!(tenant = %tenant.id, reason = %e, "Tableau not reachable at start; roles resolved when it is");
            // The site roles are Tableau's API, not read from it: the rules are checked now.
            RoleTable::build(tenant_index, &tenant.roles, adapter::catalog()).map(|_| None)
        }
    }
}

/// `config check` without `--online`: every Tableau tenant's rules name site roles Tableau has
/// (they are part of its API, so no sign-in is needed to know).
pub fn check_offline(config: &crate::config::Config) -> Vec<Problem> {
    config
        .tenants
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t.vendor, VendorConfig::Tableau { .. }))
        .filter_map(|(i, t)| RoleTable::build(i, &t.roles, adapter::catalog()).err())
        .flatten()
        .collect()
}

/// `config check --online` for a Tableau tenant: the sign-in, every site role the rules name,
/// and every group they name.
pub async fn check_online(tenant: &TenantConfig, tenant_index: usize) -> Vec<Problem> {
    let Some(s) = site_of(tenant) else {
        return Vec::new();
    };
    let (client, session) = match client_for(
        &s,
        ClientSettings {
            max_attempts: 2,
            ..client_settings()
        },
    ) {
        Ok(c) => c,
        Err(message) => {
            return vec![Problem {
                key_path: format!("tenants[{tenant_index}].vendor.base_url"),
                message,
            }]
        }
    };
    match client.ensure_signed_in().await {
        Ok(()) => {}
        Err(VendorError::Auth { reason }) => {
            return vec![sign_in_problem(tenant_index, &s, &reason)]
        }
        Err(e) => {
            return vec![Problem {
                key_path: format!("tenants[{tenant_index}].vendor.base_url"),
                message: format!("cannot reach Tableau: {e}"),
            }]
        }
    }
    let mut problems = Vec::new();
    if let Err(p) = RoleTable::build(tenant_index, &tenant.roles, adapter::catalog()) {
        problems.extend(p);
    }
    let adapter =
        adapter::TableauAdapter::new(client, session, s.api_version, s.deprovision, s.flavor);
    match adapter.group_names().await {
        Ok(names) => {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            problems.extend(unknown_rule_groups(tenant_index, &tenant.roles, &refs));
        }
        Err(e) => problems.push(Problem {
            key_path: format!("tenants[{tenant_index}].roles"),
            message: format!("cannot read Tableau groups: {e}"),
        }),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

    #[test]
    fn connected_app_jwt_carries_what_tableau_checks() {
        let jwt =
            connected_app_jwt("client-1", "secret-id-1", "the-secret-value", "admin@acme").unwrap();
        let header = decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.kid.as_deref(), Some("secret-id-1"));
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["tableau"]);
        v.set_issuer(&["client-1"]);
        let claims =
            decode::<serde_json::Value>(&jwt, &DecodingKey::from_secret(b"the-secret-value"), &v)
                .unwrap()
                .claims;
        assert_eq!(claims["sub"], "admin@acme");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let exp = claims["exp"].as_i64().unwrap();
        assert!(
            exp > now && exp - now <= 600,
            "exp at most 10 minutes ahead"
        );
        let scopes: Vec<&str> = claims["scp"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        for need in [
            "tableau:users:create",
            "tableau:groups:update",
            "tableau:users:delete",
        ] {
            assert!(scopes.contains(&need), "{need} in {scopes:?}");
        }
        // Another signature key fails: the secret value is what signs.
        assert!(
            decode::<serde_json::Value>(&jwt, &DecodingKey::from_secret(b"other"), &v).is_err()
        );
        // Every token is used once: a fresh jti each time.
        let again =
            connected_app_jwt("client-1", "secret-id-1", "the-secret-value", "admin@acme").unwrap();
        let jti = |t: &str| {
            decode::<serde_json::Value>(t, &DecodingKey::from_secret(b"the-secret-value"), &v)
                .unwrap()
                .claims["jti"]
                .clone()
        };
        assert_ne!(jti(&jwt), jti(&again));
    }
}
