//! The IdP side of the connector tests, the same for every vendor: a SCIM client of one tenant
//! (`Idp`), the Okta and the Entra ID sequences with hooks for the caller's vendor checks, their
//! expected end state in vendor-neutral terms (`Expected`, with the vendor's role names as a
//! parameter), and the helpers of the runs that start processes (`ChildGuard`, `free_port`,
//! `simulator_process`, `sim_route_count`, `retry`, `run_variants`).
//!
//! Included by path, e.g. `#[path = "support/idp.rs"] mod idp;`, beside the vendor-neutral
//! `bridge.rs` (the bridge in this process, `settle`) and `chaos.rs` (freeze, SIGKILL) and the
//! vendor's own `*_api.rs`. Nothing here knows a vendor: each vendor's test reads its vendor's
//! state through the vendor's own API and maps it to [`Account`]s.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The enterprise extension, and its `division` (the attribute the vendor runs map to a
/// row-level-security attribute).
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const DIVISION_PATH: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division";

/// The longest a checked IdP request may take.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(15);

pub fn patch_op(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

/// A SCIM Group named `name` with the members `members` (the bridge's ids).
pub fn group(name: &str, members: &[&str]) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": name,
        "members": members.iter().map(|m| json!({"value": m})).collect::<Vec<_>>(),
    })
}

/// POSTs `body` to `path` (`/Users`, `/Groups`) as `idp`, which must answer 201: the new id.
pub async fn create(idp: &Idp, path: &str, body: Value) -> String {
    let (s, v) = idp.post(path, body).await;
    assert_eq!(s, 201, "{path}: {v}");
    v["id"].as_str().unwrap().to_string()
}

pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

// ---------------------------------------------------------------------------------------------
// The IdP's SCIM client.
// ---------------------------------------------------------------------------------------------

/// How the client treats the bridge's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// An acceptance run's IdP: every request is timed and recorded; a 5xx, no answer, or an
    /// answer slower than [`REQUEST_LIMIT`] fails the test. A 429 is retried after its
    /// `Retry-After` (1–5 s), as Okta and Entra do, each attempt checked on its own; a 503 is
    /// never retried (that would hide a 5xx).
    Checked,
    /// A test's helper: 429 and 503 are retried after `Retry-After` (capped, 200 times at most),
    /// a request without an answer is sent again; nothing is timed or recorded.
    Patient,
}

/// One request of a checked client.
pub struct Call {
    pub what: String,
    pub status: u16,
    pub took: Duration,
    pub at: Instant,
}

/// A SCIM client of one tenant of the bridge, as an IdP uses it.
#[derive(Clone)]
pub struct Idp {
    /// Names the run in every failure message.
    pub label: String,
    /// The bridge's public listener (`http://host:port`): SCIM, `/healthz`, bare `/readyz`.
    pub root: String,
    /// The bridge's admin listener (`/metrics`, detailed `/readyz`), once [`Idp::with_admin`]
    /// named it: since issue 15 the public listener serves neither.
    admin_root: Option<String>,
    /// The tenant's SCIM base URL.
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    policy: Policy,
    calls: Arc<Mutex<Vec<Call>>>,
    last_write: Arc<Mutex<Option<Instant>>>,
}

impl Idp {
    /// A [`Policy::Checked`] client of `tenant` at the bridge `root`.
    pub fn checked(root: &str, tenant: &str, token: &str, label: &str) -> Idp {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_LIMIT + Duration::from_secs(5))
            .build()
            .unwrap();
        Idp::with(root, tenant, token, label, Policy::Checked, http)
    }

    /// A [`Policy::Patient`] client of `tenant` at the bridge `root`.
    pub fn patient(root: &str, tenant: &str, token: &str) -> Idp {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(32)
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        Idp::with(root, tenant, token, tenant, Policy::Patient, http)
    }

    fn with(
        root: &str,
        tenant: &str,
        token: &str,
        label: &str,
        policy: Policy,
        http: reqwest::Client,
    ) -> Idp {
        Idp {
            label: label.to_string(),
            root: root.to_string(),
            admin_root: None,
            base: format!("{root}/tenants/{tenant}/scim/v2"),
            token: token.to_string(),
            http,
            policy,
            calls: Arc::default(),
            last_write: Arc::default(),
        }
    }

    /// This client, knowing the bridge's admin listener at `admin_root` (`http://host:port`).
    pub fn with_admin(mut self, admin_root: &str) -> Idp {
        self.admin_root = Some(admin_root.to_string());
        self
    }

    /// The bridge's admin listener, where `/metrics` and the detailed readiness are served.
    pub fn admin_root(&self) -> &str {
        self.admin_root.as_deref().unwrap_or_else(|| {
            panic!(
                "{}: this client was built without the bridge's admin listener (Idp::with_admin)",
                self.label
            )
        })
    }

    /// One request, retried as the [`Policy`] says.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let label = &self.label;
        let checked = self.policy == Policy::Checked;
        let attempts = if checked { 60 } else { 201 };
        for attempt in 0..attempts {
            let mut rb = self
                .http
                .request(method.clone(), format!("{}{}", self.base, path))
                .bearer_auth(&self.token)
                .header("content-type", "application/scim+json");
            if let Some(b) = &body {
                rb = rb.body(b.to_string());
            }
            let started = Instant::now();
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(_) if !checked && attempt < attempts - 1 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => panic!(
                    "{label}: {method} {path}: no answer after {:?}: {e}",
                    started.elapsed()
                ),
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let text = resp.text().await.unwrap_or_default();
            let took = started.elapsed();
            if checked {
                self.calls.lock().unwrap().push(Call {
                    what: format!("{method} {path}"),
                    status,
                    took,
                    at: started,
                });
                if method != reqwest::Method::GET {
                    *self.last_write.lock().unwrap() = Some(Instant::now());
                }
                assert!(
                    status < 500,
                    "{label}: {method} {path} answered {status} after {took:?}: {text}"
                );
                assert!(
                    took < REQUEST_LIMIT,
                    "{label}: {method} {path} answered {status} after {took:?} (limit {REQUEST_LIMIT:?})"
                );
            }
            let v: Value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            if checked && status == 429 {
                let wait = retry_after.unwrap_or(1).clamp(1, 5);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            if !checked && (status == 429 || status == 503) && attempt < attempts - 1 {
                let wait = retry_after.unwrap_or(1).min(2);
                tokio::time::sleep(Duration::from_millis(wait * 250 + 50)).await;
                continue;
            }
            return (status, v);
        }
        panic!("{label}: {method} {path}: throttled {attempts} times in a row");
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// A PATCH with these operations, which must answer 200: the resource.
    pub async fn patch_ok(&self, path: &str, ops: Value) -> Value {
        let (s, v) = self.patch(path, patch_op(ops)).await;
        assert_eq!(s, 200, "{}: PATCH {path}: {v}", self.label);
        v
    }

    pub async fn find_user(&self, user_name: &str) -> Option<Value> {
        let q = format!(
            "/Users?filter={}&startIndex=1&count=100",
            urlencode(&format!("userName eq \"{user_name}\""))
        );
        let (s, v) = self.get(&q).await;
        assert_eq!(s, 200, "{}: lookup {user_name}: {v}", self.label);
        v["Resources"].as_array().and_then(|a| a.first().cloned())
    }

    pub async fn find_group(&self, name: &str) -> Option<Value> {
        let q = format!(
            "/Groups?filter={}&excludedAttributes=members",
            urlencode(&format!("displayName eq \"{name}\""))
        );
        let (s, v) = self.get(&q).await;
        assert_eq!(s, 200, "{}: lookup group {name}: {v}", self.label);
        v["Resources"].as_array().and_then(|a| a.first().cloned())
    }

    /// The id the bridge gave `login`.
    pub async fn user_id(&self, login: &str) -> String {
        let u = self
            .find_user(login)
            .await
            .unwrap_or_else(|| panic!("{}: {login} not found", self.label));
        u["id"].as_str().unwrap().to_string()
    }

    /// The id the bridge gave the group `name`.
    pub async fn group_id(&self, name: &str) -> String {
        let g = self
            .find_group(name)
            .await
            .unwrap_or_else(|| panic!("{}: group {name} not found", self.label));
        g["id"].as_str().unwrap().to_string()
    }

    /// Okta's profile push of the enterprise `division`: the whole user read back and PUT with
    /// the division set (or left out).
    pub async fn okta_division(&self, login: &str, division: Option<&str>) {
        let l = &self.label;
        let id = self.user_id(login).await;
        let (s, mut full) = self.get(&format!("/Users/{id}")).await;
        assert_eq!(s, 200, "{l}: {full}");
        let obj = full.as_object_mut().unwrap();
        obj.remove("meta");
        let mut ext = obj
            .remove(ENTERPRISE)
            .and_then(|e| e.as_object().cloned())
            .unwrap_or_default();
        match division {
            Some(d) => {
                ext.insert("division".into(), json!(d));
            }
            None => {
                ext.remove("division");
            }
        }
        let mut schemas: Vec<Value> = obj["schemas"].as_array().cloned().unwrap_or_default();
        if !ext.is_empty() {
            obj.insert(ENTERPRISE.into(), Value::Object(ext));
            if !schemas.contains(&json!(ENTERPRISE)) {
                schemas.push(json!(ENTERPRISE));
            }
        }
        obj.insert("schemas".into(), Value::Array(schemas));
        let (s, v) = self.put(&format!("/Users/{id}"), full).await;
        assert_eq!(s, 200, "{l}: PUT {login} with division {division:?}: {v}");
    }

    /// Entra's attribute PATCH of the enterprise `division`: `Add` a value, `Replace` it, or
    /// `Remove` it.
    pub async fn entra_division(&self, login: &str, op: &str, division: Option<&str>) {
        let id = self.user_id(login).await;
        let mut o = json!({"op": op, "path": DIVISION_PATH});
        if let Some(d) = division {
            o["value"] = json!(d);
        }
        self.patch_ok(&format!("/Users/{id}"), json!([o])).await;
    }

    /// Okta's assignment: look up by userName, create only when absent.
    pub async fn okta_assign(&self, user_name: &str, given: &str, family: &str) -> String {
        if let Some(u) = self.find_user(user_name).await {
            return u["id"].as_str().unwrap().to_string();
        }
        let (s, v) = self
            .post(
                "/Users",
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": user_name,
                    "name": {"givenName": given, "familyName": family},
                    "emails": [{"primary": true, "value": user_name, "type": "work"}],
                    "displayName": format!("{given} {family}"),
                    "locale": "en-US",
                    "externalId": format!("00u{}", user_name.len()),
                    "groups": [],
                    "password": "1mz050nq",
                    "active": true
                }),
            )
            .await;
        assert_eq!(s, 201, "{}: create {user_name}: {v}", self.label);
        v["id"].as_str().unwrap().to_string()
    }

    /// Every userName the bridge lists (lower-cased), page by page; a name listed twice fails.
    pub async fn all_user_names(&self) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut start = 1;
        loop {
            let (s, v) = self
                .get(&format!("/Users?startIndex={start}&count=100"))
                .await;
            assert_eq!(s, 200, "{}: {v}", self.label);
            let page = v["Resources"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                break;
            }
            for u in &page {
                let name = u["userName"].as_str().unwrap().to_lowercase();
                assert!(
                    seen.insert(name.clone()),
                    "{}: {name} listed twice by the bridge",
                    self.label
                );
            }
            start += page.len();
        }
        seen
    }

    /// Waits until the bridge serves and its vendor is usable (the admin listener's detailed
    /// `/readyz` names no tenant: roles read, directory observed once).
    pub async fn wait_ready(&self) {
        let admin = self.admin_root();
        for _ in 0..300 {
            if let Ok(r) = self.http.get(format!("{admin}/readyz")).send().await {
                if r.status().is_success() {
                    let body: Value = r.json().await.unwrap_or_default();
                    if body["vendors_unavailable"]
                        .as_object()
                        .is_some_and(|o| o.is_empty())
                    {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{}: bridge not ready", self.label);
    }

    /// When the last write was answered (checked clients only).
    pub fn last_write(&self) -> Instant {
        self.last_write
            .lock()
            .unwrap()
            .expect("the sequence wrote something")
    }

    /// Requests answered, the slowest, and statuses, for the test's output (checked clients).
    pub fn summary(&self) -> String {
        let calls = self.calls.lock().unwrap();
        let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
        for c in calls.iter() {
            *by_status.entry(c.status).or_default() += 1;
        }
        let slowest = calls.iter().max_by_key(|c| c.took);
        format!(
            "{} requests, statuses {:?}, slowest {}",
            calls.len(),
            by_status,
            slowest.map_or("-".into(), |c| format!("{:?} ({})", c.took, c.what))
        )
    }

    /// How many requests were sent within `from..to`, and the slowest of them (checked clients).
    pub fn during(&self, from: Instant, to: Instant) -> (usize, Duration) {
        let calls = self.calls.lock().unwrap();
        let inside: Vec<&Call> = calls.iter().filter(|c| c.at >= from && c.at < to).collect();
        (
            inside.len(),
            inside.iter().map(|c| c.took).max().unwrap_or_default(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The sequences.
// ---------------------------------------------------------------------------------------------

/// A point of a sequence, reached when every request of the step was answered and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Okta: ada, bob, cy, dee assigned, pre@acme.test (made in the vendor beforehand) found by
    /// the lookup. Entra: eve, fay, gus created.
    UsersAssigned,
    /// BI Admins and BI Designers exist (Okta: bob in BI Designers; Entra: empty). The `mid`
    /// hook runs just before this step's check.
    GroupsCreated,
    /// Okta: ada in BI Admins; cy and pre added to BI Designers, cy removed again. Entra: eve,
    /// fay and gus added to BI Designers, eve to BI Admins, gus removed from BI Designers.
    MembersChanged,
    /// Okta: bob's givenName is Robert (PUT of the whole user). Entra: fay's familyName is
    /// Fairfax (attribute PATCH).
    ProfileChanged,
    /// Okta: dee deactivated, cy deactivated and reactivated. Entra: fay disabled (`"False"`),
    /// and the bridge lists her inactive.
    Deactivated,
    /// Entra: fay added to BI Admins while disabled, then restored (`"True"`).
    Reactivated,
    /// Entra: gus deleted (and 404 after).
    Deleted,
    /// Okta: BI Admins replaced by a PUT with ada and dee. The last step.
    GroupReplaced,
}

/// What a sequence calls back into: the caller's fault injection halfway, and its checks of the
/// vendor's state after each step. Both do nothing unless implemented; a closure is a `mid`.
pub trait Hooks {
    /// Once, halfway: the groups exist, no membership change has been sent yet.
    fn mid(&mut self) {}
    /// After each [`Step`].
    fn after(&mut self, step: Step) -> impl Future<Output = ()> + Send {
        let _ = step;
        async {}
    }
}

/// No hooks.
impl Hooks for () {}

/// A closure is the `mid` hook.
impl<F: FnMut()> Hooks for F {
    fn mid(&mut self) {
        self()
    }
}

/// The IdP sequences the connectors are accepted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seq {
    Okta,
    Entra,
}

impl Seq {
    pub fn name(self) -> &'static str {
        match self {
            Seq::Okta => "okta",
            Seq::Entra => "entra",
        }
    }

    pub async fn run(self, idp: &Idp, hooks: &mut impl Hooks) {
        match self {
            Seq::Okta => okta_sequence(idp, hooks).await,
            Seq::Entra => entra_sequence(idp, hooks).await,
        }
    }

    /// The vendor's end state after the sequence, with the vendor's role names.
    pub fn expected(self, roles: &Roles) -> Expected {
        match self {
            Seq::Okta => Expected::okta(roles),
            Seq::Entra => Expected::entra(roles),
        }
    }
}

/// Okta: test connection, assignments (a user already in the vendor, `pre@acme.test`, is found:
/// the caller creates it in the vendor first), group push (create, members, rename re-sent with
/// every membership update, remove a member), profile update by PUT, deactivation by pathless
/// PATCH, reactivation, a group PUT with the whole member list.
pub async fn okta_sequence(idp: &Idp, hooks: &mut impl Hooks) {
    let l = &idp.label;
    let (s, v) = idp.get("/Users?startIndex=1&count=2").await;
    assert_eq!(s, 200, "{l}: {v}");
    let ada = idp.okta_assign("ada@acme.test", "Ada", "Lovelace").await;
    let bob = idp.okta_assign("bob@acme.test", "Bob", "Builder").await;
    let cy = idp.okta_assign("cy@acme.test", "Cy", "Young").await;
    let dee = idp.okta_assign("dee@acme.test", "Dee", "Dee").await;
    // Created in the vendor before the bridge: the lookup finds it, no POST.
    let pre = idp.find_user("pre@acme.test").await.unwrap_or_else(|| {
        panic!("{l}: a user created directly in the vendor is found by the IdP's lookup")
    });
    let pre_id = pre["id"].as_str().unwrap().to_string();
    assert_eq!(
        idp.okta_assign("pre@acme.test", "Pre", "Existing").await,
        pre_id,
        "{l}"
    );
    hooks.after(Step::UsersAssigned).await;
    // Group push.
    assert!(idp.find_group("BI Admins").await.is_none(), "{l}");
    let (s, admins) = idp
        .post(
            "/Groups",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "BI Admins", "members": []}),
        )
        .await;
    assert_eq!(s, 201, "{l}: {admins}");
    let admins = admins["id"].as_str().unwrap().to_string();
    let (s, v) = idp
        .post(
            "/Groups",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "BI Designers",
                   "members": [{"value": bob, "display": "bob@acme.test"}]}),
        )
        .await;
    assert_eq!(s, 201, "{l}: {v}");
    let designers = v["id"].as_str().unwrap().to_string();
    hooks.mid();
    hooks.after(Step::GroupsCreated).await;
    idp.patch_ok(
        &format!("/Groups/{admins}"),
        json!([
            {"op": "replace", "value": {"id": admins, "displayName": "BI Admins"}},
            {"op": "add", "path": "members", "value": [{"value": ada, "display": "ada@acme.test"}]}
        ]),
    )
    .await;
    idp.patch_ok(
        &format!("/Groups/{designers}"),
        json!([
            {"op": "replace", "value": {"id": designers, "displayName": "BI Designers"}},
            {"op": "add", "path": "members", "value": [{"value": cy}, {"value": pre_id}]}
        ]),
    )
    .await;
    idp.patch_ok(
        &format!("/Groups/{designers}"),
        json!([
            {"op": "remove", "path": format!("members[value eq \"{cy}\"]")}
        ]),
    )
    .await;
    hooks.after(Step::MembersChanged).await;
    // Profile update (AIW apps PUT back what they read).
    let (s, mut full) = idp.get(&format!("/Users/{bob}")).await;
    assert_eq!(s, 200, "{l}: {full}");
    full["name"]["givenName"] = json!("Robert");
    let (s, v) = idp.put(&format!("/Users/{bob}"), full).await;
    assert_eq!(s, 200, "{l}: {v}");
    hooks.after(Step::ProfileChanged).await;
    // Deactivate dee, deactivate and reactivate cy.
    for (id, active) in [(&dee, false), (&cy, false), (&cy, true)] {
        let v = idp
            .patch_ok(
                &format!("/Users/{id}"),
                json!([{"op": "replace", "value": {"active": active}}]),
            )
            .await;
        assert_eq!(v["active"], json!(active), "{l}: {v}");
    }
    let (s, v) = idp.get(&format!("/Users/{dee}")).await;
    assert_eq!((s, &v["active"]), (200, &json!(false)), "{l}: {v}");
    hooks.after(Step::Deactivated).await;
    // An AIW app pushes a group by PUT with the whole member list.
    let (s, v) = idp
        .put(
            &format!("/Groups/{admins}"),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": admins,
                   "displayName": "BI Admins", "members": [{"value": ada}, {"value": dee}]}),
        )
        .await;
    assert_eq!(s, 200, "{l}: {v}");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(2), "{l}: {v}");
    hooks.after(Step::GroupReplaced).await;
}

/// Entra: lookups by externalId and work email, create with `roles: []` and explicit nulls,
/// groups created without members and filled by multi-member `Add`, non-RFC `Remove` with a
/// value list, attribute PATCH, disable with the string "False", a membership change while
/// disabled, restore, and hard delete.
pub async fn entra_sequence(idp: &Idp, hooks: &mut impl Hooks) {
    let l = &idp.label;
    // Test connection: a random GUID by the matching attribute.
    let (s, v) = idp
        .get(&format!(
            "/Users?filter={}",
            urlencode("externalId eq \"3b1f1f6e-0000-4000-8000-000000000000\"")
        ))
        .await;
    assert_eq!((s, v["totalResults"].clone()), (200, json!(0)), "{l}: {v}");
    let mut ids = Vec::new();
    for (i, name) in ["eve", "fay", "gus"].iter().enumerate() {
        let mail = format!("{name}@contoso.test");
        let (s, v) = idp
            .get(&format!(
                "/Users?filter={}",
                urlencode(&format!("emails[type eq \"work\"].value eq \"{mail}\""))
            ))
            .await;
        assert_eq!((s, v["totalResults"].clone()), (200, json!(0)), "{l}: {v}");
        let (s, v) = idp
            .post(
                "/Users",
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
                    "externalId": format!("0a21f0f2-{i}"), "userName": mail, "active": true,
                    "emails": [{"primary": true, "type": "work", "value": mail}],
                    "meta": {"resourceType": "User"},
                    "name": {"formatted": "x", "familyName": name, "givenName": "E"},
                    "roles": [], "title": null, "manager": null
                }),
            )
            .await;
        assert_eq!(s, 201, "{l}: {v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let (eve, fay, gus) = (&ids[0], &ids[1], &ids[2]);
    hooks.after(Step::UsersAssigned).await;
    let mut groups = Vec::new();
    for name in ["BI Admins", "BI Designers"] {
        let (s, v) = idp
            .post(
                "/Groups",
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group",
                                   "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                       "externalId": format!("8aa1-{name}"), "displayName": name,
                       "meta": {"resourceType": "Group"}}),
            )
            .await;
        assert_eq!(s, 201, "{l}: {v}");
        groups.push(v["id"].as_str().unwrap().to_string());
    }
    let (admins, designers) = (&groups[0], &groups[1]);
    hooks.mid();
    hooks.after(Step::GroupsCreated).await;
    let (s, v) = idp
        .patch(
            &format!("/Groups/{designers}?excludedAttributes=members"),
            patch_op(json!([{"op": "Add", "path": "members",
                             "value": [{"$ref": null, "value": eve}, {"$ref": null, "value": fay}, {"$ref": null, "value": gus}]}])),
        )
        .await;
    assert!(s == 200 || s == 204, "{l}: {s} {v}");
    idp.patch_ok(
        &format!("/Groups/{admins}"),
        json!([{"op": "Add", "path": "members", "value": [{"value": eve}]}]),
    )
    .await;
    idp.patch_ok(
        &format!("/Groups/{designers}"),
        json!([{"op": "Remove", "path": "members", "value": [{"value": gus}]}]),
    )
    .await;
    hooks.after(Step::MembersChanged).await;
    // Entra's PATCH of attributes.
    idp.patch_ok(
        &format!("/Users/{fay}"),
        json!([{"op": "Replace", "path": "name.familyName", "value": "Fairfax"}]),
    )
    .await;
    hooks.after(Step::ProfileChanged).await;
    // Disable fay: still readable, with active=false.
    let v = idp
        .patch_ok(
            &format!("/Users/{fay}"),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .await;
    assert_eq!(v["active"], json!(false), "{l}: {v}");
    let (s, v) = idp
        .get(&format!(
            "/Users?filter={}",
            urlencode("userName eq \"fay@contoso.test\"")
        ))
        .await;
    assert_eq!(
        (s, v["Resources"][0]["active"].clone()),
        (200, json!(false)),
        "{l}: {v}"
    );
    hooks.after(Step::Deactivated).await;
    // A membership change while disabled is kept and restored with her.
    idp.patch_ok(
        &format!("/Groups/{admins}"),
        json!([{"op": "Add", "path": "members", "value": [{"value": fay}]}]),
    )
    .await;
    let v = idp
        .patch_ok(
            &format!("/Users/{fay}"),
            json!([{"op": "Replace", "path": "active", "value": "True"}]),
        )
        .await;
    assert_eq!(v["active"], json!(true), "{l}: {v}");
    hooks.after(Step::Reactivated).await;
    // Hard delete of gus.
    let (s, v) = idp.delete(&format!("/Users/{gus}")).await;
    assert_eq!(s, 204, "{l}: {v}");
    let (s, v) = idp.get(&format!("/Users/{gus}")).await;
    assert_eq!(s, 404, "{l}: {v}");
    hooks.after(Step::Deleted).await;
}

// ---------------------------------------------------------------------------------------------
// The expected end state, vendor-neutral.
// ---------------------------------------------------------------------------------------------

/// The vendor's names for what the role rules give: `BI Admins → admin`, `BI Designers →
/// designer`, else `default`.
#[derive(Clone, Copy, Debug)]
pub struct Roles<'a> {
    pub admin: &'a str,
    pub designer: &'a str,
    pub default: &'a str,
}

/// A vendor account as the end state compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The vendor's role name.
    pub role: String,
    pub active: bool,
    /// The vendor's group names (without groups every user is in, such as Tableau's "All Users").
    pub groups: BTreeSet<String>,
}

impl Account {
    pub fn new(role: &str, active: bool, groups: &[&str]) -> Account {
        Account {
            role: role.to_string(),
            active,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamePart {
    Given,
    Family,
}

/// A name the sequence changes, which the vendor must show.
#[derive(Clone, Debug)]
pub struct Renamed {
    pub login: String,
    pub part: NamePart,
    pub value: String,
}

/// What the vendor must hold after a sequence.
#[derive(Clone, Debug)]
pub struct Expected {
    /// Lower-cased login → the account.
    pub users: BTreeMap<String, Account>,
    /// Logins the vendor must not have.
    pub absent: BTreeSet<String>,
    /// The names the sequence changed (checked by each vendor's test on its own fields).
    pub renamed: Vec<Renamed>,
}

impl Expected {
    /// Which of a vendor's `names` (login → the name it shows) must hold after `step`: all but
    /// the renamed users' once users are assigned (written with the create), all once the
    /// profile change renamed them, none before.
    pub fn names_after<'a>(
        &self,
        step: Step,
        names: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        match step {
            Step::UsersAssigned => names
                .iter()
                .filter(|(login, _)| !self.renamed.iter().any(|r| r.login == *login))
                .copied()
                .collect(),
            Step::ProfileChanged => names.to_vec(),
            _ => Vec::new(),
        }
    }

    /// After [`okta_sequence`]: five users (pre@acme.test included), dee inactive; bob renamed
    /// Robert.
    pub fn okta(r: &Roles) -> Expected {
        let users = [
            ("ada@acme.test", Account::new(r.admin, true, &["BI Admins"])),
            (
                "bob@acme.test",
                Account::new(r.designer, true, &["BI Designers"]),
            ),
            ("cy@acme.test", Account::new(r.default, true, &[])),
            (
                "dee@acme.test",
                Account::new(r.admin, false, &["BI Admins"]),
            ),
            (
                "pre@acme.test",
                Account::new(r.designer, true, &["BI Designers"]),
            ),
        ];
        Expected {
            users: users.map(|(n, a)| (n.to_string(), a)).into(),
            absent: BTreeSet::new(),
            renamed: vec![Renamed {
                login: "bob@acme.test".into(),
                part: NamePart::Given,
                value: "Robert".into(),
            }],
        }
    }

    /// After [`entra_sequence`]: eve and fay admins in both groups, gus gone; fay renamed
    /// Fairfax.
    pub fn entra(r: &Roles) -> Expected {
        let both = &["BI Admins", "BI Designers"];
        Expected {
            users: [
                (
                    "eve@contoso.test".to_string(),
                    Account::new(r.admin, true, both),
                ),
                (
                    "fay@contoso.test".to_string(),
                    Account::new(r.admin, true, both),
                ),
            ]
            .into(),
            absent: ["gus@contoso.test".to_string()].into(),
            renamed: vec![Renamed {
                login: "fay@contoso.test".into(),
                part: NamePart::Family,
                value: "Fairfax".into(),
            }],
        }
    }

    /// How `got` (the vendor's accounts by lower-cased login) differs: every expected account as
    /// expected, no absent one, and no account besides those and the vendor's `own` (its admin,
    /// for one) — counted, as the vendor's own accounts have no place in the sequence.
    pub fn diff(&self, got: &BTreeMap<String, Account>, own: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (name, want) in &self.users {
            let have = got.get(name);
            if have != Some(want) {
                out.push(format!("{name}: want {want:?}, got {have:?}"));
            }
        }
        for name in &self.absent {
            if got.contains_key(name) {
                out.push(format!("{name} still in the vendor"));
            }
        }
        let total = self.users.len() + own;
        if got.len() != total {
            out.push(format!(
                "{} vendor users, want {total}: {:?}",
                got.len(),
                got.keys().collect::<Vec<_>>()
            ));
        }
        out
    }

    /// [`Expected::diff`] as a result: `Err` names every difference.
    pub fn check(&self, got: &BTreeMap<String, Account>, own: usize) -> Result<(), String> {
        let d = self.diff(got, own);
        if d.is_empty() {
            Ok(())
        } else {
            Err(d.join("; "))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Runs with processes and faults.
// ---------------------------------------------------------------------------------------------

/// Where the children's stderr goes: the test's own when `TEST_LOG` is set, else nowhere.
pub fn log_stderr() -> std::process::Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        std::process::Stdio::inherit()
    } else {
        std::process::Stdio::null()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `scim-bridge` binary, stdout discarded, stderr as [`log_stderr`] says.
pub fn bridge_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_scim-bridge"));
    cmd.stdout(std::process::Stdio::null()).stderr(log_stderr());
    cmd
}

/// A child process of the test (a simulator or the bridge): SIGKILLed and reaped when the test
/// ends, however it ends; a pending SIGCONT timer (`cont`) is cancelled first.
pub struct ChildGuard {
    pub child: std::process::Child,
    pub cont: Option<tokio::task::JoinHandle<()>>,
}

impl ChildGuard {
    pub fn spawn(cmd: &mut std::process::Command) -> ChildGuard {
        ChildGuard {
            child: cmd.spawn().expect("the scim-bridge binary starts"),
            cont: None,
        }
    }
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} failed");
    }
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(h) = self.cont.take() {
            h.abort();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `scim-bridge simulate VENDOR` on a free loopback port, with `args` (fault flags, `--seed`,
/// `--sim-switch K=V`): the process and its base URL. It may not answer yet: the caller's first
/// sign-in waits for it.
pub fn simulator_process(vendor: &str, args: &[&str]) -> (ChildGuard, String) {
    let port = free_port();
    let guard = ChildGuard::spawn(
        bridge_command()
            .args(["simulate", vendor, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(args),
    );
    (guard, format!("http://127.0.0.1:{port}"))
}

/// How many requests the simulator at `base` was sent on `route` (`/__sim/stats`' `by_route`,
/// e.g. `POST /api/{v}/auth/signin`; the stats are never faulted).
pub async fn sim_route_count(base: &str, route: &str) -> u64 {
    let stats: Value = reqwest::get(format!("{base}/__sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["by_route"][route].as_u64().unwrap_or(0)
}

/// Retries `f` until it gives a value (a checker's calls meet the simulator's faults too).
pub async fn retry<T, F, Fut>(f: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!("gave up retrying");
}

/// Runs `f(variant, label)` for every variant concurrently, each labelled `{run}/{name}`, and
/// fails with every variant's failure together. Variants start 300 ms apart (many bridges
/// starting at once on two cores). When the environment variable `only_var` is set, only the
/// variants whose label contains its value run.
pub async fn run_variants<V, F, Fut>(run: &str, only_var: &str, variants: Vec<(String, V)>, f: F)
where
    F: Fn(V, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let mut handles = Vec::new();
    for (i, (name, variant)) in variants.into_iter().enumerate() {
        let label = format!("{run}/{name}");
        if std::env::var(only_var).is_ok_and(|only| !label.contains(&only)) {
            continue;
        }
        let delay = Duration::from_millis(300 * i as u64);
        let fut = f(variant, label.clone());
        handles.push((
            label,
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                fut.await
            }),
        ));
    }
    let ran = handles.len();
    let mut failures = Vec::new();
    for (label, h) in handles {
        if let Err(e) = h.await {
            let msg = if e.is_panic() {
                let p = e.into_panic();
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into())
            } else {
                e.to_string()
            };
            failures.push(format!("[{label}] {msg}"));
        }
    }
    eprintln!("{run}: {ran} variant(s) in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {ran} variants failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
