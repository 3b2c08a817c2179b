//! Tableau REST API simulator (Tableau Server / Tableau Cloud, API 3.x): sign-in with a personal
//! access token, a connected-app JWT or a password; users with site roles and seat limits; groups
//! and their members. Everything here is written from `shared/reference/vendors-tableau-thoughtspot.md`
//! (part A, cited as [A.n]) and the recorded responses in `shared/reference/vendor-specs/tableau/`.
//!
//! Vendor switches (`--sim-switch KEY=VALUE`), for points the reference leaves UNVERIFIED or that
//! a test needs to turn:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `tableau.session_idle_min` | `240` | idle timeout of a session in minutes (Server 240, Cloud 120 [A.2]); `--token-ttl-s` wins |
//! | `tableau.seats` | unlimited | seat limits per licence class, e.g. `creator=2,explorer=1,viewer=1` [A.3] |
//! | `tableau.add_over_capacity` | `unlicensed` | Add User without a free seat: `unlicensed` (created as Unlicensed, Okta's docs) or `conflict` (409014) — UNVERIFIED |
//! | `tableau.scope_error_status` | `403` | HTTP status when a connected-app session lacks the `scp` scope of a method (`401` or `403`; code `<status>000`) — UNVERIFIED |
//! | `tableau.jwt_max_exp_s` | `600` | the most `exp` may lie in the future for a connected-app JWT [A.2] |
//! | `tableau.flavor` | `server` | `cloud`: Tableau Cloud rules — a site contentUrl is required, user names are emails, Update User changes only siteRole and email (fullName/password: 400000, UNVERIFIED code), the admin is SiteAdministratorCreator (so no impersonation, no mapAssetsTo), idle timeout 120 min [A.2–A.4] |
//!
//! Choices the reference leaves open, fixed here (no switch): a session used on another site's
//! LUID is 403/403000 with the message TSC issue 501 quotes; deleting or renaming "All Users" is
//! 403/403000; a non-administrator reading another user is 403/403133, other user/group calls
//! 403/403000; JWT failures are all 401/401001; Add User without `siteRole` is 400000; Update
//! User with a `name` (its body has none [A.4]) is 400000; removing
//! a non-member from a group is 404/404002; `--token-ttl-s` sets the *idle* timeout (a session in
//! use stays alive, as on Tableau). Routes: `GET /api/{v}/serverinfo`, `POST /api/{v}/auth/{signin,
//! signout,switchSite}`, and under `/api/{v}/sites/{site-luid}`: `GET|POST users`, `GET|PUT|DELETE
//! users/{id}`, `GET users/{id}/groups`, `GET|POST groups`, `PUT|DELETE groups/{id}`, `GET|POST
//! groups/{id}/users`, `PUT groups/{id}/users/remove`, `DELETE groups/{id}/users/{user-id}`.
//!
//! Seed: sites `default` (or `--site`) and `sandbox`, each with "All Users" and the admin
//! (ServerAdministrator, owns 3 content items, so removing the admin is 409003).
//!
//! Simulator controls (no auth, like `/__sim/stats`): `PUT /__sim/tableau/sites/{site-luid}/users/{user-luid}/content?count=N`
//! sets how many content items a user owns (a user who owns content cannot be removed: 409003).

mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use parking_lot::RwLock;
use serde_json::Value;

use super::ids::IdGen;
use super::{SimOptions, VendorSim};
use wire::{El, Format, ReqEl};

/// Default credentials (CONTRACT §1), overridable by flags.
pub const DEFAULT_SITE: &str = "default";
pub const DEFAULT_PAT_NAME: &str = "scim-bridge";
pub const DEFAULT_PAT_SECRET: &str = "simulator-pat-secret";
pub const DEFAULT_CLIENT_ID: &str = "sim-client";
pub const DEFAULT_SECRET_ID: &str = "sim-secret-id";
pub const DEFAULT_SECRET_VALUE: &str = "simulator-connected-app-secret";
pub const DEFAULT_ADMIN: &str = "admin@tableau.local";

const SEED_SALT: u64 = 0x7AB1_EA00;
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;
const REST_API_VERSION: &str = "3.24";
const PRODUCT_VERSION: &str = "2024.2.0";
const PRODUCT_BUILD: &str = "20242.24.0711.1636";

/// Site roles Add User accepts; anything else is 400013 [A.3].
const ADDABLE_ROLES: [&str; 7] = [
    "Creator",
    "Explorer",
    "ExplorerCanPublish",
    "SiteAdministratorCreator",
    "SiteAdministratorExplorer",
    "Unlicensed",
    "Viewer",
];
const AUTH_SETTINGS: [&str; 4] = ["ServerDefault", "SAML", "OpenID", "TableauIDWithMFA"];

/// The licence a site role consumes [A.3]: Creator, Explorer or Viewer seats; Unlicensed uses none.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seat {
    Creator,
    Explorer,
    Viewer,
}

fn seat_of(role: &str) -> Option<Seat> {
    match role {
        "Creator"
        | "SiteAdministratorCreator"
        | "ServerAdministrator"
        | "SiteAdministrator"
        | "Publisher" => Some(Seat::Creator),
        "Explorer" | "ExplorerCanPublish" | "SiteAdministratorExplorer" | "Interactor" => {
            Some(Seat::Explorer)
        }
        "Viewer" | "ViewerWithPublish" | "ReadOnly" => Some(Seat::Viewer),
        _ => None,
    }
}

/// Privilege order, low to high [A.3, MCP types/user.ts]; legacy roles rank with their
/// successors.
fn role_rank(role: &str) -> u8 {
    match role {
        "Viewer" | "ReadOnly" | "ViewerWithPublish" | "Guest" => 1,
        "Explorer" | "Interactor" => 2,
        "ExplorerCanPublish" | "Publisher" => 3,
        "Creator" => 4,
        "SiteAdministratorExplorer" | "SiteAdministrator" => 5,
        "SiteAdministratorCreator" => 6,
        "ServerAdministrator" => 7,
        _ => 0,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OverCapacity {
    Unlicensed,
    Conflict,
}

#[derive(Clone, Debug)]
struct Config {
    content_url: String,
    pat_name: String,
    pat_secret: String,
    client_id: String,
    secret_id: String,
    secret_value: String,
    admin_user: String,
    admin_password: String,
    idle_ms: i64,
    seats: [Option<usize>; 3],
    add_over_capacity: OverCapacity,
    scope_error_status: u16,
    jwt_max_exp_s: i64,
    cloud: bool,
}

impl Config {
    fn from_opts(opts: &SimOptions) -> Config {
        let or = |o: &Option<String>, d: &str| o.clone().unwrap_or_else(|| d.to_string());
        let cloud = opts.switch("tableau.flavor") == Some("cloud");
        let idle_ms = match opts.token_ttl_s {
            Some(s) => (s as i64).saturating_mul(1000),
            None => {
                opts.switch("tableau.session_idle_min")
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(if cloud { 120 } else { 240 })
                    * 60_000
            }
        };
        let mut seats = [None, None, None];
        if let Some(spec) = opts.switch("tableau.seats") {
            for part in spec.split(',') {
                if let Some((k, v)) = part.split_once(['=', ':']) {
                    let idx = match k.trim().to_ascii_lowercase().as_str() {
                        "creator" => 0,
                        "explorer" => 1,
                        "viewer" => 2,
                        _ => continue,
                    };
                    seats[idx] = v.trim().parse().ok();
                }
            }
        }
        Config {
            content_url: or(&opts.site, DEFAULT_SITE),
            pat_name: or(&opts.pat_name, DEFAULT_PAT_NAME),
            pat_secret: or(&opts.pat_secret, DEFAULT_PAT_SECRET),
            client_id: or(&opts.client_id, DEFAULT_CLIENT_ID),
            secret_id: or(&opts.secret_id, DEFAULT_SECRET_ID),
            secret_value: or(&opts.secret_value, DEFAULT_SECRET_VALUE),
            admin_user: or(&opts.admin_user, DEFAULT_ADMIN),
            admin_password: or(&opts.admin_password, "admin"),
            idle_ms,
            seats,
            add_over_capacity: match opts.switch("tableau.add_over_capacity") {
                Some("conflict") => OverCapacity::Conflict,
                _ => OverCapacity::Unlicensed,
            },
            scope_error_status: match opts.switch("tableau.scope_error_status") {
                Some("401") => 401,
                _ => 403,
            },
            jwt_max_exp_s: opts
                .switch("tableau.jwt_max_exp_s")
                .and_then(|v| v.parse().ok())
                .unwrap_or(600),
            cloud,
        }
    }

    fn seat_limit(&self, seat: Seat) -> Option<usize> {
        self.seats[seat as usize]
    }
}

#[derive(Clone, Debug)]
struct User {
    id: String,
    name: String,
    full_name: String,
    email: String,
    site_role: String,
    auth_setting: String,
    last_login: Option<String>,
    password: Option<String>,
    owned_content: u32,
    language: String,
}

#[derive(Clone, Debug)]
struct Group {
    id: String,
    name: String,
    minimum_site_role: Option<String>,
    grant_license_mode: Option<String>,
    /// Member user ids, in the order they were added. "All Users" keeps none: it holds everyone.
    members: Vec<String>,
    all_users: bool,
}

#[derive(Debug)]
struct Site {
    id: String,
    content_url: String,
    users: HashMap<String, User>,
    user_order: Vec<String>,
    groups: HashMap<String, Group>,
    group_order: Vec<String>,
}

impl Site {
    fn user_by_name(&self, name: &str) -> Option<&User> {
        // Tableau user names are unique without regard to case (409000 on a clash) [A.4].
        self.user_order
            .iter()
            .filter_map(|id| self.users.get(id))
            .find(|u| u.name.eq_ignore_ascii_case(name))
    }

    fn group_name_taken(&self, name: &str, except: Option<&str>) -> bool {
        self.groups
            .values()
            .any(|g| g.name.to_lowercase() == name.to_lowercase() && Some(g.id.as_str()) != except)
    }

    fn seats_used(&self, seat: Seat) -> usize {
        self.users
            .values()
            .filter(|u| seat_of(&u.site_role) == Some(seat))
            .count()
    }

    fn members(&self, g: &Group) -> Vec<&User> {
        if g.all_users {
            self.user_order
                .iter()
                .filter_map(|id| self.users.get(id))
                .collect()
        } else {
            g.members
                .iter()
                .filter_map(|id| self.users.get(id))
                .collect()
        }
    }

    fn member_count(&self, g: &Group) -> usize {
        if g.all_users {
            self.users.len()
        } else {
            g.members.len()
        }
    }
}

#[derive(Debug)]
struct Session {
    site_id: String,
    user_id: String,
    pat: Option<String>,
    /// `scp` of a connected-app JWT; `None` for PAT and password sessions (the user's rights).
    scopes: Option<Vec<String>>,
    last_used_ms: AtomicI64,
}

#[derive(Default)]
struct State {
    sites: Vec<Site>,
    sessions: HashMap<String, Session>,
    /// PAT name → the token of its one live session [A.2 "only one session per PAT"].
    pat_sessions: HashMap<String, String>,
    /// `jti` of every accepted JWT, with its `exp`, so a replay is refused.
    seen_jti: HashMap<String, i64>,
}

impl State {
    fn site(&self, id: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.id == id)
    }
    fn site_mut(&mut self, id: &str) -> Option<&mut Site> {
        self.sites.iter_mut().find(|s| s.id == id)
    }
    fn site_by_content_url(&self, cu: &str, default_cu: &str) -> Option<&Site> {
        // On Server an empty contentUrl means the Default site [A.2].
        let cu = if cu.is_empty() { default_cu } else { cu };
        self.sites
            .iter()
            .find(|s| s.content_url.eq_ignore_ascii_case(cu))
    }
}

/// A Tableau error: HTTP status, the 6-digit code, summary and detail [A.7].
#[derive(Debug)]
struct TabErr {
    status: u16,
    code: String,
    summary: &'static str,
    detail: String,
}

fn err(status: u16, code: &str, summary: &'static str, detail: impl Into<String>) -> TabErr {
    TabErr {
        status,
        code: code.to_string(),
        summary,
        detail: detail.into(),
    }
}

fn bad_request(detail: impl Into<String>) -> TabErr {
    err(400, "400000", "Bad Request", detail)
}
fn user_not_found(id: &str) -> TabErr {
    err(
        404,
        "404002",
        "Resource Not Found",
        format!("User '{id}' could not be found."),
    )
}
fn group_not_found(id: &str) -> TabErr {
    err(
        404,
        "404012",
        "Resource Not Found",
        format!("Group '{id}' could not be found."),
    )
}
fn signin_error() -> TabErr {
    err(
        401,
        "401001",
        "Signin Error",
        "Error signing in to Tableau Server",
    )
}

fn error_el(e: &TabErr) -> El {
    El::new("error")
        .attr("code", e.code.clone())
        .child(El::new("summary").text(e.summary))
        .child(El::new("detail").text(e.detail.clone()))
}

fn respond(fmt: Format, status: u16, children: &[El]) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .content_type(fmt.content_type())
        .body(wire::render(fmt, children))
}

fn error_response(fmt: Format, e: &TabErr) -> HttpResponse {
    // JSON errors carry `code` as a string too: {"error":{"summary","detail","code"}} [A.7].
    respond(fmt, e.status, &[error_el(e)])
}

fn response_format(req: &HttpRequest) -> Format {
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("json") {
        Format::Json
    } else {
        Format::Xml
    }
}

fn request_format(req: &HttpRequest) -> Format {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.contains("json") {
        Format::Json
    } else {
        Format::Xml
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn now_iso() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The simulator: configuration, state behind one lock, id generator.
pub struct Tableau {
    cfg: Config,
    state: RwLock<State>,
    ids: IdGen,
}

/// The framework's entry point.
pub fn new(opts: &SimOptions) -> Arc<dyn VendorSim> {
    Arc::new(Sim(Arc::new(Tableau::new(opts))))
}

struct Sim(Arc<Tableau>);

impl Tableau {
    fn new(opts: &SimOptions) -> Tableau {
        let cfg = Config::from_opts(opts);
        let ids = IdGen::new(opts.derived_seed(SEED_SALT));
        let t = Tableau {
            cfg,
            state: RwLock::new(State::default()),
            ids,
        };
        t.seed();
        t
    }

    fn token(&self) -> String {
        const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        self.ids
            .bytes(32)
            .iter()
            .map(|b| ALPHA[(*b as usize) % ALPHA.len()] as char)
            .collect()
    }

    /// The configured site and a second one, `sandbox` (to exercise site scoping), each with
    /// its "All Users" group and the admin, who owns content (as a site's first admin does).
    fn seed(&self) {
        let mut st = self.state.write();
        for cu in [self.cfg.content_url.clone(), "sandbox".to_string()] {
            if st.sites.iter().any(|s| s.content_url == cu) {
                continue;
            }
            let mut site = Site {
                id: self.ids.uuid(),
                content_url: cu,
                users: HashMap::new(),
                user_order: Vec::new(),
                groups: HashMap::new(),
                group_order: Vec::new(),
            };
            let admin = User {
                id: self.ids.uuid(),
                name: self.cfg.admin_user.clone(),
                full_name: "Tableau Admin".into(),
                email: if self.cfg.admin_user.contains('@') {
                    self.cfg.admin_user.clone()
                } else {
                    format!("{}@tableau.local", self.cfg.admin_user)
                },
                site_role: if self.cfg.cloud {
                    "SiteAdministratorCreator".into()
                } else {
                    "ServerAdministrator".into()
                },
                auth_setting: "ServerDefault".into(),
                last_login: Some("2024-01-15T09:30:00Z".into()),
                password: Some(self.cfg.admin_password.clone()),
                owned_content: 3,
                language: "en".into(),
            };
            site.user_order.push(admin.id.clone());
            site.users.insert(admin.id.clone(), admin);
            let all = Group {
                id: self.ids.uuid(),
                name: "All Users".into(),
                minimum_site_role: None,
                grant_license_mode: None,
                members: Vec::new(),
                all_users: true,
            };
            site.group_order.push(all.id.clone());
            site.groups.insert(all.id.clone(), all);
            st.sites.push(site);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// What an authenticated call may touch.
struct Ctx {
    site_id: String,
    user_id: String,
    server_admin: bool,
}

impl Tableau {
    /// Checks `X-Tableau-Auth`, the session's idle timeout, the site in the path and, for a
    /// connected-app session, the `scp` scope the method needs [A.2].
    fn authorize(&self, req: &HttpRequest, scope: Option<&str>) -> Result<Ctx, TabErr> {
        let Some(token) = req
            .headers()
            .get("x-tableau-auth")
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
        else {
            return Err(err(
                401,
                "401000",
                "Unauthorized Access",
                "No authentication credentials were provided.",
            ));
        };
        let invalid = || {
            err(
                401,
                "401002",
                "Unauthorized Access",
                "Invalid authentication credentials were provided.",
            )
        };
        let now = now_ms();
        let expired = {
            let st = self.state.read();
            let Some(sess) = st.sessions.get(token) else {
                return Err(invalid());
            };
            let last = sess.last_used_ms.load(Ordering::Relaxed);
            if now - last > self.cfg.idle_ms {
                true
            } else {
                sess.last_used_ms.store(now, Ordering::Relaxed);
                let path_site = req.match_info().get("site").unwrap_or(&sess.site_id);
                if path_site != sess.site_id {
                    let user = st
                        .site(&sess.site_id)
                        .and_then(|s| s.users.get(&sess.user_id))
                        .map(|u| u.name.clone())
                        .unwrap_or_default();
                    let here = st
                        .site(&sess.site_id)
                        .map(|s| s.content_url.clone())
                        .unwrap_or_default();
                    // UNVERIFIED code; the message is the one TSC issue 501 quotes [A.2].
                    return Err(err(
                        403,
                        "403000",
                        "Forbidden",
                        format!("User '{user}' is authenticated for site '{here}' and may not access or modify resources on site '{path_site}'."),
                    ));
                }
                if let (Some(need), Some(scopes)) = (scope, &sess.scopes) {
                    let family = need.rsplit_once(':').map(|(f, _)| f).unwrap_or(need);
                    let ok = scopes
                        .iter()
                        .any(|s| s == need || *s == format!("{family}:*"));
                    if !ok {
                        let status = self.cfg.scope_error_status;
                        return Err(TabErr {
                            status,
                            code: format!("{status}000"),
                            summary: if status == 401 {
                                "Unauthorized Access"
                            } else {
                                "Forbidden"
                            },
                            detail: format!(
                                "The connected app token does not grant the scope '{need}' this method needs."
                            ),
                        });
                    }
                }
                let role = st
                    .site(&sess.site_id)
                    .and_then(|s| s.users.get(&sess.user_id))
                    .map(|u| u.site_role.as_str())
                    .unwrap_or("");
                let server_admin = role == "ServerAdministrator";
                // User and group management needs a site or server administrator; anyone may
                // read their own user [A.4: 403133 "caller may not read other users"]. A JWT
                // session holds its scopes *and* the rights of `sub` [A.2].
                if scope.is_some() && !role.contains("Administrator") {
                    let own = scope == Some("tableau:users:read")
                        && req.match_info().get("user") == Some(sess.user_id.as_str());
                    if !own {
                        return Err(err(
                            403,
                            if scope == Some("tableau:users:read") {
                                "403133"
                            } else {
                                "403000"
                            },
                            "Forbidden",
                            "Only site and server administrators may manage users and groups.",
                        ));
                    }
                }
                return Ok(Ctx {
                    site_id: sess.site_id.clone(),
                    user_id: sess.user_id.clone(),
                    server_admin,
                });
            }
        };
        if expired {
            let mut st = self.state.write();
            if let Some(s) = st.sessions.remove(token) {
                if let Some(p) = s.pat {
                    if st.pat_sessions.get(&p).map(String::as_str) == Some(token) {
                        st.pat_sessions.remove(&p);
                    }
                }
            }
        }
        Err(invalid())
    }

    fn sign_in(&self, fmt_in: Format, body: &[u8]) -> Result<(Vec<El>, u16), TabErr> {
        let root = wire::parse(fmt_in, body)
            .ok_or_else(|| bad_request("The request body is not well formed."))?;
        let creds = root
            .child("credentials")
            .ok_or_else(|| bad_request("The credentials element is missing."))?;
        let content_url = creds
            .child("site")
            .and_then(|s| s.attr("contentUrl"))
            .unwrap_or("")
            .to_string();
        let has_pw = creds.attr("name").is_some() || creds.attr("password").is_some();
        let has_pat = creds.attr("personalAccessTokenName").is_some()
            || creds.attr("personalAccessTokenSecret").is_some();
        let has_jwt = creds.attr("jwt").is_some();
        if [has_pw, has_pat, has_jwt].iter().filter(|b| **b).count() != 1 {
            return Err(bad_request(
                "Provide exactly one of name/password, a personal access token or a JWT.",
            ));
        }
        // Tableau Cloud always needs a contentUrl; an empty one is Server's Default site [A.2].
        if self.cfg.cloud && content_url.is_empty() {
            return Err(signin_error());
        }
        let mut st = self.state.write();
        let (site_id, site_cu) = match st.site_by_content_url(&content_url, &self.cfg.content_url) {
            Some(s) => (s.id.clone(), s.content_url.clone()),
            None => return Err(signin_error()),
        };
        let now = now_ms();
        let mut pat = None;
        let mut scopes = None;
        let user_id = {
            let site = st.site(&site_id).ok_or_else(signin_error)?;
            if has_pat {
                let ok = creds.attr("personalAccessTokenName") == Some(self.cfg.pat_name.as_str())
                    && creds.attr("personalAccessTokenSecret")
                        == Some(self.cfg.pat_secret.as_str());
                if !ok {
                    return Err(signin_error());
                }
                pat = Some(self.cfg.pat_name.clone());
                site.user_by_name(&self.cfg.admin_user)
                    .ok_or_else(signin_error)?
                    .id
                    .clone()
            } else if has_pw {
                let name = creds.attr("name").unwrap_or("");
                let pw = creds.attr("password").unwrap_or("");
                let u = site.user_by_name(name).ok_or_else(signin_error)?;
                if u.password.as_deref() != Some(pw) || pw.is_empty() {
                    return Err(signin_error());
                }
                u.id.clone()
            } else {
                let (sub, scp, jti, exp) = self.verify_jwt(creds.attr("jwt").unwrap_or(""))?;
                if st.seen_jti.contains_key(&jti) {
                    return Err(signin_error());
                }
                let u = site.user_by_name(&sub).ok_or_else(signin_error)?;
                scopes = Some(scp);
                let id = u.id.clone();
                st.seen_jti.retain(|_, e| *e * 1000 > now);
                st.seen_jti.insert(jti, exp);
                id
            }
        };
        // Impersonation: <credentials …><user id="…"/></credentials>, server admins only [A.2].
        let user_id = match creds.child("user").and_then(|u| u.attr("id")) {
            Some(target) => {
                let site = st.site(&site_id).ok_or_else(signin_error)?;
                let caller_is_admin = site
                    .users
                    .get(&user_id)
                    .is_some_and(|u| u.site_role == "ServerAdministrator");
                if !caller_is_admin {
                    return Err(signin_error());
                }
                if !site.users.contains_key(target) {
                    return Err(user_not_found(target));
                }
                target.to_string()
            }
            None => user_id,
        };
        // Only one session per PAT: a new sign-in ends the earlier one, on any site [A.2].
        if let Some(p) = &pat {
            if let Some(old) = st.pat_sessions.remove(p) {
                st.sessions.remove(&old);
            }
        }
        // Idle sessions are gone anyway; dropping them here keeps a long run's memory flat.
        let idle = self.cfg.idle_ms;
        st.sessions
            .retain(|_, s| now - s.last_used_ms.load(Ordering::Relaxed) <= idle);
        let token = self.token();
        st.sessions.insert(
            token.clone(),
            Session {
                site_id: site_id.clone(),
                user_id: user_id.clone(),
                pat: pat.clone(),
                scopes,
                last_used_ms: AtomicI64::new(now),
            },
        );
        if let Some(p) = pat.clone() {
            st.pat_sessions.insert(p, token.clone());
        }
        if let Some(site) = st.site_mut(&site_id) {
            self.grant_license_on_login(site, &user_id);
            if let Some(u) = site.users.get_mut(&user_id) {
                u.last_login = Some(now_iso());
            }
        }
        let mut cred = El::new("credentials").attr("token", token);
        if pat.is_some() {
            // days:hours:minutes until the PAT itself expires [A.2, NANGO].
            cred = cred.attr("estimatedTimeToExpiration", "364:23:59");
        }
        let cred = cred
            .child(
                El::new("site")
                    .attr("id", site_id)
                    .attr("contentUrl", site_cu),
            )
            .child(El::new("user").attr("id", user_id));
        Ok((vec![cred], 200))
    }

    /// Groups with a minimum site role and `grantLicenseMode="onLogin"` raise a member's site
    /// role to that minimum when the member signs in, seats permitting [A.5, TSC group_item.py].
    fn grant_license_on_login(&self, site: &mut Site, user_id: &str) {
        let Some(current) = site.users.get(user_id).map(|u| u.site_role.clone()) else {
            return;
        };
        let best = site
            .groups
            .values()
            .filter(|g| g.grant_license_mode.as_deref() == Some("onLogin"))
            .filter(|g| g.all_users || g.members.iter().any(|m| m == user_id))
            .filter_map(|g| g.minimum_site_role.clone())
            .max_by_key(|r| role_rank(r));
        if let Some(role) = best {
            if role_rank(&role) > role_rank(&current)
                && self.check_seat(site, &role, Some(&current))
            {
                if let Some(u) = site.users.get_mut(user_id) {
                    u.site_role = role;
                }
            }
        }
    }

    /// Connected app, direct trust [A.2]: HS256 signed with the secret value, `kid` = secret id,
    /// `iss` = client id, `aud` = "tableau", `exp` at most 10 minutes ahead, a `jti`, `sub` and
    /// an `scp` array. Every failure is 401001 (the REST status is UNVERIFIED).
    fn verify_jwt(&self, jwt: &str) -> Result<(String, Vec<String>, String, i64), TabErr> {
        use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
        let header = decode_header(jwt).map_err(|_| signin_error())?;
        if header.alg != Algorithm::HS256 || header.kid.as_deref() != Some(&self.cfg.secret_id) {
            return Err(signin_error());
        }
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["tableau"]);
        v.set_issuer(&[self.cfg.client_id.as_str()]);
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        v.leeway = 5;
        let data = decode::<Value>(
            jwt,
            &DecodingKey::from_secret(self.cfg.secret_value.as_bytes()),
            &v,
        )
        .map_err(|_| signin_error())?;
        let c = data.claims;
        let exp = c
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(signin_error)?;
        if exp - now_ms() / 1000 > self.cfg.jwt_max_exp_s {
            return Err(signin_error());
        }
        let sub = c
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(signin_error)?;
        let jti = c
            .get("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty())
            .ok_or_else(signin_error)?;
        let scp: Vec<String> = c
            .get("scp")
            .and_then(Value::as_array)
            .ok_or_else(signin_error)?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        Ok((sub.to_string(), scp, jti.to_string(), exp))
    }
}

// ---------------------------------------------------------------------------------------------
// Query options: paging, filter, sort, fields [A.6]

#[derive(Debug)]
struct Filter {
    field: String,
    op: String,
    values: Vec<String>,
}

struct Query {
    page_size: usize,
    page_number: usize,
    filters: Vec<Filter>,
    sort: Vec<(String, bool)>,
    all_fields: bool,
    fields: Option<Vec<String>>,
    map_assets_to: Option<String>,
}

fn parse_query(req: &HttpRequest) -> Result<Query, TabErr> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|_| bad_request("The query string is not well formed."))?;
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let page_size = match get("pageSize") {
        None => DEFAULT_PAGE_SIZE,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 1 => {
                if n as usize > MAX_PAGE_SIZE {
                    return Err(err(
                        403,
                        "403014",
                        "Page Size Limit Exceeded",
                        format!("The page size ({n}) exceeds the maximum of {MAX_PAGE_SIZE}."),
                    ));
                }
                n as usize
            }
            _ => {
                return Err(err(
                    400,
                    "400007",
                    "Invalid page size",
                    format!("The page size '{v}' is not a positive integer."),
                ))
            }
        },
    };
    let page_number = match get("pageNumber") {
        None => 1,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 1 => n as usize,
            _ => {
                return Err(err(
                    400,
                    "400006",
                    "Invalid page number",
                    format!("The page number '{v}' is not a positive integer."),
                ))
            }
        },
    };
    let filters = match get("filter") {
        Some(f) if !f.is_empty() => parse_filter(f)?,
        _ => Vec::new(),
    };
    let mut sort = Vec::new();
    if let Some(s) = get("sort").filter(|s| !s.is_empty()) {
        for part in s.split(',') {
            let (f, dir) = part.split_once(':').unwrap_or((part, "asc"));
            let asc = match dir {
                "asc" => true,
                "desc" => false,
                _ => return Err(bad_request(format!("Invalid sort expression '{part}'."))),
            };
            sort.push((f.to_string(), asc));
        }
    }
    let (all_fields, fields) = match get("fields") {
        Some("_all_") => (true, None),
        Some("_default_") | None | Some("") => (false, None),
        Some(list) => (
            false,
            Some(
                list.split(',')
                    .filter(|f| *f != "_default_")
                    .map(str::to_string)
                    .collect(),
            ),
        ),
    };
    Ok(Query {
        page_size,
        page_number,
        filters,
        sort,
        all_fields,
        fields,
        map_assets_to: get("mapAssetsTo").map(str::to_string),
    })
}

/// `field:op:value` joined by commas; a list value is `[a,b]` and keeps its commas [A.6].
fn parse_filter(s: &str) -> Result<Vec<Filter>, TabErr> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for ch in s.chars() {
        match ch {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    parts.push(cur);
    let mut out = Vec::new();
    for p in parts {
        let mut it = p.splitn(3, ':');
        let (Some(field), Some(op), Some(value)) = (it.next(), it.next(), it.next()) else {
            return Err(bad_request(format!("Invalid filter expression '{p}'.")));
        };
        let values = if op == "in" {
            let inner = value
                .strip_prefix('[')
                .and_then(|v| v.strip_suffix(']'))
                .ok_or_else(|| {
                    bad_request(format!(
                        "The value of an 'in' filter must be a list: '{p}'."
                    ))
                })?;
            inner.split(',').map(|v| v.to_string()).collect()
        } else {
            vec![value.to_string()]
        };
        out.push(Filter {
            field: field.to_string(),
            op: op.to_string(),
            values,
        });
    }
    Ok(out)
}

fn unsupported_filter(f: &Filter) -> TabErr {
    bad_request(format!(
        "The filter field '{}' with operator '{}' is not supported.",
        f.field, f.op
    ))
}

fn cmp_op(op: &str, ord: std::cmp::Ordering) -> Option<bool> {
    use std::cmp::Ordering::*;
    Some(match op {
        "eq" => ord == Equal,
        "gt" => ord == Greater,
        "gte" => ord != Less,
        "lt" => ord == Less,
        "lte" => ord != Greater,
        _ => return None,
    })
}

fn str_match(op: &str, have: &str, values: &[String]) -> Option<bool> {
    Some(match op {
        "eq" => values.first().is_some_and(|v| v == have),
        "cieq" => values.first().is_some_and(|v| v.eq_ignore_ascii_case(have)),
        "in" => values.iter().any(|v| v == have),
        _ => return None,
    })
}

fn user_matches(u: &User, f: &Filter) -> Result<bool, TabErr> {
    let r = match f.field.as_str() {
        "name" => str_match(&f.op, &u.name, &f.values),
        "friendlyName" => str_match(&f.op, &u.full_name, &f.values),
        "luid" | "id" if f.op != "cieq" => str_match(&f.op, &u.id, &f.values),
        "siteRole" if f.op == "eq" || f.op == "in" => str_match(&f.op, &u.site_role, &f.values),
        "domainName" if f.op == "eq" => Some(f.values.first().is_some_and(|v| v == "local")),
        "isLocal" if f.op == "eq" => Some(f.values.first().is_some_and(|v| v == "true")),
        "lastLogin" => match &u.last_login {
            None => cmp_op(&f.op, std::cmp::Ordering::Equal).map(|_| false),
            Some(l) => cmp_op(&f.op, l.as_str().cmp(f.values[0].as_str())),
        },
        _ => None,
    };
    r.ok_or_else(|| unsupported_filter(f))
}

fn like(pattern: &str, s: &str) -> bool {
    let p = pattern.to_lowercase();
    let s = s.to_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == s;
    }
    let mut pos = 0;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            if !s.starts_with(part) {
                return false;
            }
            pos = part.len();
        } else if i == parts.len() - 1 {
            return s.len() >= pos + part.len() && s.ends_with(part);
        } else {
            match s[pos..].find(part) {
                Some(k) => pos += k + part.len(),
                None => return false,
            }
        }
    }
    true
}

fn group_matches(site: &Site, g: &Group, f: &Filter) -> Result<bool, TabErr> {
    let r = match f.field.as_str() {
        "name" if f.op == "like" => Some(f.values.first().is_some_and(|v| like(v, &g.name))),
        "name" => str_match(&f.op, &g.name, &f.values),
        "luid" | "id" if f.op != "cieq" => str_match(&f.op, &g.id, &f.values),
        "minimumSiteRole" if f.op == "eq" || f.op == "in" => {
            let have = g.minimum_site_role.as_deref().unwrap_or("");
            str_match(&f.op, have, &f.values)
        }
        "domainName" if f.op == "eq" => Some(f.values.first().is_some_and(|v| v == "local")),
        "isLocal" if f.op == "eq" => Some(f.values.first().is_some_and(|v| v == "true")),
        "userCount" => match f.values[0].parse::<usize>() {
            Ok(n) => cmp_op(&f.op, site.member_count(g).cmp(&n)),
            Err(_) => None,
        },
        _ => None,
    };
    r.ok_or_else(|| unsupported_filter(f))
}

/// One page of `items`, or 400006 when `pageNumber` lies past the last page [A.6].
fn page<T: Clone>(items: &[T], q: &Query) -> Result<Vec<T>, TabErr> {
    let start = (q.page_number - 1).saturating_mul(q.page_size);
    if q.page_number > 1 && start >= items.len() {
        return Err(err(
            400,
            "400006",
            "Invalid page number",
            format!(
                "The page number '{}' is past the last page of results.",
                q.page_number
            ),
        ));
    }
    Ok(items
        .iter()
        .skip(start)
        .take(q.page_size)
        .cloned()
        .collect())
}

fn pagination(q: &Query, total: usize) -> El {
    El::new("pagination")
        .attr("pageNumber", q.page_number.to_string())
        .attr("pageSize", q.page_size.to_string())
        .attr("totalAvailable", total.to_string())
}

// ---------------------------------------------------------------------------------------------
// Element shapes, each taken from a recorded response (vendor-specs/tableau/*.xml)

/// `user_get.xml` (list), plus with `fields=_all_` the attributes of `user_get_all_fields.xml`.
fn user_list_el(u: &User, q: &Query) -> El {
    let mut el = El::new("user")
        .attr("id", u.id.clone())
        .attr("name", u.name.clone())
        .attr("siteRole", u.site_role.clone())
        .opt_attr("lastLogin", u.last_login.as_deref())
        .attr("externalAuthUserId", "");
    if !u.full_name.is_empty() {
        el = el.attr("fullName", u.full_name.clone());
    }
    if !u.email.is_empty() {
        el = el.attr("email", u.email.clone());
    }
    if q.all_fields {
        el = el
            .attr("authSetting", u.auth_setting.clone())
            .attr("locale", "")
            .attr("language", u.language.clone())
            .child(El::new("domain").attr("name", "local"));
    }
    if let Some(fields) = &q.fields {
        el.attrs.retain(|(k, _)| fields.iter().any(|f| f == k));
    }
    el
}

/// `user_get_by_id.xml`, plus `email` (part of Query User on Site since API 3.x).
fn user_get_el(u: &User) -> El {
    let mut el = El::new("user")
        .attr("id", u.id.clone())
        .attr("name", u.name.clone())
        .attr("fullName", u.full_name.clone())
        .attr("siteRole", u.site_role.clone())
        .attr("authSetting", u.auth_setting.clone())
        .opt_attr("lastLogin", u.last_login.as_deref())
        .attr("externalAuthUserId", "");
    if !u.email.is_empty() {
        el = el.attr("email", u.email.clone());
    }
    el.child(El::new("domain").attr("name", "local"))
}

/// `group_get.xml`; `userCount` with `fields=_all_` (`group_get_all_fields.xml`); the
/// `<import>` child when the group has a minimum site role (`group_update.xml`).
fn group_el(site: &Site, g: &Group, q: Option<&Query>) -> El {
    let mut el = El::new("group")
        .attr("id", g.id.clone())
        .attr("name", g.name.clone());
    if q.is_some_and(|q| q.all_fields) {
        el = el.attr("userCount", site.member_count(g).to_string());
    }
    el = el.child(El::new("domain").attr("name", "local"));
    if let Some(role) = &g.minimum_site_role {
        el = el.child(import_el(g, role));
    }
    if let Some(fields) = q.and_then(|q| q.fields.as_ref()) {
        el.attrs.retain(|(k, _)| fields.iter().any(|f| f == k));
    }
    el
}

fn import_el(g: &Group, role: &str) -> El {
    El::new("import")
        .attr("domainName", "local")
        .attr("siteRole", role)
        .attr(
            "grantLicenseMode",
            g.grant_license_mode
                .clone()
                .unwrap_or_else(|| "onLogin".into()),
        )
}

// ---------------------------------------------------------------------------------------------
// Handlers

type Res = Result<(u16, Vec<El>), TabErr>;

fn finish(req: &HttpRequest, r: Res) -> HttpResponse {
    let fmt = response_format(req);
    match r {
        Ok((204, _)) => HttpResponse::NoContent().finish(),
        Ok((status, els)) => respond(fmt, status, &els),
        Err(e) => error_response(fmt, &e),
    }
}

fn seg<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.match_info().get(name).unwrap_or("")
}

fn body_root(req: &HttpRequest, body: &[u8]) -> Result<ReqEl, TabErr> {
    wire::parse(request_format(req), body)
        .ok_or_else(|| bad_request("The request body is not well formed."))
}

impl Tableau {
    fn server_info(&self) -> Res {
        Ok((
            200,
            vec![El::new("serverInfo")
                .child(
                    El::new("productVersion")
                        .attr("build", PRODUCT_BUILD)
                        .text(PRODUCT_VERSION),
                )
                .child(El::new("restApiVersion").text(REST_API_VERSION))],
        ))
    }

    fn sign_out(&self, req: &HttpRequest) -> Res {
        // Only a live session can sign out (401000/401002 otherwise).
        self.authorize(req, None)?;
        let token = req
            .headers()
            .get("x-tableau-auth")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut st = self.state.write();
        if let Some(s) = st.sessions.remove(token) {
            if let Some(p) = s.pat {
                if st.pat_sessions.get(&p).map(String::as_str) == Some(token) {
                    st.pat_sessions.remove(&p);
                }
            }
        }
        Ok((204, vec![]))
    }

    fn switch_site(&self, req: &HttpRequest, body: &[u8]) -> Res {
        let ctx = self.authorize(req, None)?;
        let root = body_root(req, body)?;
        let cu = root
            .child("site")
            .and_then(|s| s.attr("contentUrl"))
            .ok_or_else(|| bad_request("The site element is missing."))?;
        let token = req
            .headers()
            .get("x-tableau-auth")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut st = self.state.write();
        let (site_id, site_cu) = match st.site_by_content_url(cu, &self.cfg.content_url) {
            Some(s) => (s.id.clone(), s.content_url.clone()),
            None => {
                return Err(err(
                    401,
                    "401003",
                    "Switch Site Error",
                    format!("Site '{cu}' could not be found."),
                ))
            }
        };
        if site_id == ctx.site_id {
            return Err(err(
                403,
                "403070",
                "Forbidden",
                "You are already signed in to that site.",
            ));
        }
        let name = st
            .site(&ctx.site_id)
            .and_then(|s| s.users.get(&ctx.user_id))
            .map(|u| u.name.clone())
            .unwrap_or_default();
        let user_id = st
            .site(&site_id)
            .and_then(|s| s.user_by_name(&name))
            .map(|u| u.id.clone())
            .ok_or_else(|| {
                err(
                    401,
                    "401003",
                    "Switch Site Error",
                    "The user is not a member of that site.",
                )
            })?;
        let old = st.sessions.remove(&token);
        let pat = old.as_ref().and_then(|o| o.pat.clone());
        let scopes = old.and_then(|o| o.scopes);
        let new_token = self.token();
        st.sessions.insert(
            new_token.clone(),
            Session {
                site_id: site_id.clone(),
                user_id: user_id.clone(),
                pat: pat.clone(),
                scopes,
                last_used_ms: AtomicI64::new(now_ms()),
            },
        );
        if let Some(p) = pat {
            st.pat_sessions.insert(p, new_token.clone());
        }
        Ok((
            200,
            vec![El::new("credentials")
                .attr("token", new_token)
                .child(
                    El::new("site")
                        .attr("id", site_id)
                        .attr("contentUrl", site_cu),
                )
                .child(El::new("user").attr("id", user_id))],
        ))
    }

    // ---- users ----

    fn list_users(&self, req: &HttpRequest) -> Res {
        let ctx = self.authorize(req, Some("tableau:users:read"))?;
        let q = parse_query(req)?;
        let st = self.state.read();
        let site = st.site(&ctx.site_id).ok_or_else(site_not_found)?;
        let mut users: Vec<&User> = Vec::new();
        for id in &site.user_order {
            let Some(u) = site.users.get(id) else {
                continue;
            };
            let mut ok = true;
            for f in &q.filters {
                if !user_matches(u, f)? {
                    ok = false;
                    break;
                }
            }
            if ok {
                users.push(u);
            }
        }
        for (field, asc) in q.sort.iter().rev() {
            let key = |u: &&User| -> String {
                match field.as_str() {
                    "name" => u.name.to_lowercase(),
                    "siteRole" => u.site_role.clone(),
                    "lastLogin" => u.last_login.clone().unwrap_or_default(),
                    "fullName" | "friendlyName" => u.full_name.to_lowercase(),
                    _ => String::new(),
                }
            };
            if !["name", "siteRole", "lastLogin", "fullName", "friendlyName"]
                .contains(&field.as_str())
            {
                return Err(bad_request(format!(
                    "Sorting by '{field}' is not supported."
                )));
            }
            users.sort_by_key(key);
            if !asc {
                users.reverse();
            }
        }
        let total = users.len();
        let items = page(&users, &q)?;
        let els = items.iter().map(|u| user_list_el(u, &q)).collect();
        Ok((200, vec![pagination(&q, total), El::list("users", els)]))
    }

    fn get_user(&self, req: &HttpRequest) -> Res {
        let ctx = self.authorize(req, Some("tableau:users:read"))?;
        let id = seg(req, "user");
        let st = self.state.read();
        let site = st.site(&ctx.site_id).ok_or_else(site_not_found)?;
        let u = site.users.get(id).ok_or_else(|| user_not_found(id))?;
        Ok((200, vec![user_get_el(u)]))
    }

    fn check_seat(&self, site: &Site, role: &str, replacing: Option<&str>) -> bool {
        let Some(seat) = seat_of(role) else {
            return true;
        };
        if replacing.and_then(seat_of) == Some(seat) {
            return true;
        }
        match self.cfg.seat_limit(seat) {
            Some(limit) => site.seats_used(seat) < limit,
            None => true,
        }
    }

    fn add_user(&self, req: &HttpRequest, body: &[u8]) -> Res {
        let ctx = self.authorize(req, Some("tableau:users:create"))?;
        let root = body_root(req, body)?;
        let u = root
            .child("user")
            .ok_or_else(|| bad_request("The user element is missing."))?;
        let name = u
            .attr("name")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad_request("The user name is missing."))?;
        // On Tableau Cloud the user name is the sign-in email [A.4].
        if self.cfg.cloud && !name.contains('@') {
            return Err(bad_request(format!(
                "'{name}' is not an email address; on Tableau Cloud the user name is the sign-in email."
            )));
        }
        let role = u
            .attr("siteRole")
            .ok_or_else(|| bad_request("The site role is missing."))?;
        if !ADDABLE_ROLES.contains(&role) {
            return Err(invalid_site_role(role));
        }
        let auth = u.attr("authSetting").unwrap_or("ServerDefault");
        if !AUTH_SETTINGS.contains(&auth) {
            return Err(err(
                400,
                "400003",
                "Bad Request",
                format!("The auth setting '{auth}' is not supported for your site."),
            ));
        }
        let mut st = self.state.write();
        let site = st.site_mut(&ctx.site_id).ok_or_else(site_not_found)?;
        if site.user_by_name(name).is_some() {
            return Err(err(
                409,
                "409000",
                "User conflict",
                format!("User '{name}' already exists on the site."),
            ));
        }
        let mut role = role.to_string();
        if !self.check_seat(site, &role, None) {
            match self.cfg.add_over_capacity {
                // Okta: "the user is created but gets a different role than asked" [A.3].
                OverCapacity::Unlicensed => role = "Unlicensed".into(),
                OverCapacity::Conflict => return Err(licensing_conflict(&role)),
            }
        }
        let user = User {
            id: self.ids.uuid(),
            name: name.to_string(),
            full_name: u.attr("fullName").unwrap_or("").to_string(),
            email: u.attr("email").unwrap_or("").to_string(),
            site_role: role,
            auth_setting: auth.to_string(),
            last_login: None,
            password: u.attr("password").map(str::to_string),
            owned_content: 0,
            language: "en".into(),
        };
        let el = El::new("user")
            .attr("id", user.id.clone())
            .attr("name", user.name.clone())
            .attr("siteRole", user.site_role.clone())
            .attr("authSetting", user.auth_setting.clone())
            .attr("externalAuthUserId", "");
        site.user_order.push(user.id.clone());
        site.users.insert(user.id.clone(), user);
        Ok((201, vec![el]))
    }

    fn update_user(&self, req: &HttpRequest, body: &[u8]) -> Res {
        let ctx = self.authorize(req, Some("tableau:users:update"))?;
        let id = seg(req, "user").to_string();
        let root = body_root(req, body)?;
        let u = root
            .child("user")
            .ok_or_else(|| bad_request("The user element is missing."))?;
        // Update User's body is `fullName email siteRole authSetting password` [A.4]: a user
        // cannot be renamed (UNVERIFIED: the code Tableau answers; 400000 here).
        if u.attr("name").is_some() {
            return Err(bad_request(
                "The attribute 'name' cannot be changed; Update User takes no name.",
            ));
        }
        // Tableau Cloud: only the site role (and email, from 3.26) can change [A.4].
        if self.cfg.cloud {
            if let Some(k) = ["fullName", "password"]
                .into_iter()
                .find(|k| u.attr(k).is_some())
            {
                return Err(bad_request(format!(
                    "The attribute '{k}' cannot be changed on Tableau Cloud."
                )));
            }
        }
        let mut st = self.state.write();
        let site = st.site_mut(&ctx.site_id).ok_or_else(site_not_found)?;
        let current = site
            .users
            .get(&id)
            .ok_or_else(|| user_not_found(&id))?
            .clone();
        if let Some(role) = u.attr("siteRole") {
            let allowed = ADDABLE_ROLES.contains(&role)
                || (role == "ServerAdministrator" && ctx.server_admin);
            if !allowed {
                return Err(invalid_site_role(role));
            }
            if id == ctx.user_id && role != current.site_role {
                return Err(err(
                    403,
                    "403009",
                    "Licensing Update On Self Forbidden",
                    "A user cannot update their own licensing role.",
                ));
            }
            if !self.check_seat(site, role, Some(&current.site_role)) {
                return Err(licensing_conflict(role));
            }
        }
        if let Some(email) = u.attr("email") {
            if !email.is_empty() && !email.contains('@') {
                return Err(bad_request(format!(
                    "'{email}' is not a valid email address."
                )));
            }
        }
        if let Some(auth) = u.attr("authSetting") {
            if !AUTH_SETTINGS.contains(&auth) {
                return Err(err(
                    400,
                    "400003",
                    "Bad Request",
                    format!("The auth setting '{auth}' is not supported for your site."),
                ));
            }
        }
        let user = site.users.get_mut(&id).ok_or_else(|| user_not_found(&id))?;
        if let Some(v) = u.attr("fullName") {
            user.full_name = v.to_string();
        }
        if let Some(v) = u.attr("email") {
            user.email = v.to_string();
        }
        if let Some(v) = u.attr("siteRole") {
            user.site_role = v.to_string();
        }
        if let Some(v) = u.attr("authSetting") {
            user.auth_setting = v.to_string();
        }
        if let Some(v) = u.attr("password") {
            user.password = Some(v.to_string());
        }
        // `user_update.xml`: no id attribute in the answer [A.4].
        let el = El::new("user")
            .attr("name", user.name.clone())
            .attr("fullName", user.full_name.clone())
            .attr("email", user.email.clone())
            .attr("siteRole", user.site_role.clone());
        Ok((200, vec![el]))
    }

    fn remove_user(&self, req: &HttpRequest) -> Res {
        let ctx = self.authorize(req, Some("tableau:users:delete"))?;
        let q = parse_query(req)?;
        let id = seg(req, "user").to_string();
        let mut st = self.state.write();
        let site = st.site_mut(&ctx.site_id).ok_or_else(site_not_found)?;
        let owned = site
            .users
            .get(&id)
            .ok_or_else(|| user_not_found(&id))?
            .owned_content;
        if let Some(target) = q.map_assets_to.as_deref() {
            if !ctx.server_admin {
                return Err(err(
                    403,
                    "403000",
                    "Forbidden",
                    "Only server administrators may use mapAssetsTo.",
                ));
            }
            if target == id || !site.users.contains_key(target) {
                return Err(user_not_found(target));
            }
            if let Some(t) = site.users.get_mut(target) {
                t.owned_content += owned;
            }
        } else if owned > 0 {
            // The removal fails, but the user is unlicensed all the same [A.4, DOC-usersview].
            if let Some(u) = site.users.get_mut(&id) {
                u.site_role = "Unlicensed".into();
            }
            return Err(err(
                409,
                "409003",
                "User asset conflict",
                "The user owns content and cannot be removed; their site role was changed to Unlicensed.",
            ));
        }
        site.users.remove(&id);
        site.user_order.retain(|u| *u != id);
        for g in site.groups.values_mut() {
            g.members.retain(|m| *m != id);
        }
        let sid = ctx.site_id.clone();
        st.sessions
            .retain(|_, s| !(s.site_id == sid && s.user_id == id));
        Ok((204, vec![]))
    }

    fn groups_for_user(&self, req: &HttpRequest) -> Res {
        let ctx = self.authorize(req, Some("tableau:users:read"))?;
        let q = parse_query(req)?;
        let id = seg(req, "user");
        let st = self.state.read();
        let site = st.site(&ctx.site_id).ok_or_else(site_not_found)?;
        if !site.users.contains_key(id) {
            return Err(user_not_found(id));
        }
        let groups: Vec<&Group> = site
            .group_order
            .iter()
            .filter_map(|g| site.groups.get(g))
            .filter(|g| g.all_users || g.members.iter().any(|m| m == id))
            .collect();
        let total = groups.len();
        let items = page(&groups, &q)?;
        let els = items
            .iter()
            .map(|g| {
                El::new("group")
                    .attr("id", g.id.clone())
                    .attr("name", g.name.clone())
                    .child(El::new("domain").attr("name", "local"))
            })
            .collect();
        Ok((200, vec![pagination(&q, total), El::list("groups", els)]))
    }

    // ---- groups ----

    fn list_groups(&self, req: &HttpRequest) -> Res {
        let ctx = self.authorize(req, Some("tableau:groups:read"))?;
        let q = parse_query(req)?;
        let st = self.state.read();
        let site = st.site(&ctx.site_id).ok_or_else(site_not_found)?;
        let mut groups: Vec<&Group> = Vec::new();
        for id in &site.group_order {
            let Some(g) = site.groups.get(id) else {
                continue;
            };
            let mut ok = true;
            for f in &q.filters {
                if !group_matches(site, g, f)? {
                    ok = false;
                    break;
                }
            }
            if ok {
                groups.push(g);
            }
        }
        for (field, asc) in q.sort.iter().rev() {
            match field.as_str() {
                "name" => groups.sort_by_key(|g| g.name.to_lowercase()),
                "userCount" => groups.sort_by_key(|g| site.member_count(g)),
                _ => {
                    return Err(bad_request(format!(
                        "Sorting by '{field}' is not supported."
                    )))
                }
            }
            if !asc {
                groups.reverse();
            }
        }
        let total = groups.len();
        let items = page(&groups, &q)?;
        let els = items.iter().map(|g| group_el(site, g, Some(&q))).collect();
        Ok((200, vec![pagination(&q, total), El::list("groups", els)]))
    }

    fn create_group(&self, req: &HttpRequest, body: &[u8]) -> Res {
        let ctx = self.authorize(req, Some("tableau:groups:create"))?;
        let root = body_root(req, body)?;
        let g = root
            .child("group")
            .ok_or_else(|| bad_request("The group element is missing."))?;
        let name = g
            .attr("name")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad_request("The group name is missing."))?;
        if g.child("import").is_some() {
            return Err(err(
                403,
                "403011",
                "Forbidden",
                "Active Directory is not configured for this site.",
            ));
        }
        let min_role = g.attr("minimumSiteRole");
        if let Some(r) = min_role {
            if !ADDABLE_ROLES.contains(&r) {
                return Err(invalid_site_role(r));
            }
        }
        let mut st = self.state.write();
        let site = st.site_mut(&ctx.site_id).ok_or_else(site_not_found)?;
        if site.group_name_taken(name, None) {
            return Err(group_conflict(name));
        }
        let group = Group {
            id: self.ids.uuid(),
            name: name.to_string(),
            minimum_site_role: min_role.map(str::to_string),
            grant_license_mode: min_role
                .map(|_| g.attr("grantLicenseMode").unwrap_or("onLogin").to_string()),
            members: Vec::new(),
            all_users: false,
        };
        // `group_create.xml`: siteRole and grantLicenseMode only when a minimum role is set.
        let mut el = El::new("group")
            .attr("id", group.id.clone())
            .attr("name", group.name.clone());
        if let Some(r) = &group.minimum_site_role {
            el = el.attr("siteRole", r.clone()).attr(
                "grantLicenseMode",
                group.grant_license_mode.clone().unwrap_or_default(),
            );
        }
        site.group_order.push(group.id.clone());
        site.groups.insert(group.id.clone(), group);
        Ok((201, vec![el]))
    }

    fn update_group(&self, req: &HttpRequest, body: &[u8]) -> Res {
        let ctx = self.authorize(req, Some("tableau:groups:update"))?;
        let id = seg(req, "group").to_string();
        let root = body_root(req, body)?;
        let g = root
            .child("group")
            .ok_or_else(|| bad_request("The group element is missing."))?;
        let mut st = self.state.write();
        let site = st.site_mut(&ctx.site_id).ok_or_else(site_not_found)?;
        let is_all = site
            .groups
            .get(&id)
            .ok_or_else(|| group_not_found(&id))?
            .all_users;
        if let Some(name) = g.attr("name") {
            if name.trim().is_empty() {
                return Err(bad_request("The group name is missing."));
            }
            if site.group_name_taken(name, Some(&id)) {
                return Err(group_conflict(name));
            }
            if is_all && name != "All Users" {
                return Err(err(
                    403,
                    "403000",
                    "Forbidden",
                    "The 'All Users' group cannot be renamed.",
                ));
            }
        }
        if let Some(r) = g.attr("minimumSiteRole") {
            if !ADDABLE_ROLES.contains(&r) {
                return Err(invalid_site_role(r));
            }
        }
        let group = site
            .groups
            .get_mut(&id)
            .ok_or_else(|| group_not_found(&id))?;
        if let Some(name) = g.attr("name") {
            group.name = name.trim().to_string();
        }
        if let Some(r) = g.attr("minimumSiteRole") {
            group.minimum_site_role = Some(r.to_string());
            group.grant_license_mode = Some(
                g.attr("grantLicenseMode")
                    .map(str::to_string)
                    .or_else(|| group.grant_license_mode.clone())
                    .unwrap_or_else(|| "onLogin".into()),
            );
        }
        // `group_update.xml`: id, name and the <import> child.
        let mut el = El::new("group")
            .attr("id", group.id.clone())
            .attr("name", group.name.clone());
        if let Some(r) = &group.minimum_site_role {
            el = el.child(import_el(group, r));
        }
        Ok((200, vec![el]))
    }

    fn delete_group(&self, req: &HttpRequest) -> Res {
        let ctx = self.authorize(req, Some("tableau:groups:delete"))?;
        let id = seg(req, "group").to_string();
        let mut st = self.state.write();
        let site = st.site_mut(&ctx.site_id).ok_or_else(site_not_found)?;
        let g = site.groups.get(&id).ok_or_else(|| group_not_found(&id))?;
        if g.all_users {
            // "All Users" cannot be deleted [A.5, DOC-groupsdel]; the code is UNVERIFIED.
            return Err(err(
                403,
                "403000",
                "Forbidden",
                "The 'All Users' group cannot be deleted.",
            ));
        }
        site.groups.remove(&id);
        site.group_order.retain(|g| *g != id);
        Ok((204, vec![]))
    }

    fn users_in_group(&self, req: &HttpRequest) -> Res {
        let ctx = self.authorize(req, Some("tableau:groups:read"))?;
        let q = parse_query(req)?;
        let id = seg(req, "group");
        let st = self.state.read();
        let site = st.site(&ctx.site_id).ok_or_else(site_not_found)?;
        let g = site.groups.get(id).ok_or_else(|| group_not_found(id))?;
        let members = site.members(g);
        let total = members.len();
        let items = page(&members, &q)?;
        // `group_populate_users.xml`
        let els = items
            .iter()
            .map(|u| {
                El::new("user")
                    .attr("id", u.id.clone())
                    .attr("name", u.name.clone())
                    .attr("siteRole", u.site_role.clone())
                    .opt_attr("lastLogin", u.last_login.as_deref())
                    .attr("externalAuthUserId", "")
            })
            .collect();
        Ok((200, vec![pagination(&q, total), El::list("users", els)]))
    }

    fn add_to_group(&self, req: &HttpRequest, body: &[u8]) -> Res {
        let ctx = self.authorize(req, Some("tableau:groups:update"))?;
        let gid = seg(req, "group").to_string();
        let root = body_root(req, body)?;
        // One `<user id>` or, from API 3.21, `<users><user id/>…</users>` [A.5].
        let (bulk, ids): (bool, Vec<String>) = if let Some(users) = root.child("users") {
            (
                true,
                users
                    .children
                    .iter()
                    .filter(|c| c.name == "user")
                    .filter_map(|c| c.attr("id").map(str::to_string))
                    .collect(),
            )
        } else if let Some(id) = root.child("user").and_then(|u| u.attr("id")) {
            (false, vec![id.to_string()])
        } else {
            return Err(bad_request("The user element is missing."));
        };
        if ids.is_empty() {
            return Err(bad_request("No users were given."));
        }
        let mut st = self.state.write();
        let site = st.site_mut(&ctx.site_id).ok_or_else(site_not_found)?;
        let g = site.groups.get(&gid).ok_or_else(|| group_not_found(&gid))?;
        let mut seen = HashSet::new();
        for id in &ids {
            if !site.users.contains_key(id) {
                return Err(user_not_found(id));
            }
            if g.all_users || g.members.contains(id) || !seen.insert(id.clone()) {
                return Err(err(
                    409,
                    "409011",
                    "User conflict",
                    format!("User '{id}' is already a member of group '{}'.", g.name),
                ));
            }
        }
        let els: Vec<El> = ids
            .iter()
            .filter_map(|id| site.users.get(id))
            .map(|u| {
                let el = El::new("user")
                    .attr("id", u.id.clone())
                    .attr("name", u.name.clone())
                    .attr("siteRole", u.site_role.clone());
                if bulk {
                    el
                } else {
                    el.attr("externalAuthUserId", "")
                }
            })
            .collect();
        if let Some(g) = site.groups.get_mut(&gid) {
            g.members.extend(ids);
        }
        if bulk {
            Ok((200, vec![El::list("users", els)]))
        } else {
            Ok((200, els))
        }
    }

    fn remove_from_group(&self, req: &HttpRequest, ids: Vec<String>) -> Res {
        let ctx = self.authorize(req, Some("tableau:groups:update"))?;
        let gid = seg(req, "group").to_string();
        let mut st = self.state.write();
        let site = st.site_mut(&ctx.site_id).ok_or_else(site_not_found)?;
        let g = site.groups.get(&gid).ok_or_else(|| group_not_found(&gid))?;
        for id in &ids {
            if !site.users.contains_key(id) {
                return Err(user_not_found(id));
            }
            if g.all_users {
                return Err(err(
                    400,
                    "400032",
                    "Bad Request",
                    "Users cannot be removed from the 'All Users' group.",
                ));
            }
            if !g.members.contains(id) {
                return Err(err(
                    404,
                    "404002",
                    "Resource Not Found",
                    format!("User '{id}' is not a member of group '{}'.", g.name),
                ));
            }
        }
        if let Some(g) = site.groups.get_mut(&gid) {
            g.members.retain(|m| !ids.contains(m));
        }
        Ok((204, vec![]))
    }

    fn remove_bulk_from_group(&self, req: &HttpRequest, body: &[u8]) -> Res {
        // Authorize first so a missing token wins over a bad body.
        self.authorize(req, Some("tableau:groups:update"))?;
        let root = body_root(req, body)?;
        let ids: Vec<String> = root
            .child("users")
            .map(|u| {
                u.children
                    .iter()
                    .filter_map(|c| c.attr("id").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            return Err(bad_request("No users were given."));
        }
        self.remove_from_group(req, ids)
    }

    fn set_content(&self, req: &HttpRequest) -> HttpResponse {
        let site = seg(req, "site").to_string();
        let user = seg(req, "user").to_string();
        let count = serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
            .ok()
            .and_then(|p| {
                p.into_iter()
                    .find(|(k, _)| k == "count")
                    .and_then(|(_, v)| v.parse::<u32>().ok())
            })
            .unwrap_or(1);
        let mut st = self.state.write();
        match st.site_mut(&site).and_then(|s| s.users.get_mut(&user)) {
            Some(u) => {
                u.owned_content = count;
                HttpResponse::NoContent().finish()
            }
            None => HttpResponse::NotFound().finish(),
        }
    }
}

fn site_not_found() -> TabErr {
    err(
        404,
        "404000",
        "Resource Not Found",
        "The site could not be found.",
    )
}

fn invalid_site_role(role: &str) -> TabErr {
    err(
        400,
        "400013",
        "Invalid site role",
        format!("'{role}' is not a valid site role for this operation."),
    )
}

fn licensing_conflict(role: &str) -> TabErr {
    err(
        409,
        "409014",
        "Licensing conflict",
        format!("There are no licenses left for the site role '{role}'."),
    )
}

fn group_conflict(name: &str) -> TabErr {
    err(
        409,
        "409009",
        "Group name conflict",
        format!("A group named '{name}' already exists on the site."),
    )
}

fn method_not_allowed(req: &HttpRequest) -> HttpResponse {
    error_response(
        response_format(req),
        &err(
            405,
            "405000",
            "Method Not Allowed",
            format!("Method {} is not allowed for this resource.", req.method()),
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Routing

type Data = web::Data<Tableau>;

macro_rules! h {
    ($name:ident, $method:ident) => {
        async fn $name(sim: Data, req: HttpRequest) -> HttpResponse {
            let r = sim.$method(&req);
            finish(&req, r)
        }
    };
    ($name:ident, $method:ident, body) => {
        async fn $name(sim: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
            let r = sim.$method(&req, &body);
            finish(&req, r)
        }
    };
}

h!(h_list_users, list_users);
h!(h_get_user, get_user);
h!(h_add_user, add_user, body);
h!(h_update_user, update_user, body);
h!(h_remove_user, remove_user);
h!(h_groups_for_user, groups_for_user);
h!(h_list_groups, list_groups);
h!(h_create_group, create_group, body);
h!(h_update_group, update_group, body);
h!(h_delete_group, delete_group);
h!(h_users_in_group, users_in_group);
h!(h_add_to_group, add_to_group, body);
h!(h_remove_bulk, remove_bulk_from_group, body);
h!(h_switch_site, switch_site, body);
h!(h_sign_out, sign_out);

async fn h_server_info(sim: Data, req: HttpRequest) -> HttpResponse {
    let r = sim.server_info();
    finish(&req, r)
}

async fn h_sign_in(sim: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let r = sim
        .sign_in(request_format(&req), &body)
        .map(|(els, status)| (status, els));
    finish(&req, r)
}

async fn h_remove_member(sim: Data, req: HttpRequest) -> HttpResponse {
    let id = seg(&req, "user").to_string();
    let r = sim.remove_from_group(&req, vec![id]);
    finish(&req, r)
}

async fn h_set_content(sim: Data, req: HttpRequest) -> HttpResponse {
    sim.set_content(&req)
}

/// `POST /__sim/last_login`: sets `lastLogin` of every user, on any site, whose `name` or `email`
/// is `login` (any case; one person may hold a user on several sites) → 204, 404 when none is.
/// Signing in with a password sets it too.
async fn h_sim_last_login(sim: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let hook = match super::sisense::read_last_login_hook(&req, &body) {
        Ok(h) => h,
        Err(r) => return r,
    };
    // Tableau renders whole seconds in UTC (`2016-08-16T23:17:06Z`, user_get.xml).
    let at = hook.at.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    let mut st = sim.state.write();
    let mut found = false;
    for site in st.sites.iter_mut() {
        for u in site.users.values_mut() {
            if u.name.eq_ignore_ascii_case(&hook.login) || u.email.eq_ignore_ascii_case(&hook.login)
            {
                u.last_login = at.clone();
                found = true;
            }
        }
    }
    if found {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::NotFound().finish()
    }
}

async fn h_405(req: HttpRequest) -> HttpResponse {
    method_not_allowed(&req)
}

impl VendorSim for Sim {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        let data: Data = web::Data::from(self.0.clone());
        let r = |path: &str| web::resource(path).default_service(web::to(h_405));
        cfg.app_data(data)
            .service(
                web::resource("/__sim/tableau/sites/{site}/users/{user}/content")
                    .route(web::put().to(h_set_content)),
            )
            .route("/__sim/last_login", web::post().to(h_sim_last_login))
            .service(r("/api/{v}/serverinfo").route(web::get().to(h_server_info)))
            .service(r("/api/{v}/serverInfo").route(web::get().to(h_server_info)))
            .service(r("/api/{v}/auth/signin").route(web::post().to(h_sign_in)))
            .service(r("/api/{v}/auth/signout").route(web::post().to(h_sign_out)))
            .service(r("/api/{v}/auth/switchSite").route(web::post().to(h_switch_site)))
            .service(
                r("/api/{v}/sites/{site}/users")
                    .route(web::get().to(h_list_users))
                    .route(web::post().to(h_add_user)),
            )
            .service(
                r("/api/{v}/sites/{site}/users/{user}")
                    .route(web::get().to(h_get_user))
                    .route(web::put().to(h_update_user))
                    .route(web::delete().to(h_remove_user)),
            )
            .service(
                r("/api/{v}/sites/{site}/users/{user}/groups")
                    .route(web::get().to(h_groups_for_user)),
            )
            .service(
                r("/api/{v}/sites/{site}/groups")
                    .route(web::get().to(h_list_groups))
                    .route(web::post().to(h_create_group)),
            )
            .service(
                r("/api/{v}/sites/{site}/groups/{group}")
                    .route(web::put().to(h_update_group))
                    .route(web::delete().to(h_delete_group)),
            )
            .service(
                r("/api/{v}/sites/{site}/groups/{group}/users/remove")
                    .route(web::put().to(h_remove_bulk)),
            )
            .service(
                r("/api/{v}/sites/{site}/groups/{group}/users")
                    .route(web::get().to(h_users_in_group))
                    .route(web::post().to(h_add_to_group)),
            )
            .service(
                r("/api/{v}/sites/{site}/groups/{group}/users/{user}")
                    .route(web::delete().to(h_remove_member)),
            );
    }

    fn throttled(&self, _retry_after_s: Option<u64>) -> HttpResponse {
        // Tableau Cloud: 429 / 429000, and no Retry-After header [A.7].
        error_response(
            Format::Xml,
            &err(
                429,
                "429000",
                "Too Many Requests",
                "Too many requests. Please retry later.",
            ),
        )
    }

    fn server_error(&self) -> HttpResponse {
        error_response(
            Format::Xml,
            &err(
                500,
                "500000",
                "Internal Server Error",
                "An unexpected error occurred on the server.",
            ),
        )
    }

    fn not_found(&self) -> HttpResponse {
        // `server_info_404.xml`
        error_response(
            Format::Xml,
            &err(
                404,
                "404003",
                "Resource Not Found",
                "Unknown resource specified in URI.",
            ),
        )
    }
}
