//! The shared vendor client against a purpose-built vendor on a real socket (actix-web on port
//! 0). The vendor counts sign-ins and requests, keeps an in-flight gauge, and answers from a
//! script, so that retries, re-authentication, limits and the breaker are observed from the
//! vendor's side rather than assumed.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use async_trait::async_trait;
use parking_lot::Mutex;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use scim_bridge::config::Secret;
use scim_bridge::connector::http::{
    Authenticator, BreakerState, ClientSettings, CreateOutcome, RateBudget, Url, VendorClient,
    VendorError, VendorRequest,
};
use scim_bridge::scim::ScimError;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "vendor-pa55word-do-not-print";

/// One scripted answer, consumed by the next authenticated request.
#[derive(Clone, Default)]
struct Step {
    status: u16,
    retry_after: Option<&'static str>,
    delay_ms: u64,
    /// Carry out the request (e.g. create the user) before answering with `status`: the
    /// "applied, but the answer was lost" case.
    apply_first: bool,
}

fn step(status: u16) -> Step {
    Step {
        status,
        ..Step::default()
    }
}

#[derive(Default)]
struct VendorState {
    sign_ins: AtomicUsize,
    sign_in_delay_ms: AtomicU64,
    valid_token: Mutex<Option<String>>,
    requests: AtomicUsize,
    posts: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay_ms: AtomicU64,
    script: Mutex<VecDeque<Step>>,
    users: Mutex<Vec<String>>,
    /// When every call (sign-ins included) arrived.
    arrivals: Mutex<Vec<Instant>>,
    /// A throttle in front of the API: a token bucket that answers 429 without Retry-After.
    throttle: Mutex<Option<Throttle>>,
    throttled: AtomicUsize,
    /// When the throttle refused a call.
    refused: Mutex<Vec<Instant>>,
    /// When the throttle let an API call through.
    passed: Mutex<Vec<Instant>>,
}

/// `rate` per second, bursts of `rate` (one second's worth); a refused call costs nothing.
struct Throttle {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Throttle {
    fn new(rate: f64) -> Throttle {
        Throttle {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    fn admit(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct TestVendor {
    state: Arc<VendorState>,
    base: Url,
    handle: actix_web::dev::ServerHandle,
}

impl TestVendor {
    async fn start() -> TestVendor {
        let state = Arc::new(VendorState::default());
        let data = web::Data::from(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/api/login", web::post().to(login))
                .default_service(web::to(api))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        TestVendor {
            state,
            base: Url::parse(&format!("http://{addr}/api/")).unwrap(),
            handle,
        }
    }

    fn script(&self, steps: impl IntoIterator<Item = Step>) {
        self.state.script.lock().extend(steps);
    }

    /// The vendor forgets every session (expiry, token revocation).
    fn expire_sessions(&self) {
        *self.state.valid_token.lock() = Some("revoked".into());
    }

    fn sign_ins(&self) -> usize {
        self.state.sign_ins.load(SeqCst)
    }
    fn requests(&self) -> usize {
        self.state.requests.load(SeqCst)
    }
    fn posts(&self) -> usize {
        self.state.posts.load(SeqCst)
    }

    fn client(&self, settings: ClientSettings) -> VendorClient {
        VendorClient::new(self.base.clone(), settings, Arc::new(PasswordAuth::good())).unwrap()
    }
}

impl Drop for TestVendor {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

#[derive(serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login(state: web::Data<VendorState>, form: web::Form<LoginForm>) -> HttpResponse {
    state.arrivals.lock().push(Instant::now());
    let n = state.sign_ins.fetch_add(1, SeqCst) + 1;
    let delay = state.sign_in_delay_ms.load(SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if form.username != "admin" || form.password != PASSWORD {
        // A careless vendor that echoes what it was sent.
        return HttpResponse::Unauthorized().json(json!({
            "error": {"message": format!("bad password {:?} for {}", form.password, form.username)}
        }));
    }
    let token = format!("tok-{n}");
    *state.valid_token.lock() = Some(token.clone());
    HttpResponse::Ok().json(json!({ "access_token": token }))
}

struct Gauge<'a>(&'a VendorState);
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

async fn api(state: web::Data<VendorState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    state.requests.fetch_add(1, SeqCst);
    state.arrivals.lock().push(Instant::now());
    let admitted = state.throttle.lock().as_mut().map(Throttle::admit);
    match admitted {
        Some(false) => {
            state.throttled.fetch_add(1, SeqCst);
            state.refused.lock().push(Instant::now());
            return HttpResponse::TooManyRequests().body("slow down");
        }
        Some(true) => state.passed.lock().push(Instant::now()),
        None => {}
    }
    let now = state.in_flight.fetch_add(1, SeqCst) + 1;
    state.max_in_flight.fetch_max(now, SeqCst);
    let _gauge = Gauge(&state);

    let authorized = {
        let valid = state.valid_token.lock();
        let sent = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        matches!((valid.as_deref(), sent), (Some(t), Some(s)) if s == format!("Bearer {t}"))
            || req.headers().contains_key("x-static-key")
    };
    if !authorized {
        return HttpResponse::Unauthorized().body("Unauthenticated");
    }
    if req.method() == actix_web::http::Method::POST {
        state.posts.fetch_add(1, SeqCst);
    }
    let delay = state.delay_ms.load(SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let scripted = state.script.lock().pop_front();
    if let Some(step) = scripted {
        if step.apply_first {
            perform(&state, &req, &body);
        }
        if step.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(step.delay_ms)).await;
        }
        if step.status != 0 {
            let mut resp =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(step.status).unwrap());
            if let Some(ra) = step.retry_after {
                resp.insert_header(("Retry-After", ra));
            }
            return resp.json(json!({"error": {"code": step.status, "message": "scripted"}}));
        }
        if step.apply_first {
            return HttpResponse::Ok().json(json!({"ok": true}));
        }
    }
    perform(&state, &req, &body)
}

/// `POST /api/users {"userName"}` creates; `GET /api/users?userName=` finds; anything else is 200.
fn perform(state: &VendorState, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    match (req.method().as_str(), req.path()) {
        ("POST", "/api/users") => {
            let value: serde_json::Value = serde_json::from_slice(body).unwrap();
            let name = value["userName"].as_str().unwrap().to_string();
            let mut users = state.users.lock();
            if users.contains(&name) {
                return HttpResponse::Conflict().json(json!({"error": {"code": 2004}}));
            }
            users.push(name.clone());
            HttpResponse::Created()
                .json(json!({"id": format!("u{}", users.len()), "userName": name}))
        }
        ("GET", "/api/users") => {
            let wanted = req
                .query_string()
                .split('&')
                .find_map(|kv| kv.strip_prefix("userName="))
                .unwrap_or("")
                .to_string();
            let users = state.users.lock();
            let found: Vec<_> = users
                .iter()
                .enumerate()
                .filter(|(_, u)| **u == wanted)
                .map(|(i, u)| json!({"id": format!("u{}", i + 1), "userName": u}))
                .collect();
            HttpResponse::Ok().json(found)
        }
        _ => HttpResponse::Ok().json(json!({"path": req.path()})),
    }
}

/// A Sisense-style sign-in: form-encoded login, bearer token.
struct PasswordAuth {
    password: Secret,
}

impl PasswordAuth {
    fn good() -> PasswordAuth {
        PasswordAuth {
            password: Secret::new(PASSWORD),
        }
    }
}

#[async_trait]
impl Authenticator for PasswordAuth {
    async fn sign_in(
        &self,
        http: &reqwest::Client,
        base: &Url,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError> {
        let resp = http
            .post(base.join("login").unwrap())
            .form(&[("username", "admin"), ("password", self.password.expose())])
            .send()
            .await
            .map_err(|e| VendorError::from_transport(&e))?;
        if !resp.status().is_success() {
            return Err(VendorError::sign_in_refused(
                resp.status().as_u16(),
                resp.headers(),
            ));
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| VendorError::from_transport(&e))?;
        let token = body["access_token"].as_str().unwrap_or_default();
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        value.set_sensitive(true);
        Ok(vec![(AUTHORIZATION, value)])
    }
}

/// An API-key vendor: no sign-in round trip (Metabase `x-api-key`).
struct StaticKey;

#[async_trait]
impl Authenticator for StaticKey {
    async fn sign_in(
        &self,
        _: &reqwest::Client,
        _: &Url,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError> {
        Ok(vec![(
            HeaderName::from_static("x-static-key"),
            HeaderValue::from_static("k"),
        )])
    }
}

/// Fast retries, generous limits: each test narrows what it is about.
fn fast() -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        rate_per_sec: f64::INFINITY,
        max_concurrency: 100,
        breaker_threshold: 1000,
        ..ClientSettings::default()
    }
}

async fn get_ok(client: &VendorClient, path: &str) {
    let resp = client.send(VendorRequest::get(path)).await.unwrap();
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
}

#[tokio::test]
async fn concurrent_requests_sign_in_once_and_re_sign_in_once_after_expiry() {
    let vendor = TestVendor::start().await;
    vendor.state.sign_in_delay_ms.store(100, SeqCst);
    let client = vendor.client(fast());
    assert!(!client.health().signed_in);

    let first: Vec<_> = (0..100)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { get_ok(&c, &format!("items/{i}")).await })
        })
        .collect();
    for t in first {
        t.await.unwrap();
    }
    assert_eq!(vendor.sign_ins(), 1, "lazy sign-in is single-flight");
    assert!(client.health().signed_in);

    vendor.expire_sessions();
    let second: Vec<_> = (0..100)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { get_ok(&c, &format!("items/{i}")).await })
        })
        .collect();
    for t in second {
        t.await.unwrap();
    }
    assert_eq!(
        vendor.sign_ins(),
        2,
        "100 requests on an expired session: one re-sign-in"
    );
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(fast());
    vendor.script([step(503), step(502), step(504)]);
    get_ok(&client, "items").await;
    assert_eq!(vendor.requests(), 4);
}

#[tokio::test]
async fn gives_up_after_max_attempts_with_unavailable() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(ClientSettings {
        max_attempts: 3,
        ..fast()
    });
    vendor.script(vec![step(503); 5]);
    let err = client.send(VendorRequest::get("items")).await.unwrap_err();
    assert!(matches!(err, VendorError::Unavailable { .. }), "{err:?}");
    assert_eq!(vendor.requests(), 3);
    let scim: ScimError = err.into();
    assert_eq!(scim.status, 503);
    assert!(scim.retry_after.unwrap() >= 1);
}

#[tokio::test]
async fn retry_after_is_honoured_for_503_and_429() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(ClientSettings {
        backoff_max: Duration::from_secs(3),
        ..fast()
    });
    vendor.script([Step {
        status: 503,
        retry_after: Some("1"),
        ..Step::default()
    }]);
    let started = Instant::now();
    get_ok(&client, "items").await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");

    vendor.script([Step {
        status: 429,
        retry_after: Some("1"),
        ..Step::default()
    }]);
    let started = Instant::now();
    get_ok(&client, "items").await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(vendor.requests(), 4);
}

#[tokio::test]
async fn a_retry_after_beyond_backoff_max_goes_back_to_the_idp() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(fast());
    vendor.script([Step {
        status: 429,
        retry_after: Some("120"),
        ..Step::default()
    }]);
    let started = Instant::now();
    let err = client.send(VendorRequest::get("items")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        err,
        VendorError::Throttled {
            retry_after: Duration::from_secs(120)
        }
    );
    assert_eq!(vendor.requests(), 1);
    let scim: ScimError = err.into();
    assert_eq!((scim.status, scim.retry_after), (429, Some(120)));
}

#[tokio::test]
async fn persistent_429_without_retry_after_is_throttled() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(fast());
    vendor.script(vec![step(429); 10]);
    let err = client.send(VendorRequest::get("items")).await.unwrap_err();
    assert!(matches!(err, VendorError::Throttled { .. }), "{err:?}");
    assert_eq!(vendor.requests(), 4, "max_attempts");
    // Throttling is the vendor answering: it does not open the breaker.
    assert_eq!(client.health().breaker, BreakerState::Closed);
}

#[tokio::test]
async fn a_non_idempotent_post_that_gets_503_is_ambiguous_and_never_resent() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(fast());
    vendor.script([Step {
        status: 503,
        apply_first: true,
        ..Step::default()
    }]);
    let err = client
        .send(VendorRequest::post("users").json(json!({"userName": "ann"})))
        .await
        .unwrap_err();
    assert!(matches!(err, VendorError::Ambiguous { .. }), "{err:?}");
    assert_eq!(vendor.posts(), 1);
    let scim: ScimError = err.into();
    assert_eq!(scim.status, 503);
}

#[tokio::test]
async fn a_post_that_times_out_is_ambiguous_and_a_get_is_retried() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(ClientSettings {
        timeout: Duration::from_millis(800),
        ..fast()
    });
    client.ensure_signed_in().await.unwrap();
    vendor.script([Step {
        delay_ms: 2000,
        ..Step::default()
    }]);
    get_ok(&client, "items").await;
    assert_eq!(vendor.requests(), 2);

    vendor.script([Step {
        delay_ms: 2000,
        apply_first: true,
        ..Step::default()
    }]);
    let err = client
        .send(VendorRequest::post("users").json(json!({"userName": "bob"})))
        .await
        .unwrap_err();
    assert!(matches!(err, VendorError::Ambiguous { .. }), "{err:?}");
    assert_eq!(vendor.posts(), 1);
}

#[tokio::test]
async fn create_or_find_looks_the_user_up_before_any_retry() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(fast());
    let find = |name: &'static str| {
        let c = client.clone();
        move || {
            let c = c.clone();
            async move {
                let resp = c
                    .send(VendorRequest::get("users").query("userName", name))
                    .await?;
                let found: Vec<serde_json::Value> = resp.json()?;
                Ok(found.into_iter().next())
            }
        }
    };

    // Applied, answer lost: found, not sent again.
    vendor.script([Step {
        status: 503,
        apply_first: true,
        ..Step::default()
    }]);
    let outcome = client
        .create_or_find(
            VendorRequest::post("users").json(json!({"userName": "ann"})),
            find("ann"),
        )
        .await
        .unwrap();
    match outcome {
        CreateOutcome::Found(user) => assert_eq!(user["userName"], "ann"),
        other => panic!("{other:?}"),
    }
    assert_eq!(vendor.posts(), 1);

    // Not applied: not found, so the create is sent once more.
    vendor.script([step(503)]);
    let outcome = client
        .create_or_find(
            VendorRequest::post("users").json(json!({"userName": "bea"})),
            find("bea"),
        )
        .await
        .unwrap();
    match outcome {
        CreateOutcome::Sent(resp) => assert_eq!(resp.status, 201),
        other => panic!("{other:?}"),
    }
    assert_eq!(vendor.posts(), 3);
    assert_eq!(*vendor.state.users.lock(), vec!["ann", "bea"]);
}

#[tokio::test]
async fn a_post_is_retried_after_429_and_after_re_sign_in() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(fast());
    client.ensure_signed_in().await.unwrap();
    vendor.script([step(429)]);
    let resp = client
        .send(VendorRequest::post("users").json(json!({"userName": "cy"})))
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    assert_eq!(vendor.posts(), 2);

    vendor.expire_sessions();
    let resp = client
        .send(VendorRequest::post("users").json(json!({"userName": "di"})))
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    assert_eq!(vendor.sign_ins(), 2);
    assert_eq!(vendor.posts(), 3, "the 401 was not counted as a POST");
    assert_eq!(vendor.state.users.lock().len(), 2);
}

#[tokio::test]
async fn vendor_4xx_answers_pass_through_without_retry() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(fast());
    vendor.script([step(404), step(409)]);
    let resp = client.send(VendorRequest::get("users/x")).await.unwrap();
    assert_eq!(resp.status, 404);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], 404);
    let resp = client.send(VendorRequest::put("users/x")).await.unwrap();
    assert_eq!(resp.status, 409);
    assert_eq!(vendor.requests(), 2);
    let err = resp.rejected();
    assert!(matches!(err, VendorError::Rejected { status: 409, .. }));
    assert_eq!(client.health().breaker, BreakerState::Closed);
}

#[tokio::test]
async fn breaker_opens_fails_fast_half_opens_and_closes() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(ClientSettings {
        max_attempts: 1,
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_millis(400),
        ..fast()
    });
    client.ensure_signed_in().await.unwrap();
    vendor.script(vec![step(503); 3]);
    for _ in 0..3 {
        let err = client.send(VendorRequest::get("items")).await.unwrap_err();
        assert!(matches!(err, VendorError::Unavailable { .. }));
    }
    assert_eq!(vendor.requests(), 3);
    assert!(matches!(client.health().breaker, BreakerState::Open { .. }));
    assert!(!client.health().is_ready());
    assert!(client.health().last_error.unwrap().contains("503"));
    let reason = client.health().not_ready_reason().unwrap();
    assert!(
        reason.contains("circuit open") && reason.contains("503"),
        "{reason}"
    );

    // Open: fails fast, nothing reaches the vendor.
    let started = Instant::now();
    for _ in 0..10 {
        match client.send(VendorRequest::get("items")).await.unwrap_err() {
            VendorError::Unavailable { retry_after, .. } => {
                assert!(retry_after <= Duration::from_millis(400));
                let scim: ScimError = VendorError::Unavailable {
                    reason: "x".into(),
                    retry_after,
                }
                .into();
                assert_eq!((scim.status, scim.retry_after), (503, Some(1)));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(vendor.requests(), 3);
    assert!(matches!(
        client.ensure_signed_in().await,
        Err(VendorError::Unavailable { .. })
    ));

    // Half-open: one trial; a failure opens it again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(client.health().breaker, BreakerState::HalfOpen);
    vendor.script([step(503)]);
    assert!(client.send(VendorRequest::get("items")).await.is_err());
    assert_eq!(vendor.requests(), 4);
    assert!(matches!(client.health().breaker, BreakerState::Open { .. }));
    assert!(client.send(VendorRequest::get("items")).await.is_err());
    assert_eq!(vendor.requests(), 4);

    // A successful trial closes it.
    tokio::time::sleep(Duration::from_millis(450)).await;
    get_ok(&client, "items").await;
    assert_eq!(client.health().breaker, BreakerState::Closed);
    assert_eq!(client.health().last_error, None);
    assert_eq!(client.health().not_ready_reason(), None);
    get_ok(&client, "items").await;
    assert_eq!(vendor.requests(), 6);
}

#[tokio::test]
async fn while_half_open_only_one_trial_reaches_the_vendor() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(ClientSettings {
        max_attempts: 1,
        breaker_threshold: 1,
        breaker_cooldown: Duration::from_millis(200),
        ..fast()
    });
    client.ensure_signed_in().await.unwrap();
    vendor.script([step(503)]);
    assert!(client.send(VendorRequest::get("items")).await.is_err());
    tokio::time::sleep(Duration::from_millis(250)).await;
    vendor.script([Step {
        delay_ms: 1000,
        ..Step::default()
    }]);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.send(VendorRequest::get("items")).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(vendor.requests(), 2);
    assert_eq!(client.health().breaker, BreakerState::Closed);
}

#[tokio::test]
async fn connection_errors_are_retried_then_unavailable_never_ambiguous() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = Url::parse(&format!("http://127.0.0.1:{port}/api/")).unwrap();
    let client = VendorClient::new(base.clone(), fast(), Arc::new(StaticKey)).unwrap();
    let started = Instant::now();
    let err = client
        .send(VendorRequest::post("users").json(json!({"userName": "x"})))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    match &err {
        VendorError::Unavailable { reason, .. } => {
            assert!(reason.contains("connection failed"), "{reason}")
        }
        other => panic!("a connect error means nothing was sent: {other:?}"),
    }
    // A sign-in that cannot connect is Unavailable too, and readiness says so.
    let client = VendorClient::new(base, fast(), Arc::new(PasswordAuth::good())).unwrap();
    assert!(matches!(
        client.ensure_signed_in().await,
        Err(VendorError::Unavailable { .. })
    ));
    let health = client.health();
    assert!(!health.signed_in && !health.is_ready());
    assert!(health.last_error.is_some());
}

#[tokio::test]
async fn token_bucket_limits_the_rate() {
    let vendor = TestVendor::start().await;
    let client = VendorClient::new(
        vendor.base.clone(),
        ClientSettings {
            rate_per_sec: 10.0,
            burst: 5,
            ..fast()
        },
        Arc::new(StaticKey),
    )
    .unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { get_ok(&c, "items").await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    // 5 at once, then 15 at 10/s.
    assert!(took >= Duration::from_millis(1400), "took {took:?}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_eq!(vendor.requests(), 20);
}

#[tokio::test]
async fn concurrency_limit_is_never_exceeded() {
    let vendor = TestVendor::start().await;
    vendor.state.delay_ms.store(50, SeqCst);
    let client = vendor.client(ClientSettings {
        max_concurrency: 3,
        ..fast()
    });
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { get_ok(&c, &format!("items/{i}")).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(vendor.state.max_in_flight.load(SeqCst), 3);
}

#[tokio::test]
async fn a_failed_sign_in_is_shared_held_off_and_never_prints_the_secret() {
    let vendor = TestVendor::start().await;
    vendor.state.sign_in_delay_ms.store(100, SeqCst);
    let client = VendorClient::new(
        vendor.base.clone(),
        fast(),
        Arc::new(PasswordAuth {
            password: Secret::new(format!("{PASSWORD}-wrong")),
        }),
    )
    .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.send(VendorRequest::get("items")).await })
        })
        .collect();
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert!(matches!(err, VendorError::Auth { .. }), "{err:?}");
        for text in [format!("{err}"), format!("{err:?}")] {
            assert!(!text.contains(PASSWORD), "{text}");
        }
        let scim: ScimError = err.into();
        assert_eq!(scim.status, 503);
        assert!(scim.detail.contains("vendor sign-in failed"));
        assert!(!format!("{scim:?}").contains(PASSWORD));
    }
    assert_eq!(vendor.sign_ins(), 1, "one attempt for 50 waiting requests");
    // Held off: no second attempt within the cooldown (logins are throttled or locked out).
    assert!(matches!(
        client.ensure_signed_in().await,
        Err(VendorError::Auth { .. })
    ));
    assert_eq!(vendor.sign_ins(), 1);
    let health = client.health();
    assert!(!health.signed_in);
    assert!(!health.last_error.unwrap().contains(PASSWORD));
    assert!(!format!("{client:?}").contains(PASSWORD));
    assert_eq!(vendor.requests(), 0);
}

#[tokio::test]
async fn a_session_rejected_right_after_sign_in_is_an_auth_error_not_a_loop() {
    struct UselessToken;
    #[async_trait]
    impl Authenticator for UselessToken {
        async fn sign_in(
            &self,
            _: &reqwest::Client,
            _: &Url,
        ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError> {
            Ok(vec![(
                AUTHORIZATION,
                HeaderValue::from_static("Bearer nope"),
            )])
        }
    }
    let vendor = TestVendor::start().await;
    let client = VendorClient::new(vendor.base.clone(), fast(), Arc::new(UselessToken)).unwrap();
    let err = client.send(VendorRequest::get("items")).await.unwrap_err();
    assert!(matches!(err, VendorError::Auth { .. }), "{err:?}");
    assert_eq!(vendor.requests(), 2, "one try, one retry after re-sign-in");
}

#[tokio::test]
async fn requests_carry_query_form_and_keep_the_base_path() {
    let vendor = TestVendor::start().await;
    let client = vendor.client(fast());
    let resp = client
        .send(
            VendorRequest::get("/v1/things")
                .query("skip", "0")
                .query("limit", "50"),
        )
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["path"], "/api/v1/things");
    assert!(resp.json::<Vec<String>>().is_err());
}

/// The most calls that arrived within any one second.
fn busiest_second(arrivals: &[Instant]) -> usize {
    let mut times = arrivals.to_vec();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn two_clients_on_one_budget_stay_within_its_rate_together() {
    let vendor = TestVendor::start().await;
    vendor.state.delay_ms.store(20, SeqCst);
    let budget = Arc::new(RateBudget::new(10.0, 5, 3));
    // Sisense in scim mode: REST with a sign-in, SCIM with a static bearer, one host.
    let rest = VendorClient::with_budget(
        vendor.base.clone(),
        fast(),
        Arc::new(PasswordAuth::good()),
        budget,
    )
    .unwrap();
    let scim = VendorClient::with_budget(
        vendor.base.clone(),
        fast(),
        Arc::new(StaticKey),
        rest.budget(),
    )
    .unwrap();
    assert!(Arc::ptr_eq(&rest.budget(), &scim.budget()));
    assert_eq!(scim.send_rate(), 10.0);

    let started = Instant::now();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let c = if i % 2 == 0 {
                rest.clone()
            } else {
                scim.clone()
            };
            tokio::spawn(async move { get_ok(&c, &format!("items/{i}")).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    assert_eq!(vendor.sign_ins(), 1);
    let arrivals = vendor.state.arrivals.lock().clone();
    assert_eq!(arrivals.len(), 31, "30 calls and the sign-in");
    // 5 at once, then 10/s: 15 in the busiest second (one more for timing noise). Two budgets
    // would let through 30.
    let busiest = busiest_second(&arrivals);
    assert!(busiest <= 16, "{busiest} calls within one second");
    assert!(took >= Duration::from_millis(2400), "took {took:?}");
    assert!(vendor.state.max_in_flight.load(SeqCst) <= 3);
}

/// Sisense's limits, fast retries.
fn sisense_like() -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_secs(5),
        max_attempts: 6,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
        rate_per_sec: 2000.0,
        burst: 200,
        max_concurrency: 16,
        breaker_threshold: 1000,
        ..ClientSettings::default()
    }
}

/// `n` GETs from `workers` concurrent callers; the errors.
async fn drive(client: &VendorClient, n: usize, workers: usize) -> Vec<VendorError> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (c, next) = (client.clone(), next.clone());
            tokio::spawn(async move {
                let mut errors = Vec::new();
                loop {
                    let i = next.fetch_add(1, SeqCst);
                    if i >= n {
                        return errors;
                    }
                    match c.send(VendorRequest::get(format!("items/{i}"))).await {
                        Ok(resp) => assert_eq!(resp.status, 200),
                        Err(e) => errors.push(e),
                    }
                }
            })
        })
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    errors
}

#[tokio::test]
async fn a_vendor_throttling_without_retry_after_is_driven_at_its_rate() {
    let vendor = TestVendor::start().await;
    *vendor.state.throttle.lock() = Some(Throttle::new(20.0));
    let client =
        VendorClient::new(vendor.base.clone(), sisense_like(), Arc::new(StaticKey)).unwrap();
    let errors = drive(&client, 400, 16).await;

    let throttled = vendor.state.throttled.load(SeqCst);
    let passed = vendor.state.passed.lock().clone();
    let share = throttled as f64 / (throttled + passed.len()) as f64;
    // Throughput once adapted: from 2 s after the first call to the last one.
    let (first, last) = (passed[0], *passed.last().unwrap());
    let from = first + Duration::from_secs(2);
    let useful = passed.iter().filter(|t| **t >= from).count();
    let per_sec = useful as f64 / last.duration_since(from).as_secs_f64();
    // Before the first 429 comes back, up to `max_concurrency` calls are already on their way:
    // after the first second only the probing above the vendor's rate should meet a 429.
    let later = vendor
        .state
        .refused
        .lock()
        .iter()
        .filter(|t| t.duration_since(first) >= Duration::from_secs(1))
        .count();
    eprintln!(
        "throttle 20/s: {throttled} 429s of {} calls ({:.1} %), {later} after the first second; \
         {per_sec:.1} useful calls/s after 2 s, {:.1} s in all, send rate now {:.1}/s",
        throttled + passed.len(),
        share * 100.0,
        last.duration_since(first).as_secs_f64(),
        client.send_rate()
    );
    assert!(
        share <= 0.05,
        "{:.1} % of the calls got a 429",
        share * 100.0
    );
    assert!(later <= 8, "{later} 429s after the first second");
    assert!(
        per_sec >= 18.0,
        "{per_sec:.1} useful calls/s (capacity 20/s)"
    );
    assert!(
        errors.is_empty(),
        "{} calls failed: {:?}",
        errors.len(),
        errors[0]
    );
    assert_eq!(passed.len(), 400);
    assert!(client.send_rate() < 40.0, "{}", client.send_rate());
}

#[tokio::test]
async fn the_send_rate_climbs_back_once_the_vendor_stops_throttling() {
    let vendor = TestVendor::start().await;
    *vendor.state.throttle.lock() = Some(Throttle::new(20.0));
    let client =
        VendorClient::new(vendor.base.clone(), sisense_like(), Arc::new(StaticKey)).unwrap();
    assert_eq!(client.send_rate(), 2000.0);
    assert!(drive(&client, 60, 8).await.is_empty());
    let lowered = client.send_rate();
    assert!(lowered < 40.0, "{lowered}");
    assert!(vendor.state.throttled.load(SeqCst) > 0);

    *vendor.state.throttle.lock() = None;
    let throttled = vendor.state.throttled.load(SeqCst);
    assert!(drive(&client, 60, 8).await.is_empty());
    let raised = client.send_rate();
    // About +1/s per second of successes: 60 successes at ~20/s.
    assert!(raised >= lowered + 2.0, "{lowered} -> {raised}");
    assert_eq!(vendor.state.throttled.load(SeqCst), throttled);
}
