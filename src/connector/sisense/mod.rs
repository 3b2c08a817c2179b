//! The Sisense connector: two adapters on the provisioning engine (`crate::engine`), wire
//! code only.
//!
//! - `mode = "rest"` ([`rest::SisenseRest`]): users, groups, membership (on the user: its full
//!   `groups` list) and the role (`roleId`) over the REST API, v1 or the legacy v0.9 paths.
//! - `mode = "scim"` ([`scim_mode::SisenseScim`]): users, groups and membership (on the group)
//!   over Sisense's own SCIM endpoint; the role — which Sisense's SCIM never sets — over REST.
//!
//! Both share one rate budget: one Sisense instance is sent at most the configured rate,
//! whichever API a call goes to. Roles are resolved by name from `GET /api/roles` (internal and
//! UI names both accepted; never an id from the config).

mod native;
pub mod rest;
pub mod scim_mode;
pub mod wire;

use super::http::{Authenticator, ClientSettings, VendorClient, VendorError};
use super::roles::unknown_rule_groups;
use crate::config::{Problem, SisenseMode, TenantConfig, VendorConfig};
use crate::engine::adapter::VendorAdapter;
use crate::engine::role_table::RoleTable;
use crate::engine::Engine;
use crate::store::Store;
use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use url::Url;
use wire::Paths;

/// Signs in with the form-encoded login (B.1) and sends `Authorization: Bearer`.
struct SisenseAuth {
    username: String,
    password: crate::config::Secret,
}

#[derive(Deserialize)]
struct LoginAnswer {
    access_token: String,
}

#[async_trait]
impl Authenticator for SisenseAuth {
    async fn sign_in(
        &self,
        http: &reqwest::Client,
        base: &Url,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError> {
        let url = base.join(Paths::LOGIN).map_err(|e| VendorError::Auth {
            reason: format!("bad login URL: {e}"),
        })?;
        let resp = http
            .post(url)
            .form(&[
                ("username", self.username.as_str()),
                ("password", self.password.expose()),
            ])
            .send()
            .await
            .map_err(|e| VendorError::from_transport(&e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(VendorError::sign_in_refused(status, resp.headers()));
        }
        // A login answer is a token: a larger body is a broken or hostile vendor.
        let body = super::http::read_body_limited(resp, 1 << 20).await?;
        let answer: LoginAnswer =
            serde_json::from_slice(&body).map_err(|e| VendorError::Decode {
                reason: format!("login answer: {e}"),
            })?;
        let value =
            HeaderValue::from_str(&format!("Bearer {}", answer.access_token)).map_err(|_| {
                VendorError::Decode {
                    reason: "login answer carries an unusable token".into(),
                }
            })?;
        Ok(vec![(AUTHORIZATION, value)])
    }
}

/// The client settings for Sisense, which publishes no rate limit: bounded by concurrency, with
/// a generous token bucket, and the shared client's retries for 429/5xx.
pub fn client_settings() -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_secs(30),
        max_attempts: 6,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
        rate_per_sec: 2000.0,
        burst: 200,
        max_concurrency: 24,
        breaker_threshold: 20,
        breaker_cooldown: Duration::from_secs(10),
        ..ClientSettings::default()
    }
}

/// Opens the engine of one Sisense tenant on the adapter its `mode` names (nothing is sent
/// yet). `role_changes` is the tenant's `/metrics` counter of role changes.
pub fn open(
    store: &Store,
    tenant: &TenantConfig,
    tenant_index: usize,
    role_changes: Option<prometheus::IntCounter>,
) -> Result<Arc<Engine>, String> {
    let VendorConfig::Sisense {
        base_url,
        username,
        password,
        api_version,
        mode,
        scim_token,
        deprovision,
    } = &tenant.vendor
    else {
        return Err("not a Sisense tenant".into());
    };
    let client = VendorClient::new(
        base_url.clone(),
        client_settings(),
        Arc::new(SisenseAuth {
            username: username.clone(),
            password: password.clone(),
        }),
    )
    .map_err(|e| e.to_string())?;
    let rest = rest::SisenseRest::new(
        client.clone(),
        Paths {
            version: *api_version,
        },
        *deprovision,
    );
    let adapter: Arc<dyn VendorAdapter> = match (mode, scim_token) {
        (SisenseMode::Scim, Some(token)) => {
            // One Sisense, one budget: the SCIM endpoint's calls draw on the REST client's.
            let native = native::NativeScim {
                client: VendorClient::with_budget(
                    base_url.clone(),
                    client_settings(),
                    Arc::new(native::StaticBearer(token.clone())),
                    client.budget(),
                )
                .map_err(|e| e.to_string())?,
            };
            Arc::new(scim_mode::SisenseScim::new(rest, native))
        }
        (SisenseMode::Scim, None) => {
            return Err(format!(
                "tenants[{tenant_index}].vendor.scim_token: required with mode = \"scim\""
            ))
        }
        (SisenseMode::Rest, _) => Arc::new(rest),
    };
    super::open_engine(
        store,
        tenant,
        tenant_index,
        "sisense",
        adapter,
        client,
        role_changes,
    )
}

/// Start-up check of a Sisense tenant: signs in and resolves the role rules. `Ok(Some)` resolved; `Ok(None)` the vendor cannot be
/// reached now (the connector resolves later and answers 503 meanwhile); `Err` the problems,
/// each with its key path — the tenant must not start with rules that would assign a wrong role.
pub async fn preflight(
    tenant: &TenantConfig,
    tenant_index: usize,
) -> Result<Option<RoleTable>, Vec<Problem>> {
    let VendorConfig::Sisense {
        base_url,
        username,
        password,
        scim_token,
        ..
    } = &tenant.vendor
    else {
        return Ok(None);
    };
    let scim_token = scim_token.clone();
    let settings = ClientSettings {
        timeout: Duration::from_secs(10),
        max_attempts: 3,
        ..client_settings()
    };
    let auth = Arc::new(SisenseAuth {
        username: username.clone(),
        password: password.clone(),
    });
    let rules = tenant.roles.clone();
    let base = base_url.clone();
    let outcome = async move {
        let client = VendorClient::new(base, settings, auth).map_err(|e| e.to_string())?;
        client.ensure_signed_in().await.map_err(|e| match e {
            VendorError::Auth { reason } => format!("auth:{reason}"),
            other => other.to_string(),
        })?;
        let roles = rest::fetch_roles(&client)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(token) = scim_token {
            match probe_native(client.base_url().clone(), settings_for_probe(), token).await {
                Ok(()) => {}
                Err((true, problem)) => return Err(format!("scim:{problem}")),
                // Busy or failing now: requests get 503s until it answers.
                Err((false, reason)) => {
                    tracing::warn!(%reason, "Sisense SCIM endpoint not checked at start")
                }
            }
        }
        Ok::<_, String>(roles)
    }
    .await;
    match outcome {
        Ok(roles) => RoleTable::build(tenant_index, &rules, roles).map(Some),
        Err(reason) if reason.starts_with("auth:") => Err(vec![Problem {
            key_path: format!("tenants[{tenant_index}].vendor.username"),
            message: format!(
                "Sisense refused the sign-in ({}); check username and password",
                reason.trim_start_matches("auth:")
            ),
        }]),
        Err(reason) if reason.starts_with("scim:") => Err(vec![Problem {
            key_path: format!("tenants[{tenant_index}].vendor.scim_token"),
            message: reason.trim_start_matches("scim:").to_string(),
        }]),
        Err(reason) => {
            tracing::warn!(tenant = %tenant.id, %reason, "Sisense not reachable at start; roles resolved when it is");
            Ok(None)
        }
    }
}

fn settings_for_probe() -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_secs(10),
        max_attempts: 2,
        ..client_settings()
    }
}

/// `mode = "scim"`: whether Sisense's SCIM endpoint takes the token. `Err((true, _))` needs
/// the operator (a refused token, no endpoint); `Err((false, _))` may pass (down, throttled).
/// The message says what to fix, never the token.
async fn probe_native(
    base: Url,
    settings: ClientSettings,
    token: crate::config::Secret,
) -> Result<(), (bool, String)> {
    let client = VendorClient::new(base, settings, Arc::new(native::StaticBearer(token)))
        .map_err(|e| (true, e.to_string()))?;
    match (native::NativeScim { client }).probe().await {
        Ok(()) => Ok(()),
        Err(VendorError::Auth { .. }) => Err((
            true,
            "Sisense's SCIM endpoint refused the token (generate one in Sisense Admin > Security)"
                .into(),
        )),
        Err(VendorError::Rejected {
            status: 404 | 405, ..
        }) => Err((
            true,
            "Sisense has no SCIM endpoint at api/scim/v2 (Enterprise plan, with SSO and SCIM enabled)"
                .into(),
        )),
        Err(e) => Err((false, format!("cannot reach Sisense's SCIM endpoint: {e}"))),
    }
}

/// `config check --online` for a Sisense tenant: sign-in, and every role and group named in the
/// rules (a missing group is an error here, a warning at start).
pub async fn check_online(tenant: &TenantConfig, tenant_index: usize) -> Vec<Problem> {
    let VendorConfig::Sisense {
        base_url,
        username,
        password,
        api_version,
        scim_token,
        ..
    } = &tenant.vendor
    else {
        return Vec::new();
    };
    let client = match VendorClient::new(
        base_url.clone(),
        ClientSettings {
            max_attempts: 2,
            ..client_settings()
        },
        Arc::new(SisenseAuth {
            username: username.clone(),
            password: password.clone(),
        }),
    ) {
        Ok(c) => c,
        Err(e) => {
            return vec![Problem {
                key_path: format!("tenants[{tenant_index}].vendor.base_url"),
                message: e.to_string(),
            }]
        }
    };
    let mut problems = Vec::new();
    if let Err(e) = client.ensure_signed_in().await {
        return vec![Problem {
            key_path: format!("tenants[{tenant_index}].vendor"),
            message: format!("cannot sign in to Sisense: {e}"),
        }];
    }
    match rest::fetch_roles(&client).await {
        Ok(roles) => {
            if let Err(p) = RoleTable::build(tenant_index, &tenant.roles, roles) {
                problems.extend(p);
            }
        }
        Err(e) => problems.push(Problem {
            key_path: format!("tenants[{tenant_index}].roles"),
            message: format!("cannot read Sisense roles: {e}"),
        }),
    }
    let paths = Paths {
        version: *api_version,
    };
    let mut names = Vec::new();
    match rest::fetch_all::<wire::Group>(&client, paths.groups()).await {
        Ok(groups) => names.extend(groups.into_iter().map(|g| g.name)),
        Err(e) => problems.push(Problem {
            key_path: format!("tenants[{tenant_index}].roles"),
            message: format!("cannot read Sisense groups: {e}"),
        }),
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    problems.extend(unknown_rule_groups(tenant_index, &tenant.roles, &refs));
    if let Some(token) = scim_token {
        if let Err((_, message)) =
            probe_native(base_url.clone(), settings_for_probe(), token.clone()).await
        {
            problems.push(Problem {
                key_path: format!("tenants[{tenant_index}].vendor.scim_token"),
                message,
            });
        }
    }
    problems
}
