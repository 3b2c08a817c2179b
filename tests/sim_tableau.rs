//! The Tableau simulator over real sockets: every rule and quirk of reference part A that the
//! simulator claims, and the element/attribute names of its XML against the recorded responses
//! in `shared/reference/vendor-specs/tableau/`.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use jsonwebtoken::{encode, EncodingKey, Header};
use quick_xml::events::Event;
use reqwest::{Client, Method, StatusCode};
use scim_bridge::sim::{start, RunningSim, SimOptions, Vendor};
use serde_json::{json, Value};

const V: &str = "3.24";

/// Where the vendor specs are: `SIM_SPEC_DIR`, else the shared reference beside the checkout.
fn spec_dir() -> String {
    let manifest = env!("CARGO_MANIFEST_DIR");
    [
        std::env::var("SIM_SPEC_DIR").unwrap_or_default(),
        format!("{manifest}/../shared/reference/vendor-specs"),
        format!("{manifest}/../../shared/reference/vendor-specs"),
        "/work/shared/reference/vendor-specs".to_string(),
    ]
    .into_iter()
    .find(|d| !d.is_empty() && std::path::Path::new(d).exists())
    .expect("vendor specs not found; set SIM_SPEC_DIR")
}

// ---------------------------------------------------------------------------------------------
// A tiny XML tree for the tests (written here, not imported: the simulator's own wire code must
// not grade itself).

#[derive(Debug, Clone)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
    text: String,
}

impl Node {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    fn child(&self, n: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == n)
    }
    fn find(&self, n: &str) -> Option<&Node> {
        if self.name == n {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(n))
    }
    fn all<'a>(&'a self, n: &str, out: &mut Vec<&'a Node>) {
        if self.name == n {
            out.push(self);
        }
        for c in &self.children {
            c.all(n, out);
        }
    }
    /// `element` and `element@attribute` names, below the root.
    fn names(&self, out: &mut BTreeSet<String>) {
        for c in &self.children {
            out.insert(c.name.clone());
            for (k, _) in &c.attrs {
                out.insert(format!("{}@{k}", c.name));
            }
            c.names(out);
        }
    }
}

fn local(n: &[u8]) -> String {
    let n = match n.iter().position(|b| *b == b':') {
        Some(i) => &n[i + 1..],
        None => n,
    };
    String::from_utf8_lossy(n).into_owned()
}

fn parse_xml(s: &str) -> Node {
    let mut r = quick_xml::Reader::from_str(s);
    r.config_mut().trim_text(true);
    let mut stack: Vec<Node> = vec![Node {
        name: "#doc".into(),
        attrs: vec![],
        children: vec![],
        text: String::new(),
    }];
    loop {
        let ev = r.read_event().expect("well-formed XML");
        let empty = matches!(ev, Event::Empty(_));
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                let mut n = Node {
                    name: local(e.name().as_ref()),
                    attrs: vec![],
                    children: vec![],
                    text: String::new(),
                };
                for a in e.attributes() {
                    let a = a.unwrap();
                    if a.key.as_ref().starts_with(b"xmlns") || a.key.as_ref().starts_with(b"xsi:") {
                        continue;
                    }
                    n.attrs.push((
                        local(a.key.as_ref()),
                        a.unescape_value().unwrap().into_owned(),
                    ));
                }
                if empty {
                    stack.last_mut().unwrap().children.push(n);
                } else {
                    stack.push(n);
                }
            }
            Event::Text(t) => {
                stack.last_mut().unwrap().text = String::from_utf8_lossy(t.as_ref()).into_owned();
            }
            Event::End(_) => {
                let n = stack.pop().unwrap();
                stack.last_mut().unwrap().children.push(n);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let doc = stack.pop().unwrap();
    doc.children.into_iter().next().expect("a root element")
}

fn sample(file: &str) -> BTreeSet<String> {
    let s = std::fs::read_to_string(format!("{}/tableau/{file}", spec_dir())).unwrap();
    let mut out = BTreeSet::new();
    parse_xml(&s).names(&mut out);
    out
}

fn names_of(xml: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    parse_xml(xml).names(&mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Harness

async fn spawn_with(opts: SimOptions) -> RunningSim {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    start(Vendor::Tableau, addr, opts)
        .await
        .expect("simulator starts")
}

async fn spawn() -> RunningSim {
    spawn_with(SimOptions::default()).await
}

fn with_switches(sw: &[(&str, &str)]) -> SimOptions {
    SimOptions {
        switches: sw
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..SimOptions::default()
    }
}

struct Resp {
    status: StatusCode,
    body: String,
}

impl Resp {
    fn xml(&self) -> Node {
        parse_xml(&self.body)
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    /// The 6-digit code of an XML error body.
    fn code(&self) -> String {
        self.xml()
            .find("error")
            .and_then(|e| e.attr("code"))
            .unwrap_or_else(|| panic!("no error in {}", self.body))
            .to_string()
    }
}

struct Tab {
    base: String,
    http: Client,
    token: String,
    site: String,
    user: String,
}

async fn call(
    http: &Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
    json: bool,
) -> Resp {
    let mut rb = http.request(method, url);
    if let Some(t) = token {
        rb = rb.header("X-Tableau-Auth", t);
    }
    if json {
        rb = rb
            .header("Accept", "application/json")
            .header("Content-Type", "application/json");
    }
    if let Some(b) = body {
        if !json {
            rb = rb.header("Content-Type", "application/xml");
        }
        rb = rb.body(b.to_string());
    }
    let r = rb.send().await.expect("request sent");
    let status = r.status();
    let body = r.text().await.unwrap();
    Resp { status, body }
}

async fn sign_in(base: &str, body: &str) -> Resp {
    call(
        &Client::new(),
        Method::POST,
        &format!("{base}/api/{V}/auth/signin"),
        None,
        Some(body),
        false,
    )
    .await
}

fn pat_body(site: &str) -> String {
    format!(
        r#"<tsRequest><credentials personalAccessTokenName="scim-bridge" personalAccessTokenSecret="simulator-pat-secret"><site contentUrl="{site}"/></credentials></tsRequest>"#
    )
}

async fn login_with(base: &str, body: &str) -> Tab {
    let r = sign_in(base, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let x = r.xml();
    let c = x.child("credentials").unwrap();
    Tab {
        base: base.to_string(),
        http: Client::new(),
        token: c.attr("token").unwrap().to_string(),
        site: c.child("site").unwrap().attr("id").unwrap().to_string(),
        user: c.child("user").unwrap().attr("id").unwrap().to_string(),
    }
}

async fn login(base: &str) -> Tab {
    login_with(base, &pat_body("default")).await
}

impl Tab {
    fn url(&self, path: &str) -> String {
        format!("{}/api/{V}/sites/{}/{path}", self.base, self.site)
    }
    async fn req(&self, m: Method, path: &str, body: Option<&str>) -> Resp {
        call(
            &self.http,
            m,
            &self.url(path),
            Some(&self.token),
            body,
            false,
        )
        .await
    }
    async fn req_json(&self, m: Method, path: &str, body: Option<&Value>) -> Resp {
        let b = body.map(|b| b.to_string());
        call(
            &self.http,
            m,
            &self.url(path),
            Some(&self.token),
            b.as_deref(),
            true,
        )
        .await
    }
    async fn add_user(&self, name: &str, role: &str) -> Resp {
        self.req(
            Method::POST,
            "users",
            Some(&format!(
                r#"<tsRequest><user name="{name}" siteRole="{role}" authSetting="SAML"/></tsRequest>"#
            )),
        )
        .await
    }
    async fn new_user(&self, name: &str, role: &str) -> String {
        let r = self.add_user(name, role).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.xml()
            .child("user")
            .unwrap()
            .attr("id")
            .unwrap()
            .to_string()
    }
    async fn new_group(&self, name: &str) -> String {
        let r = self
            .req(
                Method::POST,
                "groups",
                Some(&format!(r#"<tsRequest><group name="{name}"/></tsRequest>"#)),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.xml()
            .child("group")
            .unwrap()
            .attr("id")
            .unwrap()
            .to_string()
    }
    async fn add_member(&self, group: &str, user: &str) -> Resp {
        self.req(
            Method::POST,
            &format!("groups/{group}/users"),
            Some(&format!(r#"<tsRequest><user id="{user}"/></tsRequest>"#)),
        )
        .await
    }
    async fn all_users_group(&self) -> String {
        let r = self
            .req(Method::GET, "groups?filter=name:eq:All%20Users", None)
            .await;
        let x = r.xml();
        x.find("group").unwrap().attr("id").unwrap().to_string()
    }
}

fn jwt(claims: Value, kid: &str, secret: &str) -> String {
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.into());
    encode(&h, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(scp: &[&str]) -> Value {
    json!({
        "iss": "sim-client", "sub": "admin@tableau.local", "aud": "tableau",
        "exp": now() + 300, "jti": uuid::Uuid::new_v4().to_string(), "scp": scp,
    })
}

fn jwt_body(token: &str) -> String {
    format!(
        r#"<tsRequest><credentials jwt="{token}"><site contentUrl="default"/></credentials></tsRequest>"#
    )
}

// ---------------------------------------------------------------------------------------------
// Sign-in

#[tokio::test]
async fn pat_sign_in_returns_token_site_and_user_like_the_recording() {
    let sim = spawn().await;
    let r = sign_in(&sim.base_url(), &pat_body("default")).await;
    assert_eq!(r.status, 200);
    let mut expected = sample("auth_sign_in.xml");
    // PAT sign-ins also say when the PAT expires (JSON `estimatedTimeToExpiration`) [A.2].
    expected.insert("credentials@estimatedTimeToExpiration".into());
    assert_eq!(names_of(&r.body), expected);
    sim.stop().await;
}

#[tokio::test]
async fn password_sign_in_has_exactly_the_recorded_shape() {
    let sim = spawn().await;
    let r = sign_in(
        &sim.base_url(),
        r#"<tsRequest><credentials name="admin@tableau.local" password="admin"><site contentUrl=""/></credentials></tsRequest>"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(names_of(&r.body), sample("auth_sign_in.xml"));
    // An empty contentUrl is the default site (Server) [A.2].
    assert_eq!(
        r.xml().find("site").unwrap().attr("contentUrl"),
        Some("default")
    );
    sim.stop().await;
}

#[tokio::test]
async fn bad_credentials_are_401001_signin_error() {
    let sim = spawn().await;
    let base = sim.base_url();
    for body in [
        r#"<tsRequest><credentials personalAccessTokenName="scim-bridge" personalAccessTokenSecret="wrong"><site contentUrl="default"/></credentials></tsRequest>"#.to_string(),
        r#"<tsRequest><credentials name="admin@tableau.local" password="nope"><site contentUrl="default"/></credentials></tsRequest>"#.to_string(),
        pat_body("no-such-site"),
    ] {
        let r = sign_in(&base, &body).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.code(), "401001");
        assert_eq!(names_of(&r.body), sample("auth_sign_in_error.xml"));
        assert_eq!(r.xml().find("summary").unwrap().text, "Signin Error");
    }
    sim.stop().await;
}

#[tokio::test]
async fn malformed_or_ambiguous_sign_in_is_400000() {
    let sim = spawn().await;
    let base = sim.base_url();
    for body in [
        "<tsRequest><credentials",
        "not xml at all <<<",
        "<tsRequest/>",
        r#"<tsRequest><credentials name="a" password="b" personalAccessTokenName="scim-bridge" personalAccessTokenSecret="simulator-pat-secret"><site contentUrl="default"/></credentials></tsRequest>"#,
    ] {
        let r = sign_in(&base, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.code(), "400000");
    }
    sim.stop().await;
}

#[tokio::test]
async fn json_sign_in_and_json_answers_with_string_attributes() {
    let sim = spawn().await;
    let http = Client::new();
    let body = json!({"credentials": {"personalAccessTokenName": "scim-bridge",
        "personalAccessTokenSecret": "simulator-pat-secret", "site": {"contentUrl": "default"}}});
    let r = call(
        &http,
        Method::POST,
        &format!("{}/api/{V}/auth/signin", sim.base_url()),
        None,
        Some(&body.to_string()),
        true,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let token = j["credentials"]["token"].as_str().unwrap().to_string();
    let site = j["credentials"]["site"]["id"].as_str().unwrap().to_string();
    assert!(j["credentials"]["user"]["id"].is_string());
    assert!(j["credentials"]["estimatedTimeToExpiration"].is_string());
    let t = Tab {
        base: sim.base_url(),
        http,
        token,
        site,
        user: String::new(),
    };
    // Pagination values are strings; a collection holds an array under its child's name [A.1].
    let r = t.req_json(Method::GET, "users", None).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["pagination"]["pageNumber"], "1");
    assert_eq!(j["pagination"]["pageSize"], "100");
    assert_eq!(j["pagination"]["totalAvailable"], "1");
    assert!(j["users"]["user"].is_array());
    assert_eq!(j["users"]["user"][0]["name"], "admin@tableau.local");
    // An empty collection is `{}`.
    let r = t
        .req_json(Method::GET, "users?filter=name:eq:nobody", None)
        .await;
    assert_eq!(r.json()["users"], json!({}));
    assert_eq!(r.json()["pagination"]["totalAvailable"], "0");
    // JSON in, JSON out, for writes too.
    let r = t
        .req_json(
            Method::POST,
            "users",
            Some(&json!({"user": {"name": "jane@acme.com", "siteRole": "Viewer", "authSetting": "SAML"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["user"]["siteRole"], "Viewer");
    // JSON errors: {"error":{"summary","detail","code"}} with a string code [A.7].
    let r = t
        .req_json(
            Method::POST,
            "users",
            Some(&json!({"user": {"name": "jane@acme.com", "siteRole": "Viewer"}})),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "409000");
    assert!(r.json()["error"]["summary"].is_string());
    assert!(r.json()["error"]["detail"].is_string());
    sim.stop().await;
}

#[tokio::test]
async fn a_second_pat_sign_in_ends_the_first_session() {
    let sim = spawn().await;
    let first = login(&sim.base_url()).await;
    assert_eq!(first.req(Method::GET, "users", None).await.status, 200);
    let second = login(&sim.base_url()).await;
    let r = first.req(Method::GET, "users", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "401002");
    assert_eq!(second.req(Method::GET, "users", None).await.status, 200);
    // Password sessions are not affected by each other.
    let body = r#"<tsRequest><credentials name="admin@tableau.local" password="admin"><site contentUrl="default"/></credentials></tsRequest>"#;
    let a = login_with(&sim.base_url(), body).await;
    let b = login_with(&sim.base_url(), body).await;
    assert_eq!(a.req(Method::GET, "users", None).await.status, 200);
    assert_eq!(b.req(Method::GET, "users", None).await.status, 200);
    sim.stop().await;
}

#[tokio::test]
async fn missing_and_bad_tokens_are_401000_and_401002() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let r = call(&t.http, Method::GET, &t.url("users"), None, None, false).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "401000".into()));
    let r = call(
        &t.http,
        Method::GET,
        &t.url("users"),
        Some("forged"),
        None,
        false,
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "401002".into()));
    // Sign out ends the session: 204, then 401002.
    let r = call(
        &t.http,
        Method::POST,
        &format!("{}/api/{V}/auth/signout", t.base),
        Some(&t.token),
        None,
        false,
    )
    .await;
    assert_eq!(r.status, 204);
    let r = t.req(Method::GET, "users", None).await;
    assert_eq!(r.code(), "401002");
    sim.stop().await;
}

#[tokio::test]
async fn sessions_expire_after_the_token_ttl() {
    let sim = spawn_with(SimOptions {
        token_ttl_s: Some(1),
        ..SimOptions::default()
    })
    .await;
    let t = login(&sim.base_url()).await;
    assert_eq!(t.req(Method::GET, "users", None).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let r = t.req(Method::GET, "users", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "401002".into()));
    // Signing in again is the fix [A.2].
    let t = login(&sim.base_url()).await;
    assert_eq!(t.req(Method::GET, "users", None).await.status, 200);
    sim.stop().await;
}

#[tokio::test]
async fn a_session_is_scoped_to_its_site() {
    let sim = spawn().await;
    let default = login(&sim.base_url()).await;
    let sandbox = login_with(&sim.base_url(), &pat_body("sandbox")).await;
    assert_ne!(default.site, sandbox.site);
    // The same PAT signed in again, on another site: the first session has ended [A.2].
    assert_eq!(
        default.req(Method::GET, "users", None).await.code(),
        "401002"
    );
    let r = call(
        &sandbox.http,
        Method::GET,
        &default.url("users"),
        Some(&sandbox.token),
        None,
        false,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r
        .body
        .contains("may not access or modify resources on site"));
    assert_eq!(sandbox.req(Method::GET, "users", None).await.status, 200);
    sim.stop().await;
}

#[tokio::test]
async fn switch_site_returns_new_credentials_and_403070_for_the_same_site() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let url = format!("{}/api/{V}/auth/switchSite", t.base);
    let same = r#"<tsRequest><site contentUrl="default"/></tsRequest>"#;
    let r = call(
        &t.http,
        Method::POST,
        &url,
        Some(&t.token),
        Some(same),
        false,
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "403070".into()));
    let other = r#"<tsRequest><site contentUrl="sandbox"/></tsRequest>"#;
    let r = call(
        &t.http,
        Method::POST,
        &url,
        Some(&t.token),
        Some(other),
        false,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let x = r.xml();
    let new_site = x.find("site").unwrap().attr("id").unwrap().to_string();
    assert_ne!(new_site, t.site);
    assert_eq!(t.req(Method::GET, "users", None).await.code(), "401002");
    sim.stop().await;
}

#[tokio::test]
async fn impersonation_needs_an_existing_user() {
    let sim = spawn().await;
    let admin = login(&sim.base_url()).await;
    let jane = admin.new_user("jane@acme.com", "Viewer").await;
    let body = |id: &str| {
        format!(
            r#"<tsRequest><credentials name="admin@tableau.local" password="admin"><site contentUrl="default"/><user id="{id}"/></credentials></tsRequest>"#
        )
    };
    let r = sign_in(&sim.base_url(), &body(&jane)).await;
    assert_eq!(r.status, 200);
    assert_eq!(names_of(&r.body), sample("auth_sign_in_impersonate.xml"));
    assert_eq!(
        r.xml().find("user").unwrap().attr("id"),
        Some(jane.as_str())
    );
    let r = sign_in(
        &sim.base_url(),
        &body("00000000-0000-0000-0000-000000000000"),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "404002".into()));
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Connected-app JWT

#[tokio::test]
async fn connected_app_jwt_signs_in_and_its_jti_cannot_be_replayed() {
    let sim = spawn().await;
    let token = jwt(
        claims(&["tableau:users:read"]),
        "sim-secret-id",
        "simulator-connected-app-secret",
    );
    let r = sign_in(&sim.base_url(), &jwt_body(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(names_of(&r.body), sample("auth_sign_in.xml"));
    let r = sign_in(&sim.base_url(), &jwt_body(&token)).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "401001".into()));
    sim.stop().await;
}

#[tokio::test]
async fn connected_app_jwt_is_checked_claim_by_claim() {
    let sim = spawn().await;
    let good = claims(&["tableau:users:read"]);
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c["jti"] = json!(uuid::Uuid::new_v4().to_string());
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        if k != "jti" {
            c["jti"] = json!(uuid::Uuid::new_v4().to_string());
        }
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let key = "simulator-connected-app-secret";
    let cases = vec![
        (
            "wrong secret",
            jwt(with("jti", json!("x1")), "sim-secret-id", "wrong"),
        ),
        ("wrong kid", jwt(with("jti", json!("x2")), "other-kid", key)),
        (
            "wrong aud",
            jwt(with("aud", json!("tableau-x")), "sim-secret-id", key),
        ),
        (
            "wrong iss",
            jwt(with("iss", json!("other-client")), "sim-secret-id", key),
        ),
        (
            "exp > 10 min",
            jwt(with("exp", json!(now() + 900)), "sim-secret-id", key),
        ),
        (
            "expired",
            jwt(with("exp", json!(now() - 120)), "sim-secret-id", key),
        ),
        (
            "unknown sub",
            jwt(with("sub", json!("ghost@acme.com")), "sim-secret-id", key),
        ),
        ("no jti", jwt(without("jti"), "sim-secret-id", key)),
        ("no scp", jwt(without("scp"), "sim-secret-id", key)),
        ("no exp", jwt(without("exp"), "sim-secret-id", key)),
    ];
    for (what, token) in cases {
        let r = sign_in(&sim.base_url(), &jwt_body(&token)).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.code(), "401001", "{what}");
    }
    // HS384 is not HS256.
    let mut h = Header::new(jsonwebtoken::Algorithm::HS384);
    h.kid = Some("sim-secret-id".into());
    let t = encode(&h, &good, &EncodingKey::from_secret(key.as_bytes())).unwrap();
    let r = sign_in(&sim.base_url(), &jwt_body(&t)).await;
    assert_eq!(r.code(), "401001");
    sim.stop().await;
}

#[tokio::test]
async fn connected_app_scopes_are_enforced_per_method() {
    let sim = spawn().await;
    let token = jwt(
        claims(&["tableau:users:read", "tableau:groups:read"]),
        "sim-secret-id",
        "simulator-connected-app-secret",
    );
    let t = login_with(&sim.base_url(), &jwt_body(&token)).await;
    assert_eq!(t.req(Method::GET, "users", None).await.status, 200);
    assert_eq!(t.req(Method::GET, "groups", None).await.status, 200);
    let r = t.add_user("jane@acme.com", "Viewer").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.code(), "403000");
    let r = t
        .req(
            Method::POST,
            "groups",
            Some(r#"<tsRequest><group name="G"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.status, 403);
    // A wider token may write; groups:update covers membership [A.2].
    let token = jwt(
        claims(&[
            "tableau:users:create",
            "tableau:groups:create",
            "tableau:groups:update",
        ]),
        "sim-secret-id",
        "simulator-connected-app-secret",
    );
    let t = login_with(&sim.base_url(), &jwt_body(&token)).await;
    let u = t.new_user("jane@acme.com", "Viewer").await;
    let g = t.new_group("Finance").await;
    assert_eq!(t.add_member(&g, &u).await.status, 200);
    assert_eq!(t.req(Method::GET, "users", None).await.status, 403);
    assert_eq!(
        t.req(Method::DELETE, &format!("users/{u}"), None)
            .await
            .status,
        403
    );
    sim.stop().await;
}

#[tokio::test]
async fn the_scope_error_status_is_a_switch() {
    let sim = spawn_with(with_switches(&[("tableau.scope_error_status", "401")])).await;
    let token = jwt(
        claims(&["tableau:users:read"]),
        "sim-secret-id",
        "simulator-connected-app-secret",
    );
    let t = login_with(&sim.base_url(), &jwt_body(&token)).await;
    let r = t.add_user("jane@acme.com", "Viewer").await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "401000".into()));
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Users

#[tokio::test]
async fn user_crud_has_the_recorded_shapes_and_statuses() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let r = t.add_user("cassie@acme.com", "Viewer").await;
    assert_eq!(r.status, 201);
    assert_eq!(names_of(&r.body), sample("user_add.xml"));
    let id = r
        .xml()
        .child("user")
        .unwrap()
        .attr("id")
        .unwrap()
        .to_string();

    let r = t
        .req(
            Method::PUT,
            &format!("users/{id}"),
            Some(r#"<tsRequest><user fullName="Cassie" email="cassie@acme.com" siteRole="Explorer"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // No id in the answer of Update User [A.4].
    assert_eq!(names_of(&r.body), sample("user_update.xml"));
    assert_eq!(
        r.xml().child("user").unwrap().attr("siteRole"),
        Some("Explorer")
    );

    let r = t.req(Method::GET, &format!("users/{id}"), None).await;
    assert_eq!(r.status, 200);
    let mut expected = sample("user_get_by_id.xml");
    // lastLogin is absent for a user who never signed in; email is part of the 3.x answer.
    expected.remove("user@lastLogin");
    expected.insert("user@email".into());
    assert_eq!(names_of(&r.body), expected);

    let r = t.req(Method::DELETE, &format!("users/{id}"), None).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let r = t.req(Method::GET, &format!("users/{id}"), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "404002".into()));
    let r = t.req(Method::DELETE, &format!("users/{id}"), None).await;
    assert_eq!(r.code(), "404002");
    sim.stop().await;
}

#[tokio::test]
async fn user_list_has_the_recorded_shape() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let r = t
        .req(
            Method::GET,
            "users?filter=name:eq:admin@tableau.local",
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(names_of(&r.body), sample("user_get.xml"));
    let r = t
        .req(Method::GET, "users?filter=name:eq:nobody", None)
        .await;
    assert_eq!(names_of(&r.body), sample("user_get_empty.xml"));
    // fields=_all_: the attributes of user_get_all_fields.xml (less Cloud's idpConfigurationId).
    let r = t
        .req(
            Method::GET,
            "users?fields=_all_&filter=name:eq:admin@tableau.local",
            None,
        )
        .await;
    let mut expected = sample("user_get_all_fields.xml");
    expected.remove("user@idpConfigurationId");
    assert_eq!(names_of(&r.body), expected);
    sim.stop().await;
}

#[tokio::test]
async fn add_user_validates_role_auth_setting_and_uniqueness() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    for role in ["Publisher", "Interactor", "ServerAdministrator", "Boss", ""] {
        let r = t.add_user("x@acme.com", role).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "400013".into()),
            "{role}"
        );
    }
    let r = t
        .req(
            Method::POST,
            "users",
            Some(r#"<tsRequest><user name="x@acme.com" siteRole="Viewer" authSetting="Kerberos"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.code(), "400003");
    let r = t
        .req(
            Method::POST,
            "users",
            Some(r#"<tsRequest><user siteRole="Viewer"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.code(), "400000");
    t.new_user("jane@acme.com", "Viewer").await;
    // User names clash without regard to case: 409000 [A.4].
    let r = t.add_user("JANE@acme.com", "Creator").await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "409000".into()));
    sim.stop().await;
}

#[tokio::test]
async fn a_user_cannot_change_their_own_site_role() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let r = t
        .req(
            Method::PUT,
            &format!("users/{}", t.user),
            Some(r#"<tsRequest><user siteRole="Viewer"/></tsRequest>"#),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "403009".into()));
    // Other fields may change.
    let r = t
        .req(
            Method::PUT,
            &format!("users/{}", t.user),
            Some(r#"<tsRequest><user fullName="The Admin"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.status, 200);
    sim.stop().await;
}

#[tokio::test]
async fn seat_limits_unlicense_on_add_and_conflict_on_update() {
    let sim = spawn_with(with_switches(&[(
        "tableau.seats",
        "creator=2,explorer=1,viewer=1",
    )]))
    .await;
    let t = login(&sim.base_url()).await;
    let a = t.add_user("a@acme.com", "Viewer").await;
    assert_eq!(
        a.xml().child("user").unwrap().attr("siteRole"),
        Some("Viewer")
    );
    // No Viewer seat left: created, but Unlicensed (Okta's documented behaviour) [A.3].
    let b = t.add_user("b@acme.com", "Viewer").await;
    assert_eq!(b.status, 201);
    assert_eq!(
        b.xml().child("user").unwrap().attr("siteRole"),
        Some("Unlicensed")
    );
    let b_id = b
        .xml()
        .child("user")
        .unwrap()
        .attr("id")
        .unwrap()
        .to_string();
    // Update into a full licence class: 409014.
    let r = t
        .req(
            Method::PUT,
            &format!("users/{b_id}"),
            Some(r#"<tsRequest><user siteRole="Viewer"/></tsRequest>"#),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "409014".into()));
    // The admin (ServerAdministrator) uses one of the two Creator seats.
    t.new_user("c@acme.com", "Creator").await;
    let r = t
        .req(
            Method::PUT,
            &format!("users/{b_id}"),
            Some(r#"<tsRequest><user siteRole="SiteAdministratorCreator"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.code(), "409014");
    let r = t
        .req(
            Method::PUT,
            &format!("users/{b_id}"),
            Some(r#"<tsRequest><user siteRole="Explorer"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.status, 200);
    sim.stop().await;

    let sim = spawn_with(with_switches(&[
        ("tableau.seats", "viewer=1"),
        ("tableau.add_over_capacity", "conflict"),
    ]))
    .await;
    let t = login(&sim.base_url()).await;
    t.new_user("a@acme.com", "Viewer").await;
    let r = t.add_user("b@acme.com", "Viewer").await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "409014".into()));
    sim.stop().await;
}

#[tokio::test]
async fn removing_a_content_owner_is_409003_and_unlicenses_them() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let id = t.new_user("owner@acme.com", "Creator").await;
    let r = Client::new()
        .put(format!(
            "{}/__sim/tableau/sites/{}/users/{id}/content?count=2",
            t.base, t.site
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = t.req(Method::DELETE, &format!("users/{id}"), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "409003".into()));
    let r = t.req(Method::GET, &format!("users/{id}"), None).await;
    assert_eq!(r.status, 200, "the user stays");
    assert_eq!(
        r.xml().child("user").unwrap().attr("siteRole"),
        Some("Unlicensed")
    );
    // mapAssetsTo hands the content on, then the removal succeeds.
    let r = t
        .req(
            Method::DELETE,
            &format!("users/{id}?mapAssetsTo={}", t.user),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Groups and members

#[tokio::test]
async fn groups_have_case_insensitive_unique_names_and_all_users_stays() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let r = t
        .req(
            Method::POST,
            "groups",
            Some(r#"<tsRequest><group name="Finance" minimumSiteRole="Viewer"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(names_of(&r.body), sample("group_create.xml"));
    let g = r
        .xml()
        .child("group")
        .unwrap()
        .attr("id")
        .unwrap()
        .to_string();
    let r = t
        .req(
            Method::POST,
            "groups",
            Some(r#"<tsRequest><group name="FINANCE"/></tsRequest>"#),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "409009".into()));
    let r = t
        .req(
            Method::POST,
            "groups",
            Some(r#"<tsRequest><group name="X" minimumSiteRole="Boss"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.code(), "400013");
    // Update: 200 with the <import> child of group_update.xml; renaming onto a taken name 409009.
    let r = t
        .req(
            Method::PUT,
            &format!("groups/{g}"),
            Some(r#"<tsRequest><group name="Finance EU" minimumSiteRole="Explorer"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(names_of(&r.body), sample("group_update.xml"));
    let r = t
        .req(
            Method::PUT,
            &format!("groups/{g}"),
            Some(r#"<tsRequest><group name="all users"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.code(), "409009");
    // "All Users" cannot be deleted [A.5].
    let all = t.all_users_group().await;
    let r = t.req(Method::DELETE, &format!("groups/{all}"), None).await;
    assert_eq!(r.status, 403);
    let r = t.req(Method::DELETE, &format!("groups/{g}"), None).await;
    assert_eq!(r.status, 204);
    let r = t.req(Method::DELETE, &format!("groups/{g}"), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "404012".into()));
    sim.stop().await;
}

#[tokio::test]
async fn group_list_has_the_recorded_shapes() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    t.new_group("Another group").await;
    let r = t.req(Method::GET, "groups", None).await;
    assert_eq!(names_of(&r.body), sample("group_get.xml"));
    let r = t.req(Method::GET, "groups?fields=_all_", None).await;
    assert_eq!(names_of(&r.body), sample("group_get_all_fields.xml"));
    let x = r.xml();
    let mut groups = Vec::new();
    x.all("group", &mut groups);
    assert_eq!(groups[0].attr("name"), Some("All Users"));
    assert_eq!(groups[0].attr("userCount"), Some("1"));
    sim.stop().await;
}

#[tokio::test]
async fn membership_add_twice_is_409011_and_remove_is_204() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let u = t.new_user("jane@acme.com", "Viewer").await;
    let g = t.new_group("Finance").await;
    let r = t.add_member(&g, &u).await;
    assert_eq!(r.status, 200);
    assert_eq!(names_of(&r.body), sample("group_add_user.xml"));
    let r = t.add_member(&g, &u).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "409011".into()));
    // Everyone is already in "All Users".
    let all = t.all_users_group().await;
    assert_eq!(t.add_member(&all, &u).await.code(), "409011");
    let r = t
        .add_member(&g, "00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(r.code(), "404002");
    let r = t
        .add_member("00000000-0000-0000-0000-000000000000", &u)
        .await;
    assert_eq!(r.code(), "404012");

    let r = t.req(Method::GET, &format!("groups/{g}/users"), None).await;
    assert_eq!(r.status, 200);
    let mut expected = sample("group_populate_users.xml");
    expected.remove("user@lastLogin");
    assert_eq!(names_of(&r.body), expected);
    let r = t.req(Method::GET, &format!("users/{u}/groups"), None).await;
    assert_eq!(names_of(&r.body), sample("user_populate_groups.xml"));
    let mut gs = Vec::new();
    let x = r.xml();
    x.all("group", &mut gs);
    let names: Vec<_> = gs.iter().map(|g| g.attr("name").unwrap()).collect();
    assert_eq!(names, ["All Users", "Finance"]);

    let r = t
        .req(Method::DELETE, &format!("groups/{g}/users/{u}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = t
        .req(Method::DELETE, &format!("groups/{g}/users/{u}"), None)
        .await;
    assert_eq!(r.status, 404);
    let r = t.req(Method::GET, &format!("groups/{g}/users"), None).await;
    assert_eq!(
        r.xml().find("pagination").unwrap().attr("totalAvailable"),
        Some("0")
    );
    // Deleting a group leaves its members on the site [A.5].
    t.add_member(&g, &u).await;
    t.req(Method::DELETE, &format!("groups/{g}"), None).await;
    assert_eq!(
        t.req(Method::GET, &format!("users/{u}"), None).await.status,
        200
    );
    sim.stop().await;
}

#[tokio::test]
async fn bulk_membership_add_and_remove() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let a = t.new_user("alice@acme.com", "Viewer").await;
    let b = t.new_user("bob@acme.com", "Explorer").await;
    let g = t.new_group("Finance").await;
    let body = format!(r#"<tsRequest><users><user id="{a}"/><user id="{b}"/></users></tsRequest>"#);
    let r = t
        .req(Method::POST, &format!("groups/{g}/users"), Some(&body))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(names_of(&r.body), sample("group_add_users.xml"));
    let r = t
        .req(
            Method::PUT,
            &format!("groups/{g}/users/remove"),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = t.req(Method::GET, &format!("groups/{g}/users"), None).await;
    assert_eq!(
        r.xml().find("pagination").unwrap().attr("totalAvailable"),
        Some("0")
    );
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Paging, filters, sort

#[tokio::test]
async fn paging_is_one_based_with_total_and_exact_error_codes() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    for i in 0..4 {
        t.new_user(&format!("u{i}@acme.com"), "Viewer").await;
    }
    let r = t
        .req(Method::GET, "users?pageSize=2&pageNumber=3", None)
        .await;
    assert_eq!(r.status, 200);
    let x = r.xml();
    let p = x.child("pagination").unwrap();
    assert_eq!(
        (
            p.attr("pageNumber"),
            p.attr("pageSize"),
            p.attr("totalAvailable")
        ),
        (Some("3"), Some("2"), Some("5"))
    );
    let mut users = Vec::new();
    x.all("user", &mut users);
    assert_eq!(users.len(), 1);
    let r = t
        .req(Method::GET, "users?pageSize=2&pageNumber=4", None)
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "400006".into()));
    for bad in ["pageNumber=0", "pageNumber=x", "pageNumber=-1"] {
        assert_eq!(
            t.req(Method::GET, &format!("users?{bad}"), None)
                .await
                .code(),
            "400006"
        );
    }
    for bad in ["pageSize=0", "pageSize=abc"] {
        assert_eq!(
            t.req(Method::GET, &format!("users?{bad}"), None)
                .await
                .code(),
            "400007"
        );
    }
    let r = t.req(Method::GET, "users?pageSize=1001", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "403014".into()));
    assert_eq!(
        t.req(Method::GET, "users?pageSize=1000", None).await.status,
        200
    );
    assert_eq!(
        t.req(Method::GET, "groups?pageSize=1001", None)
            .await
            .code(),
        "403014"
    );
    sim.stop().await;
}

#[tokio::test]
async fn filters_work_raw_and_url_encoded() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    t.new_user("jane@acme.com", "Viewer").await;
    t.new_user("john@acme.com", "Creator").await;
    t.new_user("ann@acme.com", "Viewer").await;
    let count = |r: Resp| {
        r.xml()
            .find("pagination")
            .unwrap()
            .attr("totalAvailable")
            .unwrap()
            .to_string()
    };
    let cases = [
        ("users?filter=name:eq:jane@acme.com", "1"),
        ("users?filter=name:eq:JANE@acme.com", "0"),
        ("users?filter=name:cieq:JANE@acme.com", "1"),
        ("users?filter=name:in:[jane@acme.com,ann@acme.com]", "2"),
        (
            "users?filter=name%3Ain%3A%5Bjane%40acme.com%2Cann%40acme.com%5D",
            "2",
        ),
        ("users?filter=siteRole:eq:Viewer", "2"),
        ("users?filter=siteRole:in:[Viewer,Creator]", "3"),
        ("users?filter=siteRole:eq:Viewer,name:eq:ann@acme.com", "1"),
        ("users?filter=lastLogin:gte:2000-01-01T00:00:00Z", "1"),
        ("groups?filter=name:eq:All%20Users", "1"),
        ("groups?filter=name:like:all*", "1"),
        ("groups?filter=userCount:gte:4", "1"),
    ];
    for (q, n) in cases {
        let r = t.req(Method::GET, q, None).await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        assert_eq!(count(r), n, "{q}");
    }
    let r = t.req(Method::GET, "users?filter=email:eq:x", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "400000".into()));
    let r = t.req(Method::GET, "users?filter=name", None).await;
    assert_eq!(r.code(), "400000");
    // sort=name:desc
    let r = t.req(Method::GET, "users?sort=name:desc", None).await;
    let x = r.xml();
    let mut us = Vec::new();
    x.all("user", &mut us);
    let names: Vec<_> = us.iter().map(|u| u.attr("name").unwrap()).collect();
    assert_eq!(
        names,
        [
            "john@acme.com",
            "jane@acme.com",
            "ann@acme.com",
            "admin@tableau.local"
        ]
    );
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input, unknown paths, faults, server info, stats

#[tokio::test]
async fn malformed_bodies_unknown_paths_and_wrong_methods() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let r = t
        .req(Method::POST, "users", Some("<tsRequest><user name="))
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "400000".into()));
    let r = t.req_json(Method::POST, "groups", None).await;
    assert_eq!(r.status, 400);
    let r = call(
        &t.http,
        Method::POST,
        &t.url("users"),
        Some(&t.token),
        Some("{not json"),
        true,
    )
    .await;
    assert_eq!(r.json()["error"]["code"], "400000");
    let r = t.req(Method::PATCH, "users", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (405, "405000".into()));
    let r = t.req(Method::GET, "nothing-here", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "404003".into()));
    // A body in the wrong shape is a 400, never a panic.
    let r = t
        .req_json(
            Method::POST,
            "users",
            Some(&json!({"user": [1, 2, {"name": 3}]})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    sim.stop().await;
}

#[tokio::test]
async fn server_info_needs_no_auth() {
    let sim = spawn().await;
    let r = call(
        &Client::new(),
        Method::GET,
        &format!("{}/api/{V}/serverinfo", sim.base_url()),
        None,
        None,
        false,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(names_of(&r.body), sample("server_info_get.xml"));
    sim.stop().await;
}

#[tokio::test]
async fn throttling_answers_429000_and_errors_answer_5xx() {
    let sim = spawn_with(SimOptions {
        throttle_rps: Some(1.0),
        ..SimOptions::default()
    })
    .await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = call(
            &Client::new(),
            Method::GET,
            &format!("{}/api/{V}/serverinfo", sim.base_url()),
            None,
            None,
            false,
        )
        .await;
        if r.status == 429 {
            codes.push(r.code());
        }
    }
    assert!(!codes.is_empty());
    assert!(codes.iter().all(|c| c == "429000"));
    sim.stop().await;

    let sim = spawn_with(SimOptions {
        error_rate: 1.0,
        ..SimOptions::default()
    })
    .await;
    let r = sign_in(&sim.base_url(), &pat_body("default")).await;
    assert_eq!(r.status, 500);
    sim.stop().await;
}

#[tokio::test]
async fn stats_count_calls_by_route() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    t.req(Method::GET, "users", None).await;
    t.req(Method::GET, "users", None).await;
    let s: Value = Client::new()
        .get(format!("{}/__sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["by_route"]["GET /api/{v}/sites/{site}/users"], 2);
    assert_eq!(s["by_route"]["POST /api/{v}/auth/signin"], 1);
    sim.stop().await;
}

/// Throughput of Query User on Site over loopback, next to the cheapest route of the server
/// (`serverinfo`, no auth) as a baseline for what the client and the machine allow; run with
/// `cargo test --release --test sim_tableau -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_user_gets() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let user_url = t.url(&format!("users/{}", t.user));
    let info_url = format!("{}/api/{V}/serverinfo", t.base);
    for (what, url) in [("serverinfo (baseline)", info_url), ("user GET", user_url)] {
        let secs = 3;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let http = t.http.clone();
            let url = url.clone();
            let token = t.token.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while std::time::Instant::now() < deadline {
                    let r = http
                        .get(&url)
                        .header("X-Tableau-Auth", &token)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        println!("{what}: {} requests per second", total / secs);
    }
    sim.stop().await;
}

#[tokio::test]
async fn only_administrators_manage_users_and_groups() {
    let sim = spawn().await;
    let admin = login(&sim.base_url()).await;
    let jane = admin.new_user("jane@acme.com", "Explorer").await;
    admin
        .req(
            Method::PUT,
            &format!("users/{jane}"),
            Some(r#"<tsRequest><user password="pw-jane"/></tsRequest>"#),
        )
        .await;
    let t = login_with(
        &sim.base_url(),
        r#"<tsRequest><credentials name="jane@acme.com" password="pw-jane"><site contentUrl="default"/></credentials></tsRequest>"#,
    )
    .await;
    assert_eq!(t.user, jane);
    assert_eq!(
        t.req(Method::GET, &format!("users/{jane}"), None)
            .await
            .status,
        200
    );
    let r = t
        .req(Method::GET, &format!("users/{}", admin.user), None)
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "403133".into()));
    assert_eq!(t.add_user("x@acme.com", "Viewer").await.status, 403);
    assert_eq!(t.req(Method::GET, "groups", None).await.status, 403);
    // A connected-app JWT for a non-admin `sub` holds no more than that user's rights.
    let mut c = claims(&["tableau:users:read", "tableau:users:create"]);
    c["sub"] = json!("jane@acme.com");
    let token = jwt(c, "sim-secret-id", "simulator-connected-app-secret");
    let t = login_with(&sim.base_url(), &jwt_body(&token)).await;
    assert_eq!(t.add_user("x@acme.com", "Viewer").await.status, 403);
    sim.stop().await;
}

/// `element` / `element@attribute` names of a JSON answer, read by the JSON mapping rule of
/// [A.1]: an object value is an element, a string value an attribute, an array holds repeated
/// elements, `value` is an element's text.
fn json_names(v: &Value, parent: Option<&str>, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                match val {
                    Value::String(_) if parent.is_some() && k != "value" => {
                        out.insert(format!("{}@{k}", parent.unwrap()));
                    }
                    Value::String(_) if k == "value" => {}
                    Value::String(_) => {
                        // A text-only element at the top (`restApiVersion`).
                        out.insert(k.clone());
                    }
                    Value::Array(items) => {
                        out.insert(k.clone());
                        for i in items {
                            json_names(i, Some(k), out);
                        }
                    }
                    other => {
                        out.insert(k.clone());
                        json_names(other, Some(k), out);
                    }
                }
            }
        }
        _ => panic!("attribute values must be strings, got {v}"),
    }
}

#[tokio::test]
async fn the_json_form_mirrors_the_xml_form() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let u = t.new_user("jane@acme.com", "Viewer").await;
    let g = t.new_group("Finance").await;
    t.add_member(&g, &u).await;
    for path in [
        "users".to_string(),
        "users?fields=_all_".into(),
        format!("users/{u}"),
        format!("users/{u}/groups"),
        "groups?fields=_all_".into(),
        format!("groups/{g}/users"),
    ] {
        let x = t.req(Method::GET, &path, None).await;
        let j = t.req_json(Method::GET, &path, None).await;
        assert_eq!((x.status, j.status), (StatusCode::OK, StatusCode::OK));
        let mut from_json = BTreeSet::new();
        json_names(&j.json(), None, &mut from_json);
        assert_eq!(from_json, names_of(&x.body), "{path}");
    }
    // Bulk membership in JSON: {"users":{"user":[{"id":…},…]}} [A.5, JSON mapping].
    let v = t.new_user("vic@acme.com", "Viewer").await;
    let w = t.new_user("wes@acme.com", "Viewer").await;
    let r = t
        .req_json(
            Method::POST,
            &format!("groups/{g}/users"),
            Some(&json!({"users": {"user": [{"id": v}, {"id": w}]}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["users"]["user"].as_array().unwrap().len(), 2);
    let r = t
        .req_json(
            Method::POST,
            &format!("groups/{g}/users"),
            Some(&json!({"user": {"id": v}})),
        )
        .await;
    assert_eq!(r.json()["error"]["code"], "409011");
    let r = t
        .req_json(
            Method::PUT,
            &format!("groups/{g}"),
            Some(&json!({"group": {"name": "Finance EU"}})),
        )
        .await;
    assert_eq!(r.json()["group"]["name"], "Finance EU");
    sim.stop().await;
}

#[tokio::test]
async fn the_same_seed_gives_the_same_ids() {
    let ids = |seed| async move {
        let sim = spawn_with(SimOptions {
            seed: Some(seed),
            ..SimOptions::default()
        })
        .await;
        let t = login(&sim.base_url()).await;
        let u = t.new_user("jane@acme.com", "Viewer").await;
        sim.stop().await;
        (t.site, t.user, u, t.token)
    };
    let a = ids(7).await;
    assert_eq!(a, ids(7).await);
    assert_ne!(a.0, ids(8).await.0);
}

#[tokio::test]
async fn garbage_in_is_a_4xx_never_a_5xx() {
    let sim = spawn().await;
    let t = login(&sim.base_url()).await;
    let u = t.new_user("jane@acme.com", "Viewer").await;
    let g = t.new_group("Finance").await;
    let bodies = [
        "",
        "\u{0}\u{1}\u{2}",
        "<",
        "<tsRequest>",
        "<tsRequest></other>",
        "<tsRequest><user/></tsRequest>",
        "<tsRequest><group/></tsRequest>",
        "<tsRequest><users><user/></users></tsRequest>",
        r#"<tsRequest><user id="&bogus;"/></tsRequest>"#,
        "{}",
        "[]",
        r#"{"user": null}"#,
        r#"{"user": {"name": {"deep": [1, {"x": null}]}}}"#,
    ];
    let targets = [
        (Method::POST, "users".to_string()),
        (Method::PUT, format!("users/{u}")),
        (Method::POST, "groups".into()),
        (Method::PUT, format!("groups/{g}")),
        (Method::POST, format!("groups/{g}/users")),
        (Method::PUT, format!("groups/{g}/users/remove")),
    ];
    for (m, path) in &targets {
        for b in bodies {
            for json in [false, true] {
                let r = call(
                    &t.http,
                    m.clone(),
                    &t.url(path),
                    Some(&t.token),
                    Some(b),
                    json,
                )
                .await;
                // Every attribute of an update is optional, so `<user/>` may be a 200.
                assert!(
                    r.status.as_u16() < 500,
                    "{m} {path} {b:?} json={json}: {} {}",
                    r.status,
                    r.body
                );
            }
        }
    }
    for q in [
        "users?filter=%ZZ",
        "users?filter=name:in:[a,b",
        "users?filter=lastLogin:gt",
        "users?filter=::",
        "users?sort=name:sideways",
        "users?pageSize=99999999999999999999999",
        "users?pageNumber=18446744073709551615&pageSize=1000",
        "groups?filter=userCount:gt:many",
        "groups?sort=color:asc",
    ] {
        let r = t.req(Method::GET, q, None).await;
        assert!(r.status.is_client_error(), "{q}: {} {}", r.status, r.body);
    }
    // Names that need escaping survive both forms.
    let name = r#"R&D <"x"> 'y'"#;
    let r = t
        .req_json(
            Method::POST,
            "groups",
            Some(&json!({"group": {"name": name}})),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = t.req(Method::GET, "groups?filter=name:like:R*", None).await;
    assert_eq!(r.xml().find("group").unwrap().attr("name"), Some(name));
    sim.stop().await;
}

#[tokio::test]
async fn the_cloud_flavor_applies_tableau_cloud_rules() {
    let sim = spawn_with(with_switches(&[("tableau.flavor", "cloud")])).await;
    let r = sign_in(&sim.base_url(), &pat_body("")).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "401001".into()));
    let t = login(&sim.base_url()).await;
    let r = t.add_user("jane", "Viewer").await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "400000".into()));
    let u = t.new_user("jane@acme.com", "Viewer").await;
    for attr in [
        r#"fullName="Jane""#,
        r#"name="j@acme.com""#,
        r#"password="x""#,
    ] {
        let r = t
            .req(
                Method::PUT,
                &format!("users/{u}"),
                Some(&format!("<tsRequest><user {attr}/></tsRequest>")),
            )
            .await;
        assert_eq!(r.code(), "400000", "{attr}");
    }
    let r = t
        .req(
            Method::PUT,
            &format!("users/{u}"),
            Some(r#"<tsRequest><user siteRole="Explorer" email="jane@acme.com"/></tsRequest>"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = t.req(Method::GET, &format!("users/{}", t.user), None).await;
    assert_eq!(
        r.xml().child("user").unwrap().attr("siteRole"),
        Some("SiteAdministratorCreator")
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_minimum_site_role_group_grants_its_role_at_sign_in() {
    let sim = spawn().await;
    let admin = login(&sim.base_url()).await;
    let jane = admin.new_user("jane@acme.com", "Unlicensed").await;
    admin
        .req(
            Method::PUT,
            &format!("users/{jane}"),
            Some(r#"<tsRequest><user password="pw-jane"/></tsRequest>"#),
        )
        .await;
    let r = admin
        .req(
            Method::POST,
            "groups",
            Some(r#"<tsRequest><group name="Analysts" minimumSiteRole="Explorer" grantLicenseMode="onLogin"/></tsRequest>"#),
        )
        .await;
    let g = r
        .xml()
        .child("group")
        .unwrap()
        .attr("id")
        .unwrap()
        .to_string();
    admin.add_member(&g, &jane).await;
    let role = |r: Resp| {
        r.xml()
            .child("user")
            .unwrap()
            .attr("siteRole")
            .unwrap()
            .to_string()
    };
    assert_eq!(
        role(admin.req(Method::GET, &format!("users/{jane}"), None).await),
        "Unlicensed"
    );
    let body = r#"<tsRequest><credentials name="jane@acme.com" password="pw-jane"><site contentUrl="default"/></credentials></tsRequest>"#;
    assert_eq!(sign_in(&sim.base_url(), body).await.status, 200);
    assert_eq!(
        role(admin.req(Method::GET, &format!("users/{jane}"), None).await),
        "Explorer"
    );
    sim.stop().await;
}
