//! The ThoughtSpot connector's own behaviour, against the ThoughtSpot simulator over real
//! sockets (an in-process bridge, a real sled store), one concern per test: sign-in and the
//! Org, token renewal, membership that never wipes, role groups, Orgs from groups, formula
//! variables, ThoughtSpot's error bodies, paging and lookups, and the rate limit. End states
//! are read through ThoughtSpot's own REST API (`Ts`), vendor calls through `/__sim/stats`.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/sim.rs"]
mod simsupport;

use futures_util::StreamExt;
use idp::{create, group, patch_op, urlencode, Idp};
use scim_bridge::config::{
    RoleRule, RoleRules, Secret, TenantConfig, TenantId, ThoughtspotAuth, ThoughtspotOrgGroups,
    Url, VendorConfig,
};
use scim_bridge::engine::Engine;
use scim_bridge::server::RunningServer;
use scim_bridge::sim::{RunningSim, Vendor};
use scim_bridge::store::Store;
use serde_json::{json, Value};
use simsupport::{calls_since, total};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TENANT: &str = "acme-thoughtspot";
const TOKEN: &str = "test-token-thoughtspot-0123456789";
const ADMIN: &str = "tsadmin";
const ADMIN_PASSWORD: &str = "admin";
const SIGN_IN: &str = "POST /api/rest/2.0/auth/token/full";
const DIVISION: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

async fn simulator(switches: &[(&str, &str)], ttl: Option<u64>) -> RunningSim {
    simsupport::spawn_with(Vendor::Thoughtspot, 7, switches, ttl).await
}

fn no_rules() -> RoleRules {
    RoleRules {
        default: None,
        rules: Vec::new(),
    }
}

/// `BI Admins → Analyst`, default `Viewer` (both RBAC roles of the simulator).
fn role_rules() -> RoleRules {
    RoleRules {
        default: Some("Viewer".into()),
        rules: vec![RoleRule {
            group: Some("BI Admins".into()),
            role: "Analyst".into(),
        }],
    }
}

fn tenant(sim_base: &str, org_id: i64, roles: RoleRules) -> TenantConfig {
    TenantConfig {
        id: TenantId::parse(TENANT).unwrap(),
        tokens: vec![Secret::new(TOKEN)],
        jwt_secret: None,
        vendor: VendorConfig::Thoughtspot {
            base_url: Url::parse(&format!("{sim_base}/")).unwrap(),
            username: ADMIN.into(),
            auth: ThoughtspotAuth::Password(Secret::new(ADMIN_PASSWORD)),
            org_id,
            token_validity_s: 3600,
            orgs: None,
            account_type: None,
        },
        roles,
        on_vendor_unavailable: Default::default(),
        attributes: Default::default(),
        dry_run: false,
        sweep: None,
    }
}

fn with_vendor(mut t: TenantConfig, f: impl FnOnce(&mut VendorConfig)) -> TenantConfig {
    f(&mut t.vendor);
    t
}

/// The bridge as `serve` builds it (start-up check, background delivery and observe).
async fn serve(t: TenantConfig, dir: &std::path::Path) -> Result<(RunningServer, Idp), String> {
    let server = bridge::start(&bridge::config(t, dir))
        .await
        .map_err(|e| e.to_string())?;
    let idp = Idp::patient(&bridge::root(&server), TENANT, TOKEN)
        .with_admin(&bridge::admin_root(&server));
    idp.wait_ready().await;
    Ok((server, idp))
}

/// What `serve` says when a tenant cannot start (`None`: it starts; nothing is served).
async fn start_error(t: TenantConfig, dir: &std::path::Path) -> Option<String> {
    bridge::start_error(bridge::config(t, dir)).await
}

/// The bridge with a handle on its engine and no background work: nothing observes or
/// delivers unless the test asks (writes are still delivered inline). The start-up check runs
/// first, as `serve` does.
async fn bridge(t: TenantConfig, dir: &std::path::Path) -> (Arc<Engine>, RunningServer, Idp) {
    use scim_bridge::connector::thoughtspot::{open, preflight};
    let store = Store::open(dir).unwrap();
    let engine = open(&store, &t, 0, None).unwrap();
    let t2 = t.clone();
    let checked = preflight(&t2, 0).await;
    if let Err(problems) = checked {
        panic!("start-up check: {problems:?}");
    }
    match engine.load_roles().await {
        Ok(table) => engine.set_roles(table),
        Err(Ok(problems)) => panic!("rules do not resolve: {problems:?}"),
        Err(Err(e)) => panic!("roles not read: {e}"),
    }
    engine.observe_now().await.unwrap();
    let server = bridge::serve_engine(&t, engine.clone(), store, 2);
    let idp = Idp::patient(&bridge::root(&server), TENANT, TOKEN)
        .with_admin(&bridge::admin_root(&server));
    (engine, server, idp)
}

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Given", "familyName": "Family"},
        "displayName": format!("User {name}"),
        "emails": [{"value": name, "type": "work", "primary": true}],
        "active": true
    })
}

async fn remove_member(idp: &Idp, g: &str, u: &str) {
    idp.patch_ok(
        &format!("/Groups/{g}"),
        json!([{"op": "remove", "path": format!("members[value eq \"{u}\"]")}]),
    )
    .await;
}

async fn add_member(idp: &Idp, g: &str, u: &str) {
    idp.patch_ok(
        &format!("/Groups/{g}"),
        json!([{"op": "add", "path": "members", "value": [{"value": u}]}]),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// ThoughtSpot's own API, as an administrator at the console would use it.
// ---------------------------------------------------------------------------------------------

struct Ts {
    base: String,
    http: reqwest::Client,
    token: parking_lot::Mutex<String>,
}

impl Ts {
    async fn login(base: &str) -> Ts {
        let ts = Ts {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .user_agent("thoughtspot-connector-tests")
                .build()
                .unwrap(),
            token: parking_lot::Mutex::new(String::new()),
        };
        ts.sign_in().await;
        ts
    }

    async fn sign_in(&self) {
        let (s, v) = self
            .raw(
                "auth/token/full",
                json!({"username": ADMIN, "password": ADMIN_PASSWORD, "org_id": 0,
                       "validity_time_in_sec": 3600}),
            )
            .await;
        assert_eq!(s, 200, "admin sign-in: {v}");
        *self.token.lock() = v["token"].as_str().unwrap().to_string();
    }

    async fn raw(&self, rest: &str, body: Value) -> (u16, Value) {
        let token = self.token.lock().clone();
        let mut rb = self
            .http
            .post(format!("{}/api/rest/2.0/{rest}", self.base))
            .json(&body);
        if !token.is_empty() {
            rb = rb.bearer_auth(token);
        }
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            s,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A POST under `/api/rest/2.0/`, signed in again when the token ran out.
    async fn call(&self, rest: &str, body: Value) -> (u16, Value) {
        let (s, v) = self.raw(rest, body.clone()).await;
        if s != 401 {
            return (s, v);
        }
        self.sign_in().await;
        self.raw(rest, body).await
    }

    async fn ok(&self, rest: &str, body: Value) -> Value {
        let (s, v) = self.call(rest, body).await;
        assert!((200..300).contains(&s), "{rest}: {s} {v}");
        v
    }

    async fn user(&self, name: &str) -> Option<Value> {
        let v = self
            .ok(
                "users/search",
                json!({"user_identifier": name, "record_size": 10}),
            )
            .await;
        v.as_array().and_then(|a| a.first().cloned())
    }

    async fn user_count(&self) -> usize {
        self.ok("users/search", json!({"record_size": -1}))
            .await
            .as_array()
            .map_or(0, Vec::len)
    }

    async fn create_user(&self, name: &str, password: Option<&str>) -> String {
        let mut body =
            json!({"name": name, "display_name": name, "email": format!("{name}@hand.test")});
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        self.ok("users/create", body).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn group(&self, name: &str) -> Option<Value> {
        let v = self
            .ok(
                "groups/search",
                json!({"group_identifier": name, "include_users": true, "record_size": 10}),
            )
            .await;
        v.as_array().and_then(|a| a.first().cloned())
    }

    /// Member names of a group (none when the group does not exist).
    async fn members(&self, name: &str) -> BTreeSet<String> {
        self.group(name)
            .await
            .and_then(|g| g["users"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|u| u["name"].as_str().map(str::to_lowercase))
            .collect()
    }

    async fn org_names(&self) -> BTreeSet<String> {
        self.ok("orgs/search", json!({}))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|o| o["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Names of the Orgs a user is in.
    async fn orgs_of(&self, user: &str) -> BTreeSet<String> {
        self.user(user)
            .await
            .unwrap_or_else(|| panic!("no user {user}"))["orgs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|o| o["name"].as_str().map(str::to_string))
            .collect()
    }

    /// A user's values of a formula variable (in any scope naming the user).
    async fn variable_values(&self, var: &str, user: &str) -> Vec<String> {
        let v = self
            .ok(
                "template/variables/search",
                json!({"variable_details": [{"identifier": var}],
                       "response_content": "METADATA_AND_VALUES", "record_size": 10}),
            )
            .await;
        let mut out = Vec::new();
        for var in v.as_array().cloned().unwrap_or_default() {
            for val in var["values"].as_array().cloned().unwrap_or_default() {
                let who = val["principal_identifier"].as_str().unwrap_or_default();
                if val["principal_type"] == "USER" && who.eq_ignore_ascii_case(user) {
                    if let Some(l) = val["value_list"].as_array() {
                        out.extend(l.iter().filter_map(|x| x.as_str().map(str::to_string)));
                    }
                    if let Some(one) = val["value"].as_str() {
                        out.push(one.to_string());
                    }
                }
            }
        }
        out
    }
}

/// Waits (delivering what is due) until `check` holds; panics with `what` after 10 s.
async fn eventually<F, Fut>(engine: &Arc<Engine>, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        engine.deliver_due().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------

/// A tenant whose Org does not exist, or whose user is not in it, does not start: the start-up
/// error names the key path, the configured Org and ThoughtSpot's reason (never the password);
/// a tenant of the Primary Org (0) starts and provisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_org_stops_the_start() {
    let sim = simulator(&[], None).await;
    let base = sim.base_url();
    let ts = Ts::login(&base).await;
    let dir = tempfile::tempdir().unwrap();

    let e = start_error(tenant(&base, 42, no_rules()), dir.path())
        .await
        .expect("a tenant of an Org that does not exist does not start");
    assert!(e.contains("tenants[0].vendor.password"), "{e}");
    assert!(e.contains("org_id 42"), "{e}");
    assert!(
        e.contains("valid or accessible org"),
        "ThoughtSpot's reason: {e}"
    );

    // A user of the Primary Org only, and an Org it is not in.
    let other = ts
        .ok("orgs/create", json!({"name": "other", "description": "x"}))
        .await["id"]
        .as_i64()
        .unwrap();
    ts.create_user("pat", Some("pat-password-4711")).await;
    let t = with_vendor(tenant(&base, other, no_rules()), |v| {
        if let VendorConfig::Thoughtspot { username, auth, .. } = v {
            *username = "pat".into();
            *auth = ThoughtspotAuth::Password(Secret::new("pat-password-4711"));
        }
    });
    let e = start_error(t, dir.path())
        .await
        .expect("a tenant whose user is not in its Org does not start");
    assert!(e.contains("tenants[0].vendor.password"), "{e}");
    assert!(e.contains(&format!("org_id {other}")), "{e}");
    assert!(e.contains("valid or accessible org"), "{e}");
    assert!(!e.contains("pat-password-4711"), "no secret in errors: {e}");

    let (server, idp) = serve(tenant(&base, 0, no_rules()), dir.path())
        .await
        .expect("a tenant of Org 0 starts");
    create(&idp, "/Users", user("ok@acme.test")).await;
    let made = ts.user("ok@acme.test").await.expect("created");
    assert_eq!(
        made["account_type"], "LOCAL_USER",
        "ThoughtSpot's default type"
    );
    server.stop().await;
    // Trusted authentication (the secret key) for Org 0 starts too, and `account_type` makes
    // SSO users.
    let t = with_vendor(tenant(&base, 0, no_rules()), |v| {
        if let VendorConfig::Thoughtspot {
            auth, account_type, ..
        } = v
        {
            *auth = ThoughtspotAuth::SecretKey(Secret::new("simulator-secret-key"));
            *account_type = Some(scim_bridge::config::ThoughtspotAccountType::Saml);
        }
    });
    let dir2 = tempfile::tempdir().unwrap();
    let (server, idp) = serve(t, dir2.path())
        .await
        .expect("a secret-key tenant starts");
    create(&idp, "/Users", user("sso@acme.test")).await;
    let made = ts.user("sso@acme.test").await.expect("created");
    assert_eq!(made["account_type"], "SAML_USER");
    server.stop().await;
    sim.stop().await;
}

/// ThoughtSpot grants 3-second tokens (the bridge asks 60): over ~10 s of writes the bridge
/// signs in again before each runs out — several sign-ins, one at a time however many writes
/// run at once — and no write is answered 401 and sent again (each create costs exactly its
/// one `users/create`; the simulator's stats count requests, not statuses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_tokens_are_renewed_before_they_run_out() {
    let sim = simulator(&[], Some(3)).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let t = with_vendor(tenant(&base, 0, no_rules()), |v| {
        if let VendorConfig::Thoughtspot {
            token_validity_s, ..
        } = v
        {
            *token_validity_s = 60;
        }
    });
    let (_engine, _server, idp) = bridge(t, dir.path()).await;
    let before = simsupport::stats(&base).await;
    let started = Instant::now();
    let mut created = 0u64;
    // Four creates at once every ~250 ms: renewals are single-flight too.
    while started.elapsed() < Duration::from_secs(10) {
        let batch = (created..created + 4).map(|i| {
            let idp = &idp;
            async move { create(idp, "/Users", user(&format!("t{i}@acme.test"))).await }
        });
        futures_util::future::join_all(batch).await;
        created += 4;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let c = calls_since(&base, &before).await;
    let sign_ins = c.get(SIGN_IN).copied().unwrap_or(0);
    // 10 s of 3 s tokens renewed at 80 %: about four; a sign-in per request would be dozens.
    assert!(
        (3..=6).contains(&sign_ins),
        "{sign_ins} sign-ins for {created} creates over 10 s: {c:?}"
    );
    let creates = c
        .get("POST /api/rest/2.0/users/create")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        creates, created,
        "a create answered 401 is sent twice (token used past its expiry): {c:?}"
    );
    assert_eq!(
        total(&c) - sign_ins,
        created,
        "nothing but the creates and the sign-ins: {c:?}"
    );
    let ts = Ts::login(&base).await;
    assert_eq!(ts.user_count().await as u64, created + 1);

    sim.stop().await;

    // A token revoked at ThoughtSpot (a 401 long before it runs out): one sign-in, the write
    // sent again once, and it succeeds.
    let sim = simulator(&[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let (_engine, _server, idp) = bridge(tenant(&base, 0, no_rules()), dir.path()).await;
    create(&idp, "/Users", user("before-revoke@acme.test")).await;
    let ts = Ts::login(&base).await;
    ts.ok("auth/token/revoke", json!({"user_identifier": ADMIN}))
        .await;
    ts.sign_in().await;
    let before = simsupport::stats(&base).await;
    create(&idp, "/Users", user("after-revoke@acme.test")).await;
    let c = calls_since(&base, &before).await;
    assert_eq!(c.get(SIGN_IN), Some(&1), "{c:?}");
    assert_eq!(c.get("POST /api/rest/2.0/users/create"), Some(&2), "{c:?}");
    assert!(ts.user("after-revoke@acme.test").await.is_some());
    sim.stop().await;
}

/// The bridge changes a group's membership only with ADD / REMOVE: a member added by hand in
/// ThoughtSpot survives the IdP adding and removing others (PATCH and PUT) and an observe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_never_wipe_other_members() {
    let sim = simulator(&[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _server, idp) = bridge(tenant(&base, 0, no_rules()), dir.path()).await;
    let ts = Ts::login(&base).await;
    let a = create(&idp, "/Users", user("a@acme.test")).await;
    let b = create(&idp, "/Users", user("b@acme.test")).await;
    let c = create(&idp, "/Users", user("c@acme.test")).await;
    let fin = create(&idp, "/Groups", group("Finance", &[&a])).await;
    let fin_vendor = ts.group("Finance").await.expect("group mirrored")["id"]
        .as_str()
        .unwrap()
        .to_string();
    ts.create_user("hand", None).await;
    ts.ok(
        &format!("groups/{fin_vendor}/update"),
        json!({"user_identifiers": ["hand"], "operation": "ADD"}),
    )
    .await;
    let want =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    assert_eq!(ts.members("Finance").await, want(&["a@acme.test", "hand"]));

    add_member(&idp, &fin, &b).await;
    assert_eq!(
        ts.members("Finance").await,
        want(&["a@acme.test", "b@acme.test", "hand"])
    );
    remove_member(&idp, &fin, &a).await;
    assert_eq!(ts.members("Finance").await, want(&["b@acme.test", "hand"]));
    let (s, v) = idp
        .put(&format!("/Groups/{fin}"), group("Finance", &[&b, &c]))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        ts.members("Finance").await,
        want(&["b@acme.test", "c@acme.test", "hand"])
    );
    engine.observe_now().await.unwrap();
    engine.deliver_due().await;
    assert_eq!(
        ts.members("Finance").await,
        want(&["b@acme.test", "c@acme.test", "hand"]),
        "an observe leaves the hand-added member alone"
    );
    sim.stop().await;
}

const ANALYST: &str = "scim-bridge role Analyst";
const VIEWER: &str = "scim-bridge role Viewer";

/// Which of the bridge's role groups `user` is in.
async fn role_of(ts: &Ts, user: &str) -> &'static str {
    let a = ts.members(ANALYST).await.contains(user);
    let v = ts.members(VIEWER).await.contains(user);
    match (a, v) {
        (true, false) => "Analyst",
        (false, true) => "Viewer",
        (false, false) => "none",
        (true, true) => "both",
    }
}

/// Roles through groups: a user is in exactly one of the bridge's role groups, Viewer by
/// default and Analyst while in BI Admins; ThoughtSpot's All and Administrator groups are never
/// changed; a SCIM group may not take over a built-in or a role group (409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_groups_follow_the_rules() {
    let sim = simulator(&[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let ts = Ts::login(&base).await;
    let builtin = |g: Value| {
        json!({"name": g["name"], "modified": g["modification_time_in_millis"],
               "privileges": g["privileges"], "roles": g["roles"], "description": g["description"],
               "users": if g["name"] == "All" { Value::Null } else { g["users"].clone() }})
    };
    let all_before = builtin(ts.group("All").await.unwrap());
    let admins_before = builtin(ts.group("Administrator").await.unwrap());

    let (engine, _server, idp) = bridge(tenant(&base, 0, role_rules()), dir.path()).await;
    let ada = create(&idp, "/Users", user("ada@acme.test")).await;
    assert_eq!(role_of(&ts, "ada@acme.test").await, "Viewer");
    let admins = create(&idp, "/Groups", group("BI Admins", &[&ada])).await;
    assert_eq!(role_of(&ts, "ada@acme.test").await, "Analyst");
    assert!(ts.members("BI Admins").await.contains("ada@acme.test"));
    let role_group = ts.group(ANALYST).await.unwrap();
    assert_eq!(role_group["roles"][0]["name"], "Analyst", "{role_group}");
    remove_member(&idp, &admins, &ada).await;
    assert_eq!(role_of(&ts, "ada@acme.test").await, "Viewer");
    add_member(&idp, &admins, &ada).await;
    assert_eq!(role_of(&ts, "ada@acme.test").await, "Analyst");
    engine.observe_now().await.unwrap();
    engine.deliver_due().await;
    assert_eq!(
        role_of(&ts, "ada@acme.test").await,
        "Analyst",
        "an observe keeps the role"
    );
    remove_member(&idp, &admins, &ada).await;
    assert_eq!(role_of(&ts, "ada@acme.test").await, "Viewer");
    // Put in the Analyst group by hand as well: the next observe leaves exactly the rules' one.
    let analyst_id = ts.group(ANALYST).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    ts.ok(
        &format!("groups/{analyst_id}/update"),
        json!({"user_identifiers": ["ada@acme.test"], "operation": "ADD"}),
    )
    .await;
    assert_eq!(role_of(&ts, "ada@acme.test").await, "both");
    engine.observe_now().await.unwrap();
    engine.deliver_due().await;
    assert_eq!(role_of(&ts, "ada@acme.test").await, "Viewer");

    for name in ["All", "administrator", ANALYST, "scim-bridge role viewer"] {
        let (s, v) = idp.post("/Groups", group(name, &[&ada])).await;
        assert_eq!(s, 409, "{name}: {v}");
        assert!(idp.find_group(name).await.is_none(), "{name} not adopted");
    }
    let bi = idp.find_group("BI Admins").await.unwrap();
    let (s, v) = idp
        .patch(
            &format!("/Groups/{}", bi["id"].as_str().unwrap()),
            patch_op(json!([{"op": "replace", "path": "displayName", "value": "All"}])),
        )
        .await;
    assert!(s == 409 || s == 400, "renamed into All: {s} {v}");
    assert_eq!(builtin(ts.group("All").await.unwrap()), all_before);
    assert_eq!(
        builtin(ts.group("Administrator").await.unwrap()),
        admins_before
    );
    assert_eq!(role_of(&ts, "ada@acme.test").await, "Viewer");
    sim.stop().await;
}

/// `org_group_pattern = "org-*"`: the SCIM group `org-acme` is the Org `acme`, created when
/// missing; its members are the Org's members; deleting the group keeps the Org without the
/// members. Without `create_orgs` a group for a missing Org is refused (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_groups_drive_org_membership() {
    let sim = simulator(&[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let orgs = |create: bool| {
        with_vendor(tenant(&base, 0, no_rules()), move |v| {
            if let VendorConfig::Thoughtspot { orgs, .. } = v {
                *orgs = Some(ThoughtspotOrgGroups {
                    pattern: "org-*".into(),
                    create,
                });
            }
        })
    };
    let (_engine, _server, idp) = bridge(orgs(true), dir.path()).await;
    let ts = Ts::login(&base).await;
    let a = create(&idp, "/Users", user("a@acme.test")).await;
    let b = create(&idp, "/Users", user("b@acme.test")).await;
    let g = create(&idp, "/Groups", group("org-acme", &[&a, &b])).await;
    assert!(ts.org_names().await.contains("acme"), "Org created");
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    assert_eq!(ts.orgs_of("a@acme.test").await, set(&["Primary", "acme"]));
    assert_eq!(ts.orgs_of("b@acme.test").await, set(&["Primary", "acme"]));
    assert!(
        ts.group("org-acme").await.is_none(),
        "an Org group is no ThoughtSpot group"
    );

    remove_member(&idp, &g, &b).await;
    assert_eq!(ts.orgs_of("b@acme.test").await, set(&["Primary"]));
    assert_eq!(ts.orgs_of("a@acme.test").await, set(&["Primary", "acme"]));

    // An Org group is not renamed into another Org, nor a group into an Org.
    let (s, v) = idp
        .patch(
            &format!("/Groups/{g}"),
            patch_op(json!([{"op": "replace", "path": "displayName", "value": "org-beta"}])),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let plain = create(&idp, "/Groups", group("Finance", &[])).await;
    let (s, v) = idp
        .patch(
            &format!("/Groups/{plain}"),
            patch_op(json!([{"op": "replace", "path": "displayName", "value": "org-gamma"}])),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let orgs_now = ts.org_names().await;
    assert!(
        !orgs_now.contains("beta") && !orgs_now.contains("gamma"),
        "{orgs_now:?}"
    );

    let (s, v) = idp.delete(&format!("/Groups/{g}")).await;
    assert_eq!(s, 204, "{v}");
    assert!(ts.org_names().await.contains("acme"), "the Org stays");
    assert_eq!(ts.orgs_of("a@acme.test").await, set(&["Primary"]));
    assert!(ts.user("b@acme.test").await.is_some());

    // Without create_orgs: refused, nothing created.
    let dir2 = tempfile::tempdir().unwrap();
    let (_engine2, _server2, idp2) = bridge(orgs(false), dir2.path()).await;
    let (s, v) = idp2.post("/Groups", group("org-missing", &[])).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["detail"].as_str().unwrap_or_default().contains("missing"),
        "names the Org: {v}"
    );
    assert!(!ts.org_names().await.contains("missing"));
    // An existing Org is fine without create_orgs.
    create(&idp2, "/Groups", group("org-acme", &[])).await;
    sim.stop().await;
}

/// `[tenants.attributes] region = "…:division"`: the user's value of the formula variable is
/// set on create, changed on change and cleared when the IdP removes the attribute; a mapped
/// variable ThoughtSpot does not have stops the start with its key path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formula_variables_follow_the_attribute() {
    let sim = simulator(&[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let mapped = |name: &str| {
        let mut t = tenant(&base, 0, no_rules());
        t.attributes.insert(name.to_string(), DIVISION.to_string());
        t
    };
    let (engine, _server, idp) = bridge(mapped("region"), dir.path()).await;
    let ts = Ts::login(&base).await;
    let mut body = user("ada@acme.test");
    body["schemas"]
        .as_array_mut()
        .unwrap()
        .push(json!(ENTERPRISE));
    body[ENTERPRISE] = json!({"division": "EMEA"});
    let ada = create(&idp, "/Users", body).await;
    let ts = &ts;
    eventually(&engine, "region = EMEA", || async move {
        ts.variable_values("region", "ada@acme.test").await == ["EMEA"]
    })
    .await;

    idp.patch_ok(
        &format!("/Users/{ada}"),
        json!([{"op": "replace", "path": DIVISION, "value": "APAC"}]),
    )
    .await;
    eventually(&engine, "region = APAC", || async move {
        ts.variable_values("region", "ada@acme.test").await == ["APAC"]
    })
    .await;
    // An observe reads the value back and finds nothing to write.
    let before = simsupport::stats(&base).await;
    engine.observe_now().await.unwrap();
    engine.deliver_due().await;
    let c = calls_since(&base, &before).await;
    assert!(
        c.keys().all(|r| !r.contains("update")),
        "an observe rewrites a value it just read: {c:?}"
    );

    idp.patch_ok(
        &format!("/Users/{ada}"),
        json!([{"op": "remove", "path": DIVISION}]),
    )
    .await;
    eventually(&engine, "region cleared", || async move {
        ts.variable_values("region", "ada@acme.test")
            .await
            .is_empty()
    })
    .await;
    // An observe reads the (absent) value back and changes nothing.
    engine.observe_now().await.unwrap();
    engine.deliver_due().await;
    assert!(ts
        .variable_values("region", "ada@acme.test")
        .await
        .is_empty());
    sim.stop().await;
}

/// A mapped formula variable ThoughtSpot does not have stops the start with its key path,
/// whatever a search that finds nothing answers: `[]`, a 400, or (both UNVERIFIED [B.4]) the
/// not-found status 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_variable_stops_the_start() {
    for switches in [
        &[][..],
        &[("thoughtspot.search_miss", "error")][..],
        &[
            ("thoughtspot.search_miss", "error"),
            ("thoughtspot.not_found_status", "404"),
        ][..],
    ] {
        let sim = simulator(switches, None).await;
        let base = sim.base_url();
        let dir = tempfile::tempdir().unwrap();
        let mut t = tenant(&base, 0, role_rules());
        t.attributes.insert("regoin".into(), DIVISION.into());
        let e = start_error(t, dir.path()).await;
        let e = e.unwrap_or_else(|| panic!("{switches:?}: a missing variable stops the start"));
        assert!(
            e.contains("tenants[0].attributes.regoin"),
            "{switches:?}: {e}"
        );
        assert!(e.contains("no formula variable"), "{switches:?}: {e}");
        sim.stop().await;
    }
}

/// A ThoughtSpot refusal (a group renamed to a name another ThoughtSpot group has) reaches the
/// IdP as a SCIM 4xx whose `detail` carries ThoughtSpot's message, in both error body forms,
/// never as a 5xx and never with the raw body or incident ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_refusals_are_scim_4xx_with_thoughtspots_message() {
    for form in ["nested", "flat"] {
        let sim = simulator(&[("thoughtspot.error_form", form)], None).await;
        let base = sim.base_url();
        let dir = tempfile::tempdir().unwrap();
        let (_engine, _server, idp) = bridge(tenant(&base, 0, no_rules()), dir.path()).await;
        let ts = Ts::login(&base).await;
        ts.ok(
            "groups/create",
            json!({"name": "Sales", "display_name": "Sales"}),
        )
        .await;
        let fin = create(&idp, "/Groups", group("Finance", &[])).await;
        let (s, v) = idp
            .patch(
                &format!("/Groups/{fin}"),
                patch_op(json!([{"op": "replace", "path": "displayName", "value": "Sales"}])),
            )
            .await;
        assert!((400..500).contains(&s), "{form}: {s} {v}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("Group with name Sales already exists"),
            "{form}: ThoughtSpot's message: {v}"
        );
        assert!(
            !detail.contains("Incident")
                && !detail.contains("incident_id")
                && !detail.contains('{'),
            "{form}: no raw body: {detail}"
        );
        assert!(ts.group("Finance").await.is_some(), "{form}: unchanged");
        // A user renamed to a name another ThoughtSpot user has.
        ts.create_user("taken@acme.test", None).await;
        let ada = create(&idp, "/Users", user("ada@acme.test")).await;
        let (s, v) = idp
            .patch(
                &format!("/Users/{ada}"),
                patch_op(
                    json!([{"op": "replace", "path": "userName", "value": "taken@acme.test"}]),
                ),
            )
            .await;
        assert!((400..500).contains(&s), "{form}: {s} {v}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("User with name taken@acme.test already exists"),
            "{form}: {v}"
        );
        assert!(
            ts.user("ada@acme.test").await.is_some(),
            "{form}: not renamed"
        );
        // A refused sign-in names ThoughtSpot's reason in either form too.
        let dir2 = tempfile::tempdir().unwrap();
        let e = start_error(tenant(&base, 42, no_rules()), dir2.path())
            .await
            .expect("refused");
        assert!(
            e.contains("code 10002") && e.contains("valid or accessible org"),
            "{form}: {e}"
        );
        sim.stop().await;
    }
}

/// 1,050 users made in ThoughtSpot (more than one 1,000-user page) are all seen by an observe;
/// afterwards a SCIM lookup of the last one, by filter or by id, costs no vendor call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_pages_past_a_thousand_and_lookups_cost_nothing() {
    const N: usize = 1050;
    let sim = simulator(&[("thoughtspot.rate_limit_rps", "0")], None).await;
    let base = sim.base_url();
    let ts = Ts::login(&base).await;
    let ts = &ts;
    futures_util::stream::iter(0..N)
        .map(|i| async move {
            ts.ok(
                "users/create",
                json!({"name": format!("bulk{i:04}@acme.test"), "display_name": format!("Bulk {i}"),
                       "email": format!("bulk{i:04}@acme.test")}),
            )
            .await;
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (engine, _server, idp) = bridge(tenant(&base, 0, no_rules()), dir.path()).await;
    let report = engine.observe_now().await.unwrap();
    assert!(report.users_seen > N, "{report:?}");

    let last = format!("bulk{:04}@acme.test", N - 1);
    let before = simsupport::stats(&base).await;
    let found = idp.find_user(&last).await.expect("the last user is known");
    let id = found["id"].as_str().unwrap();
    let (s, v) = idp.get(&format!("/Users/{id}")).await;
    assert_eq!(
        (s, v["userName"].as_str()),
        (200, Some(last.as_str())),
        "{v}"
    );
    let (s, v) = idp
        .get(&format!(
            "/Users?filter={}",
            urlencode("userName eq \"bulk0000@acme.test\"")
        ))
        .await;
    assert_eq!((s, v["totalResults"].as_u64()), (200, Some(1)), "{v}");
    let (_, v) = idp.get("/Users?startIndex=1&count=1").await;
    assert!(v["totalResults"].as_u64().unwrap() > N as u64, "{v}");
    let c = calls_since(&base, &before).await;
    assert_eq!(total(&c), 0, "lookups cost no vendor call: {c:?}");
    sim.stop().await;
}

/// ThoughtSpot's limit (100 requests a second, burst 10): a burst of 300 SCIM creates, 30 at a
/// time, all succeed and all users are there; the bridge stays under the limit (at most a few
/// creates answered 429 and sent again) and is not slower than the limit demands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_creates_stays_under_the_rate_limit() {
    const N: usize = 300;
    let sim = simulator(&[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _server, idp) = bridge(tenant(&base, 0, no_rules()), dir.path()).await;
    let before = simsupport::stats(&base).await;
    let started = Instant::now();
    let idp = &idp;
    // Raw requests: the bridge's own 429 / 503 answers are counted, then sent again.
    let answers: Vec<(u16, usize)> = futures_util::stream::iter(0..N)
        .map(|i| async move {
            let mut pushed_back = 0;
            loop {
                let r = idp
                    .http
                    .post(format!("{}/Users", idp.base))
                    .bearer_auth(&idp.token)
                    .header("content-type", "application/scim+json")
                    .body(user(&format!("r{i:03}@acme.test")).to_string())
                    .send()
                    .await
                    .unwrap();
                let s = r.status().as_u16();
                if (s == 429 || s == 503) && pushed_back < 20 {
                    pushed_back += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
                return (s, pushed_back);
            }
        })
        .buffer_unordered(30)
        .collect()
        .await;
    let took = started.elapsed();
    let statuses: BTreeMap<u16, usize> = answers.iter().fold(BTreeMap::new(), |mut m, (s, _)| {
        *m.entry(*s).or_default() += 1;
        m
    });
    let pushed_back: usize = answers.iter().map(|(_, n)| n).sum();
    assert_eq!(statuses.get(&201), Some(&N), "{statuses:?}");
    engine.deliver_due().await;
    let c = calls_since(&base, &before).await;
    let creates = c
        .get("POST /api/rest/2.0/users/create")
        .copied()
        .unwrap_or(0);
    assert!(
        creates >= N as u64 && creates <= N as u64 + 15,
        "{} creates answered 429 and sent again: {c:?}",
        creates.saturating_sub(N as u64)
    );
    assert!(
        pushed_back <= 15,
        "{pushed_back} SCIM requests pushed back with 429/503"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let ts = Ts::login(&base).await;
    assert_eq!(ts.user_count().await, N + 1, "every user is there");
    sim.stop().await;
}
