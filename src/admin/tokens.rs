//! Revoking a tenant's JWTs (issue 15): `POST /admin/api/tenants/{t}/tokens/revoke` and
//! `GET /admin/api/tenants/{t}/tokens/revoked` on the admin listener, and the CLI's
//! `scim-bridge token revoke`, which goes through that endpoint when a bridge holds the store
//! and opens the store itself when none does.
//!
//! Either way one function writes the revocation
//! ([`RevokedTokens::revoke_audited`](crate::store::revoked::RevokedTokens::revoke_audited)):
//! the `jti` on the tenant's deny list and a `token_revoked` entry (actor `operator`) in its
//! hash-chained audit log, in one sled transaction. Bearer validation reads the deny list on
//! every request, so the token is refused from the very next request on, on a running bridge
//! too. Neither the answer, the log line nor the audit entry holds any token material: a `jti`
//! is the token's id, not a credential.
// A handler's `Err` is the HTTP answer itself (a 4xx to send), not an error to propagate:
// boxing it would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

use super::api::{off_thread, query, NoQuery};
use super::client::AdminClient;
use super::{bad_request, not_found, AdminState};
use crate::config::Config;
use crate::server::{AppState, Tenant};
use crate::store::audit::AuditLog;
use crate::store::revoked::{is_locked, valid_jti, Revocation, Revoked, RevokedTokens};
use crate::store::{Store, StoreError};
use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// The longest `reason` kept, in characters: a ticket reference or a sentence, not a document.
pub const MAX_REASON_CHARS: usize = 500;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/admin/api/tenants/{tenant}/tokens/revoke",
        web::post().to(revoke),
    )
    .route(
        "/admin/api/tenants/{tenant}/tokens/revoked",
        web::get().to(revoked),
    );
}

/// The body of a revocation. Strict: an unknown key is a 400, so a misspelt `reason` is not
/// silently dropped from the record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    jti: String,
    #[serde(default)]
    reason: Option<String>,
}

/// A `jti` as `revoke` takes it (trimmed), or what is wrong with it.
pub fn check_jti(jti: &str) -> Result<&str, String> {
    let jti = jti.trim();
    if valid_jti(jti) {
        Ok(jti)
    } else {
        Err(format!(
            "jti: expected the token's `jti` claim (1 to {} printable ASCII characters, a uuid for tokens from `token issue`)",
            crate::store::revoked::MAX_JTI_LEN
        ))
    }
}

/// A reason as kept (trimmed; an empty one is none), or what is wrong with it. One line of
/// text: it is shown in the audit log, the console and `token revoke`'s output.
pub fn check_reason(reason: Option<&str>) -> Result<Option<String>, String> {
    let Some(r) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if r.chars().count() > MAX_REASON_CHARS {
        return Err(format!("reason: at most {MAX_REASON_CHARS} characters"));
    }
    if r.chars().any(char::is_control) {
        return Err("reason: one line of text, without control characters".into());
    }
    Ok(Some(r.to_string()))
}

/// The message for a tenant without a `jwt_secret` (the API's 409 and the CLI's error).
fn no_jwt(tenant: &str) -> String {
    format!("tenant {tenant:?} has no jwt_secret, so it accepts no JWT: there is nothing to revoke")
}

/// The configured tenant `id` (404 when there is none).
fn tenant_of(app: &AppState, id: &str) -> Result<Arc<Tenant>, HttpResponse> {
    app.tenant(id).ok_or_else(|| not_found("no such tenant"))
}

/// Writes a revocation and its audit entry (blocking: a sled transaction and a flush).
fn write_revocation(
    store: &Store,
    tenant: &str,
    jti: &str,
    revoked_by: &str,
    reason: Option<&str>,
) -> Result<Revoked, StoreError> {
    let list = RevokedTokens::open(store, tenant)?;
    let audit = AuditLog::open(store, tenant)?;
    list.revoke_audited(&audit, jti, revoked_by, reason)
}

/// `POST /admin/api/tenants/{t}/tokens/revoke` `{"jti": "…", "reason": "…"}`: 201 with the
/// new record, or 200 with the first one when the `jti` was revoked already.
async fn revoke(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
    body: web::Bytes,
) -> HttpResponse {
    let who = or_answer!(admin.authorize_action(&req, None));
    or_answer!(query::<NoQuery>(&req));
    let tenant_id = path.into_inner();
    let tenant = or_answer!(tenant_of(&app, &tenant_id));
    if !tenant.auth.accepts_jwt() {
        return HttpResponse::Conflict().json(json!({ "error": no_jwt(&tenant_id) }));
    }
    let b: RevokeBody = or_answer!(serde_json::from_slice(&body).map_err(|e| bad_request(
        format!("expected a JSON body {{\"jti\": \"…\", \"reason\": \"…\"}}: {e}")
    )));
    let jti = or_answer!(check_jti(&b.jti).map_err(bad_request)).to_string();
    let reason = or_answer!(check_reason(b.reason.as_deref()).map_err(bad_request));
    let revoked_by = match who {
        super::auth::Principal::Bearer => "operator (admin API)",
        super::auth::Principal::Session { .. } => "operator (admin console)",
    };
    let store = app.store.clone();
    let (t, j) = (tenant_id.clone(), jti.clone());
    let done = or_answer!(
        off_thread(move || write_revocation(&store, &t, &j, revoked_by, reason.as_deref())).await
    );
    match done {
        Revoked::Added(r) => {
            tracing::info!(tenant = %tenant_id, jti = %r.jti, revoked_by = %r.revoked_by, "token revoked");
            HttpResponse::Created()
                .json(json!({"tenant": tenant_id, "already": false, "revocation": r}))
        }
        Revoked::Already(r) => {
            HttpResponse::Ok().json(json!({"tenant": tenant_id, "already": true, "revocation": r}))
        }
    }
}

/// `GET /admin/api/tenants/{t}/tokens/revoked`: every revocation of the tenant, by `jti`.
async fn revoked(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    or_answer!(admin.authorize(&req));
    or_answer!(query::<NoQuery>(&req));
    let tenant_id = path.into_inner();
    let tenant = or_answer!(tenant_of(&app, &tenant_id));
    let jwt = tenant.auth.accepts_jwt();
    let store = app.store.clone();
    let t = tenant_id.clone();
    let list: Vec<Revocation> =
        or_answer!(off_thread(move || RevokedTokens::open(&store, &t)?.list()).await);
    HttpResponse::Ok().json(json!({"tenant": tenant_id, "jwt": jwt, "revoked": list}))
}

// ---------------------------------------------------------------------------------------------
// The CLI: `scim-bridge token revoke`
// ---------------------------------------------------------------------------------------------

/// `scim-bridge token revoke`.
#[derive(Debug, Clone, clap::Args)]
pub struct RevokeArgs {
    /// The bridge's config: the tenant, its data_dir and its `[admin] listen`.
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub tenant: String,
    /// The token's `jti` claim (printed by `token issue`).
    #[arg(long)]
    pub jti: String,
    /// Why, kept in the revocation record and the audit log.
    #[arg(long)]
    pub reason: Option<String>,
    /// The running bridge's admin API. Default: the config's `[admin] listen`. Given, the
    /// revocation always goes through it (the bridge may run elsewhere).
    #[arg(long)]
    pub url: Option<String>,
    /// An admin token (`[admin] tokens`), to revoke through a running bridge.
    #[arg(long, env = "SCIM_BRIDGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// The admin API's URL of `cfg`: its `[admin] listen`, an unspecified address (`0.0.0.0`)
/// reached on the loopback; `https` with `[admin] tls`. The CLI commands share it. With TLS the
/// certificate is usually for a DNS name, not this address: such setups pass `--url`.
pub(crate) fn admin_url(cfg: &Config) -> String {
    let mut addr = cfg.admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if cfg.admin.tls && cfg.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}")
}

/// `token revoke`: through the running bridge's admin API when one holds the store (or
/// `--url` is given), else in the store directly; audited either way.
pub async fn revoke_command(args: &RevokeArgs) -> Result<()> {
    let cfg = Config::load(&args.config)
        .map_err(|e| anyhow::anyhow!("{}:\n{e}", args.config.display()))?;
    let t = cfg
        .tenant(&args.tenant)
        .with_context(|| format!("no tenant {:?} in {}", args.tenant, args.config.display()))?;
    if t.jwt_secret.is_none() {
        bail!("{}", no_jwt(&args.tenant));
    }
    let jti = check_jti(&args.jti).map_err(|e| anyhow::anyhow!("--{e}"))?;
    let reason = check_reason(args.reason.as_deref()).map_err(|e| anyhow::anyhow!("--{e}"))?;
    if let Some(url) = &args.url {
        return through_api(url, args, jti, reason.as_deref(), None).await;
    }
    let store = match Store::open(&cfg.data_dir) {
        Ok(s) => s,
        Err(e) if is_locked(&e) => {
            let url = admin_url(&cfg);
            let why = format!(
                "the store in {} is in use by a running bridge",
                cfg.data_dir.display()
            );
            return through_api(&url, args, jti, reason.as_deref(), Some(&why)).await;
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))
        }
    };
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown user".into());
    let by = format!("{user} (scim-bridge token revoke)");
    let tenant = t.id.as_str().to_string();
    let done = write_revocation(&store, &tenant, jti, &by, reason.as_deref())
        .with_context(|| format!("writing the revocation in {}", cfg.data_dir.display()))?;
    drop(store);
    print_outcome(&tenant, &done);
    Ok(())
}

async fn through_api(
    url: &str,
    args: &RevokeArgs,
    jti: &str,
    reason: Option<&str>,
    why: Option<&str>,
) -> Result<()> {
    let token = args.admin_token.clone().unwrap_or_default();
    if token.is_empty() {
        match why {
            Some(why) => bail!(
                "{why}: revoking through its admin API at {url} needs an admin token: pass --admin-token or set SCIM_BRIDGE_ADMIN_TOKEN"
            ),
            None => bail!("no admin token: pass --admin-token or set SCIM_BRIDGE_ADMIN_TOKEN"),
        }
    }
    let client = AdminClient::new(url, &token)?;
    let path = format!(
        "/admin/api/tenants/{}/tokens/revoke",
        percent_encoding::utf8_percent_encode(&args.tenant, percent_encoding::NON_ALPHANUMERIC)
    );
    let mut body = json!({ "jti": jti });
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    let v = client.post_json(&path, &body).await?;
    let r: Revocation = serde_json::from_value(v["revocation"].clone())
        .context("reading the admin API's answer")?;
    let done = if v["already"].as_bool() == Some(true) {
        Revoked::Already(r)
    } else {
        Revoked::Added(r)
    };
    print_outcome(&args.tenant, &done);
    eprintln!("(through the running bridge's admin API at {url}: in effect at once)");
    Ok(())
}

fn print_outcome(tenant: &str, done: &Revoked) {
    match done {
        Revoked::Added(r) => println!(
            "revoked jti {} of tenant {tenant} at {} by {} (recorded in the audit log)",
            r.jti, r.revoked_at, r.revoked_by
        ),
        Revoked::Already(r) => println!(
            "jti {} of tenant {tenant} was already revoked at {} by {}",
            r.jti, r.revoked_at, r.revoked_by
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jti_and_reason_checks() {
        assert_eq!(check_jti("  abc-1 "), Ok("abc-1"));
        assert!(check_jti("").is_err());
        assert!(check_jti("a b").is_err());
        assert_eq!(check_reason(None), Ok(None));
        assert_eq!(check_reason(Some("  ")), Ok(None));
        assert_eq!(
            check_reason(Some(" leaked in a ticket ")),
            Ok(Some("leaked in a ticket".into()))
        );
        assert!(check_reason(Some("two\nlines")).is_err());
        assert!(check_reason(Some(&"x".repeat(MAX_REASON_CHARS + 1))).is_err());
    }

    #[test]
    fn admin_url_reaches_an_unspecified_listen_address_on_the_loopback() {
        let mut cfg: Config = Config::from_toml_str(
            "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"0.0.0.0:9191\"\n\
             [[tenants]]\nid = \"t\"\njwt_secret = \"k-0123456789abcdef-k\"\n[tenants.vendor]\nkind = \"local\"\n",
            &|_| None,
        )
        .unwrap();
        assert_eq!(admin_url(&cfg), "http://127.0.0.1:9191");
        cfg.admin.listen = "[::]:9192".parse().unwrap();
        assert_eq!(admin_url(&cfg), "http://[::1]:9192");
    }
}
