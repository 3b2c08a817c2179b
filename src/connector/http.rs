//! The shared vendor HTTP client: every vendor connector talks to its vendor through a
//! [`VendorClient`]. It owns what a real vendor makes hard and what each connector would otherwise
//! get subtly wrong on its own:
//!
//! - **Sign-in, lazily, and single-flight re-sign-in.** Sessions expire (Metabase after 14 days,
//!   ThoughtSpot tokens after 300 s by default, Sisense L2024.1+ with bearer expiry); every vendor
//!   reference says "on 401, sign in again and retry once". A hundred concurrent requests that all
//!   see the same expired session cause one sign-in, not a hundred: logins are throttled (Metabase
//!   after ~10 failures) or locked out (Sisense `loginLockoutSettings`). A failed sign-in is shared
//!   with everyone who waited for it and is not repeated for `breaker_cooldown`, for the same reason.
//! - **Retries** with exponential backoff and full jitter on 429, 502, 503, 504 and transport
//!   errors, for idempotent requests only; `Retry-After` (seconds or HTTP-date) is honoured, and
//!   one longer than `backoff_max` is handed back to the IdP instead of slept on. A 429 or a
//!   connect error (nothing was sent) is retried for any request; anything else that fails after a
//!   non-idempotent request was sent is [`VendorError::Ambiguous`]: the caller looks the object up
//!   by its natural key before trying again ([`VendorClient::create_or_find`]).
//! - **One rate budget per vendor instance** ([`RateBudget`]): a concurrency limit (semaphore) and
//!   a token-bucket rate limit with conservative defaults (Sisense publishes none; ThoughtSpot
//!   allows 100/s per IP; Tableau Cloud throttles without saying at what rate). Clients that talk
//!   to the same vendor instance (Sisense `mode = "scim"`: REST and SCIM) share one budget
//!   ([`VendorClient::with_budget`]), so together they never exceed it.
//! - **Adaptive send rate (AIMD)**: a 429 lowers the budget's rate to 0.8 × what the vendor
//!   actually accepted since the previous decrease (over 1 to 10 s; multiplicative decrease,
//!   once for a burst of concurrent 429s); successes raise it again by about 1 req/s per second
//!   (additive increase) up to the configured rate. A vendor that throttles without saying at
//!   what rate is thus driven at about its rate instead of being hammered with retries.
//! - **A circuit breaker**: after `breaker_threshold` consecutive vendor-side failures, requests
//!   fail fast with [`VendorError::Unavailable`] (→ `503` + `Retry-After` to the IdP, never 500)
//!   until `breaker_cooldown` has passed; then one trial request decides.
//! - **Bounded answers**: a body over `max_body_bytes` is dropped unread
//!   ([`VendorError::Decode`]), and `timeout` bounds each attempt, body included, so a vendor
//!   that hangs or trickles ends in [`VendorError::Unavailable`] (or `Ambiguous` for a create).
//!
//! Secrets: request and response headers and bodies are never logged and never put into errors
//! (a vendor body is only carried by [`VendorError::Rejected`], which a connector builds from a
//! response it chose not to handle, and is never rendered to the IdP by the default mapping).

use crate::scim::ScimError;
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
pub use reqwest::Method;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;
use tracing::Instrument;
pub use url::Url;

/// The TLS set-up every vendor client shares, built once per process: what reqwest's `rustls`
/// builds for each client (the platform verifier over the system's trust store), but building it
/// reads and parses every PEM under `/etc/ssl/certs`, ~10 ms of CPU. One per tenant made 1,000
/// vendor tenants spend about half their start-up doing it (`perf` over
/// `scripts/bench-tenants.sh`). Only the TLS set-up is shared, not the client: a reqwest client's
/// pooled connections belong to the runtime that opened them. The trust store is thus read once
/// per process: a CA added to the system later is trusted after a restart.
fn shared_tls() -> Result<rustls::ClientConfig, String> {
    static TLS: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    if let Some(tls) = TLS.get() {
        return Ok(tls.clone());
    }
    // A failure is not kept: the trust store may be readable at the next try.
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier =
        rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| e.to_string())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // As reqwest sets it for HTTP/1 only (the only version built in).
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TLS.get_or_init(|| tls).clone())
}

/// Tuning of one vendor client (one per tenant). `Default` is deliberately conservative.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// Whole-request timeout (connect, send, and reading the body), per attempt.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts for a retryable failure, the first one included (at least 1).
    pub max_attempts: u32,
    /// Full jitter: before retry `n` (0-based), sleep `rand(0, min(backoff_max, backoff_base·2ⁿ))`;
    /// a larger `Retry-After` wins, and one larger than `backoff_max` ends the retries.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Token bucket: sustained requests per second (sign-ins included) and burst size. The
    /// ceiling of the adaptive rate. `f64::INFINITY` disables the limit, adaptive one included.
    /// Used by [`VendorClient::new`] (and [`RateBudget::for_settings`]); a client built with
    /// [`VendorClient::with_budget`] uses its budget's limits instead.
    pub rate_per_sec: f64,
    pub burst: u32,
    /// Requests in flight at once (sign-ins included). Like `rate_per_sec`, part of the budget.
    pub max_concurrency: usize,
    /// Consecutive vendor-side failures (transport errors, timeouts, 5xx, bodies over
    /// `max_body_bytes`) that open the breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one trial request is let through. Also how long a
    /// failed sign-in (bad credentials) is remembered before it is attempted again.
    pub breaker_cooldown: Duration,
    /// The largest response body read, in bytes. A larger one (by its `Content-Length`, or
    /// counted while reading) is dropped unread and the request fails with
    /// [`VendorError::Decode`]: not retried (the same request gets the same answer), but
    /// counted by the breaker (the vendor is misbehaving). Sign-in answers are read by the
    /// [`Authenticator`] ([`read_body_limited`]).
    pub max_body_bytes: usize,
}

/// `ClientSettings::default().max_body_bytes`: 64 MiB, room for a Sisense list page of 10,000
/// users at several KiB each.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_attempts: 4,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            rate_per_sec: 10.0,
            burst: 10,
            max_concurrency: 8,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// How a vendor signs in; implemented by each connector (the vendor-specific part).
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Performs the vendor's sign-in with the raw client and returns the headers to attach to
    /// every later request (e.g. `Authorization: Bearer …`, `X-Tableau-Auth`, `x-api-key`).
    /// Map failures with [`VendorError::from_transport`] and [`VendorError::sign_in_refused`];
    /// never put a secret or a raw sign-in response body into the error.
    async fn sign_in(
        &self,
        http: &reqwest::Client,
        base: &Url,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError>;

    /// When the session of the last successful sign-in should be replaced, for a vendor whose
    /// tokens say how long they live (ThoughtSpot's `expiration_time_in_millis`): requests
    /// from then on sign in first (single-flight) instead of meeting a 401. Default: never.
    fn renew_at(&self) -> Option<Instant> {
        None
    }

    /// Whether a response means "session expired or invalid, sign in again" (default: 401).
    fn is_auth_failure(&self, status: u16, _body: &[u8]) -> bool {
        status == 401
    }

    /// Whether a 5xx response is a vendor-side failure (retried when idempotent, counted by the
    /// breaker, never returned as `Ok`) rather than the vendor's own answer for the connector to
    /// read. Default: every 5xx. ThoughtSpot, for one, reports a duplicate name as a 500 with
    /// code 14009 in the body; its connector overrides this to see that answer.
    fn is_vendor_failure(&self, status: u16, _body: &[u8]) -> bool {
        status >= 500
    }
}

/// A request body. `Xml` is sent as `application/xml` (Tableau's native format).
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    None,
    Json(serde_json::Value),
    Form(Vec<(String, String)>),
    Xml(String),
}

/// One vendor call. `path` is relative to the tenant's `base_url` (a leading `/` is ignored, so a
/// path prefix in `base_url` is kept). GET, PUT and DELETE are idempotent by default; POST and
/// PATCH are not (mark a read-only POST, e.g. a ThoughtSpot search, with [`idempotent`]).
///
/// [`idempotent`]: VendorRequest::idempotent
#[derive(Debug, Clone)]
pub struct VendorRequest {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Body,
    pub idempotent: bool,
    /// Extra headers (e.g. `Accept`). Session headers from the [`Authenticator`] are added on top.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl VendorRequest {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        VendorRequest {
            method,
            path: path.into(),
            query: Vec::new(),
            body: Body::None,
            idempotent,
            headers: Vec::new(),
        }
    }
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }
    pub fn put(path: impl Into<String>) -> Self {
        Self::new(Method::PUT, path)
    }
    pub fn patch(path: impl Into<String>) -> Self {
        Self::new(Method::PATCH, path)
    }
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }
    pub fn json(mut self, value: serde_json::Value) -> Self {
        self.body = Body::Json(value);
        self
    }
    pub fn form(mut self, fields: Vec<(String, String)>) -> Self {
        self.body = Body::Form(fields);
        self
    }
    pub fn xml(mut self, text: impl Into<String>) -> Self {
        self.body = Body::Xml(text.into());
        self
    }
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
    /// Never retried once sent: a failure after sending is [`VendorError::Ambiguous`].
    pub fn non_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }
    /// Safe to repeat (e.g. a search sent as POST).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
}

/// A vendor answer: 2xx, or 4xx/5xx that the connector reads itself (everything except an auth
/// failure, 429 and vendor-side failures, which become [`VendorError`]s).
#[derive(Clone)]
pub struct VendorResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl VendorResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON. The error names the serde problem, not the body.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, VendorError> {
        serde_json::from_slice(&self.body).map_err(|e| VendorError::Decode {
            reason: format!("HTTP {} body is not the expected JSON: {e}", self.status),
        })
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A [`VendorError::Rejected`] for an answer the connector does not handle; the body is
    /// truncated to 1 KiB.
    pub fn rejected(&self) -> VendorError {
        let mut body = self.text();
        if body.len() > 1024 {
            let mut cut = 1024;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        VendorError::Rejected {
            status: self.status,
            body,
        }
    }
}

/// Headers and body are left out: they may carry session tokens.
impl fmt::Debug for VendorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The one error type of the vendor layer. `Display` never includes a vendor body or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VendorError {
    /// The vendor is down, failing (5xx after retries), timing out, or the breaker is open.
    #[error("vendor unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    /// The vendor is still throttling (429) after the retries.
    #[error("vendor is throttling requests (retry after {}s)", ceil_secs(*retry_after))]
    Throttled { retry_after: Duration },
    /// A non-idempotent request may or may not have been applied (timeout or connection reset
    /// after sending, 5xx on a create): look the object up by its natural key before any retry.
    #[error("vendor outcome unknown: {reason}")]
    Ambiguous { reason: String },
    /// A 4xx answer (other than auth failure and 429) that the connector did not map.
    #[error("vendor rejected the request with HTTP {status}")]
    Rejected { status: u16, body: String },
    /// Sign-in itself failed (bad credentials, locked account). Never includes a secret.
    #[error("vendor sign-in failed: {reason}")]
    Auth { reason: String },
    /// The vendor's answer could not be read.
    #[error("vendor response could not be decoded: {reason}")]
    Decode { reason: String },
}

impl VendorError {
    /// Maps a `reqwest` transport error (connect, timeout, body) to `Unavailable`, with the
    /// error chain but without the URL (whose query might carry something private).
    pub fn from_transport(err: &reqwest::Error) -> VendorError {
        VendorError::Unavailable {
            reason: transport_reason(err),
            retry_after: Duration::from_secs(1),
        }
    }

    /// For an [`Authenticator`]: the vendor answered a sign-in with `status`. 429 and 5xx mean
    /// the vendor is busy or down (`Throttled` / `Unavailable`); anything else is `Auth`, with
    /// the status only (a sign-in body may echo what was sent).
    pub fn sign_in_refused(status: u16, headers: &HeaderMap) -> VendorError {
        let retry_after = retry_after_from(headers).unwrap_or(Duration::from_secs(1));
        match status {
            429 => VendorError::Throttled { retry_after },
            500..=599 => VendorError::Unavailable {
                reason: format!("sign-in answered HTTP {status}"),
                retry_after,
            },
            _ => VendorError::Auth {
                reason: format!("sign-in answered HTTP {status}"),
            },
        }
    }

    /// Whether the vendor itself is failing (counts against the breaker).
    fn is_vendor_side(&self) -> bool {
        matches!(self, VendorError::Unavailable { .. })
    }
}

/// Seconds for a `Retry-After` header: rounded up, at least 1.
fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// Retry-After the IdP gets when the error carries none of its own.
const AMBIGUOUS_RETRY_AFTER_S: u64 = 5;
const DEFAULT_RETRY_AFTER_S: u64 = 30;

/// The IdP sees a vendor problem as "try again later" (503 + Retry-After) or "slow down"
/// (429 + Retry-After), never as a 500 and never with a vendor body. Connectors map the vendor
/// answers that *are* the client's fault (duplicate → 409, missing → 404) themselves.
impl From<VendorError> for ScimError {
    fn from(err: VendorError) -> ScimError {
        match err {
            VendorError::Unavailable {
                reason,
                retry_after,
            } => ScimError::unavailable(
                format!("vendor unavailable: {reason}"),
                ceil_secs(retry_after),
            ),
            VendorError::Throttled { retry_after } => ScimError::throttled(
                "the vendor is throttling requests; retry later",
                ceil_secs(retry_after),
            ),
            VendorError::Ambiguous { .. } => ScimError::unavailable(
                "the vendor did not confirm the change; retry later",
                AMBIGUOUS_RETRY_AFTER_S,
            ),
            VendorError::Auth { .. } => ScimError::unavailable(
                "vendor sign-in failed; the bridge's vendor credentials need attention",
                DEFAULT_RETRY_AFTER_S,
            ),
            VendorError::Rejected { status, .. } => ScimError::unavailable(
                format!("the vendor refused the request (HTTP {status})"),
                DEFAULT_RETRY_AFTER_S,
            ),
            VendorError::Decode { .. } => ScimError::unavailable(
                "the vendor's answer could not be read",
                DEFAULT_RETRY_AFTER_S,
            ),
        }
    }
}

/// Never lowered below this (or the configured rate, if that is lower).
const AIMD_FLOOR_PER_SEC: f64 = 1.0;
/// On a 429: the rate becomes this fraction of the vendor's accepted rate (see [`RateBudget`]),
/// or of the current rate, if lower.
const AIMD_DECREASE: f64 = 0.8;
/// With fewer accepted calls than [`AIMD_MIN_SAMPLES`] to go by (say, after an idle spell), one
/// 429 lowers the rate at most tenfold: an empty window says little about the vendor's rate.
const AIMD_MAX_CUT: f64 = 0.1;
const AIMD_MIN_SAMPLES: usize = 8;
/// Additive increase: +this many req/s per second of successes (each success adds
/// `AIMD_INCREASE_PER_SEC / rate`).
const AIMD_INCREASE_PER_SEC: f64 = 1.0;
/// The shortest and the longest span over which the accepted rate is measured.
const AIMD_WINDOW: Duration = Duration::from_secs(1);
const AIMD_WINDOW_LONG: Duration = Duration::from_secs(10);
/// Bounds the memory of the window whatever the rate.
const AIMD_WINDOW_MAX_SAMPLES: usize = 1 << 16;

/// The request budget of one vendor instance: a concurrency limit, a token bucket and its
/// adaptive rate (AIMD). Every [`VendorClient`] that talks to that instance should draw on the
/// same budget ([`VendorClient::with_budget`]), sign-ins included.
///
/// The rate starts at the configured `rate_per_sec`. A 429 (with or without `Retry-After`) sets
/// it to `AIMD_DECREASE` (0.8) × the lower of the current rate and the vendor's accepted rate:
/// the calls it answered other than with 429 since the previous decrease (when its own budget
/// was, by that 429, empty: so its stored burst does not inflate the measure), over at least the
/// last second and at most the last ten. It is never lowered below 1 req/s, nor more than tenfold
/// at once when fewer than 8 accepted calls are known. The tokens stored for a burst are
/// dropped, and callers already waiting for a token wait again at the new rate. 429s to requests
/// sent before that decrease were caused by the old rate and are not counted again, so a burst
/// of concurrent 429s is one signal. Each accepted non-5xx answer adds `1/rate` req/s (about
/// +1 req/s per second while the budget is in use), up to the configured rate. While lowered,
/// the burst is also capped at one second's worth of the current rate.
pub struct RateBudget {
    /// The ceiling; not finite or not positive: no rate limit (and no adaptation).
    configured: f64,
    burst: f64,
    max_concurrency: usize,
    slots: Semaphore,
    state: Mutex<BudgetState>,
}

struct BudgetState {
    rate: f64,
    /// May go negative: a caller reserves a token and sleeps until it has accrued, so waiters
    /// are served in arrival order without polling.
    tokens: f64,
    last: Instant,
    /// Bumped by every decrease: a caller that reserved its token before sleeps again.
    epoch: u64,
    last_decrease: Option<Instant>,
    /// When the vendor accepted requests, over the last [`AIMD_WINDOW_LONG`].
    accepted: VecDeque<Instant>,
}

impl fmt::Debug for RateBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateBudget")
            .field("configured_rate", &self.configured)
            .field("current_rate", &self.current_rate())
            .field("burst", &self.burst)
            .field("max_concurrency", &self.max_concurrency)
            .finish()
    }
}

impl RateBudget {
    /// `rate_per_sec` requests per second (`f64::INFINITY`: unlimited), bursts of `burst`, and
    /// `max_concurrency` requests in flight (both at least 1).
    pub fn new(rate_per_sec: f64, burst: u32, max_concurrency: usize) -> Self {
        let burst = f64::from(burst.max(1));
        let max_concurrency = max_concurrency.max(1);
        RateBudget {
            configured: rate_per_sec,
            burst,
            max_concurrency,
            slots: Semaphore::new(max_concurrency),
            state: Mutex::new(BudgetState {
                rate: rate_per_sec,
                tokens: burst,
                last: Instant::now(),
                epoch: 0,
                last_decrease: None,
                accepted: VecDeque::new(),
            }),
        }
    }

    /// From `settings.rate_per_sec`, `burst` and `max_concurrency`.
    pub fn for_settings(settings: &ClientSettings) -> Self {
        Self::new(
            settings.rate_per_sec,
            settings.burst,
            settings.max_concurrency,
        )
    }

    /// The send rate now, in requests per second (`f64::INFINITY` when unlimited).
    pub fn current_rate(&self) -> f64 {
        if self.limited() {
            self.state.lock().rate
        } else {
            f64::INFINITY
        }
    }

    /// The rate the budget was configured with: the ceiling of [`current_rate`](Self::current_rate).
    pub fn configured_rate(&self) -> f64 {
        self.configured
    }

    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    fn limited(&self) -> bool {
        self.configured.is_finite() && self.configured > 0.0
    }

    fn floor(&self) -> f64 {
        AIMD_FLOOR_PER_SEC.min(self.configured)
    }

    async fn acquire_slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.slots.acquire().await.expect("semaphore never closed")
    }

    /// Waits for a token at the current rate. A caller whose wait spans a decrease waits again
    /// at the new rate (its reservation was dropped with the bucket's tokens).
    async fn take_token(&self) {
        if !self.limited() {
            return;
        }
        loop {
            let (wait, epoch) = {
                let mut s = self.state.lock();
                let now = Instant::now();
                let rate = s.rate;
                let cap = if rate < self.configured {
                    self.burst.min(rate.max(1.0))
                } else {
                    self.burst
                };
                let accrued = now.duration_since(s.last).as_secs_f64() * rate;
                s.tokens = (s.tokens + accrued).min(cap);
                s.last = now;
                s.tokens -= 1.0;
                if s.tokens >= 0.0 {
                    return;
                }
                (Duration::from_secs_f64(-s.tokens / rate), s.epoch)
            };
            tokio::time::sleep(wait).await;
            if self.state.lock().epoch == epoch {
                return;
            }
        }
    }

    /// The vendor accepted a request (answered other than 429); `healthy` (not 5xx) also raises
    /// the rate a little.
    fn on_accepted(&self, healthy: bool) {
        if !self.limited() {
            return;
        }
        let now = Instant::now();
        let mut s = self.state.lock();
        s.accepted.push_back(now);
        prune(&mut s.accepted, now);
        if healthy && s.rate < self.configured {
            s.rate = (s.rate + AIMD_INCREASE_PER_SEC / s.rate).min(self.configured);
        }
    }

    /// The vendor answered 429 to a request sent at `sent_at`.
    fn on_throttled(&self, sent_at: Instant) {
        if !self.limited() {
            return;
        }
        let now = Instant::now();
        let mut s = self.state.lock();
        if s.last_decrease.is_some_and(|at| sent_at < at) {
            // Sent at the old rate: that 429 is already accounted for.
            return;
        }
        prune(&mut s.accepted, now);
        let since = s
            .last_decrease
            .map_or(AIMD_WINDOW, |at| now.duration_since(at))
            .clamp(AIMD_WINDOW, AIMD_WINDOW_LONG);
        let samples = s
            .accepted
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) <= since)
            .count();
        let accepted_per_sec = samples as f64 / since.as_secs_f64();
        let old = s.rate;
        let mut rate = AIMD_DECREASE * old.min(accepted_per_sec);
        if samples < AIMD_MIN_SAMPLES {
            rate = rate.max(old * AIMD_MAX_CUT);
        }
        let rate = rate.max(self.floor()).min(old);
        s.rate = rate;
        s.tokens = 0.0;
        s.last = now;
        s.epoch += 1;
        s.last_decrease = Some(now);
        drop(s);
        tracing::info!(
            from = old,
            to = rate,
            accepted_per_sec,
            "vendor is throttling: lowering the send rate"
        );
    }
}

fn prune(accepted: &mut VecDeque<Instant>, now: Instant) {
    while accepted.len() > AIMD_WINDOW_MAX_SAMPLES
        || accepted
            .front()
            .is_some_and(|t| now.duration_since(*t) > AIMD_WINDOW_LONG)
    {
        accepted.pop_front();
    }
}

/// The breaker as [`VendorClient::health`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// For `/readyz`, startup and `config check --online`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHealth {
    pub breaker: BreakerState,
    pub signed_in: bool,
    /// The latest vendor-side failure or sign-in failure; cleared by the next success.
    pub last_error: Option<String>,
}

impl ClientHealth {
    /// Signed in and the breaker is not open.
    pub fn is_ready(&self) -> bool {
        self.signed_in && !matches!(self.breaker, BreakerState::Open { .. })
    }

    /// Why the client is not ready, in words for `/readyz` (`None` when ready).
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.is_ready() {
            return None;
        }
        let state = match self.breaker {
            BreakerState::Open { until } => format!(
                "vendor circuit open for {}s more",
                ceil_secs(until.saturating_duration_since(Instant::now()))
            ),
            _ => "not signed in to the vendor".to_string(),
        };
        Some(match &self.last_error {
            Some(e) => format!("{state} (last error: {e})"),
            None => state,
        })
    }
}

/// The outcome of a [`VendorClient::create_or_find`].
#[derive(Debug)]
pub enum CreateOutcome<T> {
    /// The vendor answered the create (2xx or its own error, e.g. a duplicate).
    Sent(VendorResponse),
    /// The create was ambiguous and the lookup by natural key found the object.
    Found(T),
}

/// The shared vendor client of one tenant. Cheap to clone.
#[derive(Clone)]
pub struct VendorClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for VendorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorClient")
            .field("base", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

type SessionHeaders = Arc<Vec<(HeaderName, HeaderValue)>>;

struct Inner {
    base: Url,
    http: reqwest::Client,
    settings: ClientSettings,
    auth: Arc<dyn Authenticator>,
    session: Mutex<Session>,
    /// Held while signing in: the single flight.
    sign_in_lock: tokio::sync::Mutex<()>,
    budget: Arc<RateBudget>,
    breaker: Mutex<Breaker>,
    last_error: Mutex<Option<String>>,
}

#[derive(Default)]
struct Session {
    /// Bumped by every successful sign-in; a request remembers the generation it used, so that a
    /// 401 on generation `g` triggers a sign-in only if nobody has replaced `g` yet.
    generation: u64,
    headers: Option<SessionHeaders>,
    /// Sign-in attempts finished, successful or not.
    attempts: u64,
    /// The last attempt failed: shared with everyone who waited on it, and (for `Auth`) not
    /// retried before `breaker_cooldown`.
    failure: Option<(VendorError, Instant)>,
}

enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

/// Lets one trial through while half-open; if the trial ends without a verdict (cancelled, or
/// an answer that says nothing about the vendor's health) the next request may try.
struct TrialGuard<'a>(Option<&'a Mutex<Breaker>>);

impl Drop for TrialGuard<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.0 {
            let mut b = breaker.lock();
            if let Breaker::HalfOpen { trial_in_flight } = &mut *b {
                *trial_in_flight = false;
            }
        }
    }
}

/// What one attempt came to.
enum Attempt {
    Done(VendorResponse),
    AuthFailed,
    Retry {
        error: VendorError,
        retry_after: Option<Duration>,
    },
    Fail(VendorError),
}

impl VendorClient {
    /// A pooled rustls client with the configured timeouts and its own [`RateBudget`] (from
    /// `settings.rate_per_sec`, `burst` and `max_concurrency`); nothing is sent until first use.
    pub fn new(
        base_url: Url,
        settings: ClientSettings,
        auth: Arc<dyn Authenticator>,
    ) -> Result<Self, VendorError> {
        let budget = Arc::new(RateBudget::for_settings(&settings));
        Self::with_budget(base_url, settings, auth, budget)
    }

    /// Like [`new`](Self::new), but drawing on `budget`, which other clients of the same vendor
    /// instance may share: their requests and sign-ins together stay within its rate and
    /// concurrency, and a 429 seen by one slows them all. `settings.rate_per_sec`, `burst` and
    /// `max_concurrency` are not used (the budget's are).
    pub fn with_budget(
        base_url: Url,
        settings: ClientSettings,
        auth: Arc<dyn Authenticator>,
        budget: Arc<RateBudget>,
    ) -> Result<Self, VendorError> {
        let unavailable = |reason: String| VendorError::Unavailable {
            reason: format!("cannot build the HTTP client: {reason}"),
            retry_after: Duration::from_secs(DEFAULT_RETRY_AFTER_S),
        };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(shared_tls().map_err(unavailable)?)
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            // ThoughtSpot requires a User-Agent.
            .user_agent(concat!("scim-bridge/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| unavailable(transport_reason(&e)))?;
        Ok(VendorClient {
            inner: Arc::new(Inner {
                base: base_url,
                http,
                budget,
                breaker: Mutex::new(Breaker::Closed { failures: 0 }),
                settings,
                auth,
                session: Mutex::new(Session::default()),
                sign_in_lock: tokio::sync::Mutex::new(()),
                last_error: Mutex::new(None),
            }),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.inner.settings
    }

    /// The rate budget this client draws on (to build another client on the same vendor
    /// instance with [`with_budget`](Self::with_budget)).
    pub fn budget(&self) -> Arc<RateBudget> {
        self.inner.budget.clone()
    }

    /// The budget's current send rate in requests per second (for a metrics gauge);
    /// `f64::INFINITY` when unlimited.
    pub fn send_rate(&self) -> f64 {
        self.inner.budget.current_rate()
    }

    /// Sends one request with sign-in, limits, retries and the breaker. 2xx and the vendor's
    /// own 4xx answers come back as `Ok` (read `resp.status`); auth failures, 429, vendor-side
    /// failures and transport errors come back as `Err` once retries are exhausted.
    pub async fn send(&self, req: VendorRequest) -> Result<VendorResponse, VendorError> {
        let span = tracing::debug_span!(
            "vendor_request",
            method = %req.method,
            path = %req.path,
            status = tracing::field::Empty,
            attempt = tracing::field::Empty,
        );
        self.send_inner(req).instrument(span).await
    }

    async fn send_inner(&self, req: VendorRequest) -> Result<VendorResponse, VendorError> {
        let inner = &*self.inner;
        let max_attempts = inner.settings.max_attempts.max(1);
        let mut attempt: u32 = 0;
        let mut reauthed = false;
        let mut stale: Option<u64> = None;
        loop {
            attempt += 1;
            tracing::Span::current().record("attempt", attempt);
            let _trial = self.admit()?;
            let mut generation = 0;
            let outcome = match self.session(stale).await {
                Ok((g, headers)) => {
                    generation = g;
                    self.attempt_once(&req, &headers).await
                }
                // The vendor is down or busy while we sign in: nothing was sent, so any
                // request may wait and try again.
                Err(VendorError::Throttled { retry_after }) => Attempt::Retry {
                    error: VendorError::Throttled { retry_after },
                    retry_after: Some(retry_after),
                },
                Err(error @ VendorError::Unavailable { .. }) => Attempt::Retry {
                    error,
                    retry_after: None,
                },
                Err(error) => Attempt::Fail(error),
            };
            match outcome {
                Attempt::Done(resp) => {
                    tracing::Span::current().record("status", resp.status);
                    return Ok(resp);
                }
                Attempt::AuthFailed if !reauthed => {
                    // The session expired: not applied, so even a create may be repeated once.
                    tracing::debug!("vendor session rejected; signing in again");
                    reauthed = true;
                    stale = Some(generation);
                    attempt -= 1;
                }
                Attempt::AuthFailed => {
                    let error = VendorError::Auth {
                        reason: "the vendor rejected a fresh session".into(),
                    };
                    self.note_error(&error);
                    return Err(error);
                }
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry { error, retry_after } => {
                    if attempt >= max_attempts {
                        return Err(with_retry_after(
                            error,
                            retry_after,
                            self.backoff_cap(attempt),
                        ));
                    }
                    let jitter = self.backoff(attempt - 1);
                    let wait = match retry_after {
                        Some(ra) if ra > inner.settings.backoff_max => {
                            // Longer than we are willing to hold the IdP's request: let the
                            // IdP come back then.
                            return Err(with_retry_after(error, Some(ra), ra));
                        }
                        Some(ra) => ra.max(jitter),
                        None => jitter,
                    };
                    tracing::debug!(
                        wait_ms = wait.as_millis() as u64,
                        error = %error,
                        "retrying vendor request"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One try: limits, send, classify. Records breaker outcomes.
    async fn attempt_once(&self, req: &VendorRequest, session: &SessionHeaders) -> Attempt {
        let inner = &*self.inner;
        let _slot = inner.budget.acquire_slot().await;
        inner.budget.take_token().await;
        let sent_at = Instant::now();

        let mut url = match inner.base.join(req.path.trim_start_matches('/')) {
            Ok(url) => url,
            Err(e) => {
                return Attempt::Fail(VendorError::Decode {
                    reason: format!("bad request path {:?}: {e}", req.path),
                })
            }
        };
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(req.query.iter());
        }
        let mut builder = inner.http.request(req.method.clone(), url);
        for (name, value) in req.headers.iter().chain(session.iter()) {
            builder = builder.header(name.clone(), value.clone());
        }
        builder = match &req.body {
            Body::None => builder,
            Body::Json(value) => builder.json(value),
            Body::Form(fields) => builder.form(fields),
            Body::Xml(text) => builder
                .header(CONTENT_TYPE, "application/xml")
                .body(text.clone()),
        };

        let result = match builder.send().await {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                read_body(&mut resp, inner.settings.max_body_bytes)
                    .await
                    .map(|body| VendorResponse {
                        status,
                        headers,
                        body,
                    })
            }
            Err(e) => Err(ReadError::Transport(e)),
        };
        drop(_slot);

        let resp = match result {
            Ok(resp) => resp,
            Err(ReadError::TooLarge {
                status,
                declared,
                limit,
            }) => {
                // The connection is dropped with the rest of the body unread.
                let size = declared.map_or(String::new(), |n| format!(" of {n} bytes,"));
                let error = VendorError::Decode {
                    reason: format!(
                        "{} {} answered HTTP {status} with a body{size} over the {limit}-byte limit",
                        req.method, req.path
                    ),
                };
                tracing::warn!(error = %error, "vendor answer too large");
                self.record_failure(&error);
                return Attempt::Fail(error);
            }
            Err(ReadError::Transport(e)) => {
                let reason = format!("{} {}: {}", req.method, req.path, transport_reason(&e));
                let error = VendorError::Unavailable {
                    reason: reason.clone(),
                    retry_after: Duration::from_secs(1),
                };
                self.record_failure(&error);
                tracing::debug!(error = %reason, connect = e.is_connect(), "vendor transport error");
                // A connect error means nothing was sent: safe to repeat for any request.
                return if req.idempotent || e.is_connect() {
                    Attempt::Retry {
                        error,
                        retry_after: None,
                    }
                } else {
                    Attempt::Fail(VendorError::Ambiguous { reason })
                };
            }
        };

        let status = resp.status;
        tracing::Span::current().record("status", status);
        if status != 429 {
            // Accepted by the vendor's throttle (whatever the answer says).
            inner.budget.on_accepted(status < 500);
        }
        if inner.auth.is_auth_failure(status, &resp.body) {
            // The vendor answered: it is up.
            self.record_success();
            return Attempt::AuthFailed;
        }
        if status == 429 {
            self.record_success();
            // With or without Retry-After: the vendor says we are too fast. The retry below
            // takes a token again, at the lowered rate.
            inner.budget.on_throttled(sent_at);
            let retry_after = retry_after_from(&resp.headers);
            return Attempt::Retry {
                error: VendorError::Throttled {
                    retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
                },
                retry_after,
            };
        }
        if status >= 500 && inner.auth.is_vendor_failure(status, &resp.body) {
            let retry_after = retry_after_from(&resp.headers);
            let reason = format!("{} {} answered HTTP {status}", req.method, req.path);
            let error = VendorError::Unavailable {
                reason: reason.clone(),
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            };
            self.record_failure(&error);
            if !req.idempotent {
                return Attempt::Fail(VendorError::Ambiguous { reason });
            }
            return if matches!(status, 502..=504) {
                Attempt::Retry { error, retry_after }
            } else {
                Attempt::Fail(with_retry_after(
                    error,
                    retry_after,
                    inner.settings.backoff_max,
                ))
            };
        }
        self.record_success();
        Attempt::Done(resp)
    }

    /// Whether the vendor is reachable and signed in (signs in if needed). For startup,
    /// `/readyz` and `config check --online`.
    pub async fn ensure_signed_in(&self) -> Result<(), VendorError> {
        let _trial = self.admit()?;
        self.session(None).await.map(|_| ())
    }

    /// Breaker, session and last failure, for `/readyz` to name the tenant that is not ready.
    /// `Some(reason)` while the vendor cannot be called at all: the breaker is open, or the
    /// last sign-in was refused (credentials an operator must fix). `what` names the vendor.
    pub fn unavailable_reason(&self, what: &str) -> Option<String> {
        let health = self.health();
        if let BreakerState::Open { .. } = health.breaker {
            return Some(format!(
                "{what} unavailable: {}",
                health
                    .not_ready_reason()
                    .unwrap_or_else(|| "circuit open".into())
            ));
        }
        health
            .last_error
            .filter(|e| e.starts_with("vendor sign-in failed"))
            .map(|e| format!("{what}: {e}"))
    }

    pub fn health(&self) -> ClientHealth {
        let breaker = match &*self.inner.breaker.lock() {
            Breaker::Closed { .. } => BreakerState::Closed,
            Breaker::Open { until } if *until > Instant::now() => {
                BreakerState::Open { until: *until }
            }
            Breaker::Open { .. } | Breaker::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        ClientHealth {
            breaker,
            signed_in: self.inner.session.lock().headers.is_some(),
            last_error: self.inner.last_error.lock().clone(),
        }
    }

    /// A create that is never blindly repeated: on [`VendorError::Ambiguous`], `find` looks the
    /// object up by its natural key (e.g. userName); found → [`CreateOutcome::Found`], absent →
    /// the create is sent once more. A second ambiguous outcome is returned as is (503 to the IdP,
    /// whose retry then meets the vendor's duplicate check).
    pub async fn create_or_find<T, F, Fut>(
        &self,
        req: VendorRequest,
        find: F,
    ) -> Result<CreateOutcome<T>, VendorError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<T>, VendorError>>,
    {
        let req = req.non_idempotent();
        match self.send(req.clone()).await {
            Ok(resp) => Ok(CreateOutcome::Sent(resp)),
            Err(VendorError::Ambiguous { reason }) => {
                tracing::info!(%reason, "create outcome unknown; looking the object up first");
                if let Some(found) = find().await? {
                    return Ok(CreateOutcome::Found(found));
                }
                match self.send(req).await {
                    Ok(resp) => Ok(CreateOutcome::Sent(resp)),
                    Err(VendorError::Ambiguous { reason }) => match find().await? {
                        Some(found) => Ok(CreateOutcome::Found(found)),
                        None => Err(VendorError::Ambiguous { reason }),
                    },
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The current session, signing in if there is none or if it is generation `stale`.
    /// Single flight: whoever holds `sign_in_lock` signs in; everyone who queued behind them
    /// takes the result, success or failure.
    async fn session(&self, stale: Option<u64>) -> Result<(u64, SessionHeaders), VendorError> {
        let inner = &*self.inner;
        let fresh = || inner.auth.renew_at().is_none_or(|at| Instant::now() < at);
        let usable = |s: &Session| match &s.headers {
            Some(h) if Some(s.generation) != stale && fresh() => Some((s.generation, h.clone())),
            _ => None,
        };
        let held_off = |s: &Session| match &s.failure {
            Some((e @ VendorError::Auth { .. }, at))
                if at.elapsed() < inner.settings.breaker_cooldown =>
            {
                Some(e.clone())
            }
            _ => None,
        };
        let seen = {
            let s = inner.session.lock();
            if let Some(ok) = usable(&s) {
                return Ok(ok);
            }
            if let Some(e) = held_off(&s) {
                return Err(e);
            }
            s.attempts
        };
        let _flight = inner.sign_in_lock.lock().await;
        {
            let s = inner.session.lock();
            if let Some(ok) = usable(&s) {
                return Ok(ok);
            }
            if s.attempts != seen {
                if let Some((e, _)) = &s.failure {
                    return Err(e.clone());
                }
            }
            if let Some(e) = held_off(&s) {
                return Err(e);
            }
        }

        let result = {
            let _slot = inner.budget.acquire_slot().await;
            inner.budget.take_token().await;
            let sent_at = Instant::now();
            let limit = (inner.settings.timeout + inner.settings.connect_timeout) * 2;
            let result =
                match tokio::time::timeout(limit, inner.auth.sign_in(&inner.http, &inner.base))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(VendorError::Unavailable {
                        reason: format!("sign-in took longer than {}s", limit.as_secs()),
                        retry_after: Duration::from_secs(1),
                    }),
                };
            match &result {
                Ok(_) => inner.budget.on_accepted(true),
                Err(VendorError::Throttled { .. }) => inner.budget.on_throttled(sent_at),
                Err(_) => {}
            }
            result
        };
        let mut s = inner.session.lock();
        s.attempts += 1;
        match result {
            Ok(mut headers) => {
                // Session headers carry tokens: keep them out of any Debug output below us.
                for (_, value) in headers.iter_mut() {
                    value.set_sensitive(true);
                }
                s.generation += 1;
                let headers = Arc::new(headers);
                s.headers = Some(headers.clone());
                s.failure = None;
                let generation = s.generation;
                drop(s);
                self.record_success();
                tracing::info!(generation, "signed in to the vendor");
                Ok((generation, headers))
            }
            Err(error) => {
                s.headers = None;
                s.failure = Some((error.clone(), Instant::now()));
                drop(s);
                if error.is_vendor_side() {
                    self.record_failure(&error);
                } else {
                    self.note_error(&error);
                }
                tracing::warn!(error = %error, "vendor sign-in failed");
                Err(error)
            }
        }
    }

    /// Lets a request through the breaker, or fails fast while it is open.
    fn admit(&self) -> Result<TrialGuard<'_>, VendorError> {
        let inner = &*self.inner;
        let mut b = inner.breaker.lock();
        let now = Instant::now();
        match &mut *b {
            Breaker::Closed { .. } => Ok(TrialGuard(None)),
            Breaker::Open { until } if *until > now => Err(VendorError::Unavailable {
                reason: self.open_reason(),
                retry_after: *until - now,
            }),
            Breaker::Open { .. } => {
                tracing::info!("vendor circuit half-open: sending one trial request");
                *b = Breaker::HalfOpen {
                    trial_in_flight: true,
                };
                Ok(TrialGuard(Some(&inner.breaker)))
            }
            Breaker::HalfOpen { trial_in_flight } if !*trial_in_flight => {
                *trial_in_flight = true;
                Ok(TrialGuard(Some(&inner.breaker)))
            }
            Breaker::HalfOpen { .. } => Err(VendorError::Unavailable {
                reason: self.open_reason(),
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    fn open_reason(&self) -> String {
        match &*self.inner.last_error.lock() {
            Some(e) => format!("circuit open after repeated failures (last: {e})"),
            None => "circuit open after repeated failures".into(),
        }
    }

    fn record_success(&self) {
        let mut b = self.inner.breaker.lock();
        match &*b {
            Breaker::Closed { .. } | Breaker::HalfOpen { .. } => {
                if matches!(&*b, Breaker::HalfOpen { .. }) {
                    tracing::info!("vendor circuit closed");
                }
                *b = Breaker::Closed { failures: 0 };
                drop(b);
                *self.inner.last_error.lock() = None;
            }
            // A straggler admitted before the breaker opened says little about now.
            Breaker::Open { .. } => {}
        }
    }

    fn record_failure(&self, error: &VendorError) {
        self.note_error(error);
        let settings = &self.inner.settings;
        let mut b = self.inner.breaker.lock();
        match &mut *b {
            Breaker::Closed { failures } => {
                *failures += 1;
                if *failures >= settings.breaker_threshold.max(1) {
                    tracing::warn!(
                        failures = *failures,
                        cooldown_s = settings.breaker_cooldown.as_secs(),
                        "vendor circuit open"
                    );
                    *b = Breaker::Open {
                        until: Instant::now() + settings.breaker_cooldown,
                    };
                }
            }
            Breaker::HalfOpen { .. } => {
                tracing::warn!("vendor circuit trial failed; open again");
                *b = Breaker::Open {
                    until: Instant::now() + settings.breaker_cooldown,
                };
            }
            Breaker::Open { .. } => {}
        }
    }

    fn note_error(&self, error: &VendorError) {
        *self.inner.last_error.lock() = Some(error.to_string());
    }

    /// `min(backoff_max, backoff_base · 2ⁿ)`.
    fn backoff_cap(&self, n: u32) -> Duration {
        let s = &self.inner.settings;
        s.backoff_base
            .checked_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(s.backoff_max)
            .min(s.backoff_max)
    }

    /// Full jitter: uniform in `[0, backoff_cap(n)]`.
    fn backoff(&self, n: u32) -> Duration {
        let cap = self.backoff_cap(n).as_nanos() as u64;
        Duration::from_nanos(rand::rng().random_range(0..=cap))
    }
}

/// Sets the Retry-After the caller passes on: the vendor's, else `fallback`.
fn with_retry_after(
    error: VendorError,
    retry_after: Option<Duration>,
    fallback: Duration,
) -> VendorError {
    let value = retry_after.unwrap_or(fallback).max(Duration::from_secs(1));
    match error {
        VendorError::Unavailable { reason, .. } => VendorError::Unavailable {
            reason,
            retry_after: value,
        },
        VendorError::Throttled { .. } => VendorError::Throttled { retry_after: value },
        other => other,
    }
}

/// Why a response body was not read.
enum ReadError {
    Transport(reqwest::Error),
    TooLarge {
        status: u16,
        /// The `Content-Length`, when that alone was over the limit.
        declared: Option<u64>,
        limit: usize,
    },
}

/// Reads the body chunk by chunk, giving up as soon as it is known to be over `limit` bytes
/// (by its `Content-Length`, before reading anything). The client's `timeout` bounds the
/// whole read, so a body that trickles forever ends too.
async fn read_body(resp: &mut reqwest::Response, limit: usize) -> Result<Bytes, ReadError> {
    let status = resp.status().as_u16();
    let too_large = |declared| ReadError::TooLarge {
        status,
        declared,
        limit,
    };
    let declared = resp.content_length();
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        return Err(too_large(Some(n)));
    }
    // A declared length is a hint, not a promise: never reserve more than a little up front.
    let mut body = bytes::BytesMut::with_capacity(declared.map_or(0, |n| n as usize).min(1 << 20));
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        if chunk.len() > limit - body.len() {
            return Err(too_large(None));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// For an [`Authenticator`]: the body of a sign-in answer, read as the client reads every other
/// answer (at most `limit` bytes; larger is [`VendorError::Decode`], a transport failure is
/// [`VendorError::Unavailable`]). Use instead of `resp.json()` / `resp.bytes()`, which read
/// whatever the vendor sends.
pub async fn read_body_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Bytes, VendorError> {
    read_body(&mut resp, limit).await.map_err(|e| match e {
        ReadError::Transport(e) => VendorError::from_transport(&e),
        ReadError::TooLarge {
            status, declared, ..
        } => VendorError::Decode {
            reason: format!(
                "HTTP {status} body{} over the {limit}-byte limit",
                declared.map_or(String::new(), |n| format!(" of {n} bytes,"))
            ),
        },
    })
}

/// For an [`Authenticator`] whose sign-in is one JSON POST (Tableau, ThoughtSpot): sends `body`
/// to `path` (relative to `base`) and returns the answer's body (at most 1 MiB: a token and a few
/// ids). A refusal is [`VendorError::Auth`] naming the status and what `describe` reads from the
/// vendor's error body — its code and message, never the raw body, which may echo what was
/// sent; 429 and 5xx are `Throttled` / `Unavailable`.
pub async fn post_sign_in(
    http: &reqwest::Client,
    base: &Url,
    path: &str,
    body: &serde_json::Value,
    describe: impl Fn(&[u8]) -> Option<String>,
) -> Result<Bytes, VendorError> {
    let url = base.join(path).map_err(|e| VendorError::Auth {
        reason: format!("bad sign-in URL: {e}"),
    })?;
    let resp = http
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(body)
        .send()
        .await
        .map_err(|e| VendorError::from_transport(&e))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return read_body_limited(resp, 1 << 20).await;
    }
    let refused = VendorError::sign_in_refused(status, resp.headers());
    if !matches!(refused, VendorError::Auth { .. }) {
        return Err(refused);
    }
    let body = read_body_limited(resp, 64 << 10).await.unwrap_or_default();
    Err(match describe(&body) {
        Some(what) => VendorError::Auth {
            reason: format!("sign-in answered HTTP {status} ({what})"),
        },
        None => refused,
    })
}

/// The error and its sources, without the URL.
fn transport_reason(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3); a date in the past is 0.
pub fn retry_after_from(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?, SystemTime::now())
}

/// [`retry_after_from`] for one header value, relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = parse_http_date(value)?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// IMF-fixdate, and the obsolete RFC 850 and asctime forms that RFC 9110 says to accept.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    use chrono::{NaiveDateTime, TimeZone, Utc};
    let naive = [
        "%a, %d %b %Y %H:%M:%S GMT",
        "%A, %d-%b-%y %H:%M:%S GMT",
        "%a %b %e %H:%M:%S %Y",
    ]
    .iter()
    .find_map(|fmt| NaiveDateTime::parse_from_str(value, fmt).ok())?;
    Some(SystemTime::from(Utc.from_utc_datetime(&naive)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:40 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:39 1994", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn ceil_secs_rounds_up_to_at_least_one() {
        assert_eq!(ceil_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn idempotence_defaults_by_method() {
        assert!(VendorRequest::get("a").idempotent);
        assert!(VendorRequest::put("a").idempotent);
        assert!(VendorRequest::delete("a").idempotent);
        assert!(!VendorRequest::post("a").idempotent);
        assert!(!VendorRequest::patch("a").idempotent);
        assert!(VendorRequest::post("search").idempotent().idempotent);
        assert!(!VendorRequest::get("a").non_idempotent().idempotent);
    }

    struct NoAuth;
    #[async_trait]
    impl Authenticator for NoAuth {
        async fn sign_in(
            &self,
            _: &reqwest::Client,
            _: &Url,
        ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError> {
            Ok(vec![])
        }
    }

    #[test]
    fn backoff_is_capped_exponential_with_full_jitter() {
        let client = VendorClient::new(
            Url::parse("http://127.0.0.1:9/").unwrap(),
            ClientSettings {
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_millis(1000),
                ..ClientSettings::default()
            },
            Arc::new(NoAuth),
        )
        .unwrap();
        assert_eq!(client.backoff_cap(0), Duration::from_millis(100));
        assert_eq!(client.backoff_cap(1), Duration::from_millis(200));
        assert_eq!(client.backoff_cap(3), Duration::from_millis(800));
        assert_eq!(client.backoff_cap(4), Duration::from_millis(1000));
        assert_eq!(client.backoff_cap(200), Duration::from_millis(1000));
        let samples: Vec<Duration> = (0..200).map(|_| client.backoff(2)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(400)));
        // Full jitter spreads over the whole range, not just near the cap.
        assert!(samples.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(200)));
    }

    #[test]
    fn a_cancelled_half_open_trial_lets_the_next_request_try() {
        let client = VendorClient::new(
            Url::parse("http://127.0.0.1:9/").unwrap(),
            ClientSettings {
                breaker_threshold: 2,
                breaker_cooldown: Duration::from_millis(20),
                ..ClientSettings::default()
            },
            Arc::new(NoAuth),
        )
        .unwrap();
        let down = VendorError::Unavailable {
            reason: "down".into(),
            retry_after: Duration::from_secs(1),
        };
        client.record_failure(&down);
        assert!(client.admit().is_ok(), "below the threshold");
        client.record_failure(&down);
        assert!(client.admit().is_err(), "open");
        std::thread::sleep(Duration::from_millis(30));
        let trial = client.admit().expect("half-open trial");
        assert!(client.admit().is_err(), "one trial at a time");
        drop(trial); // e.g. the IdP hung up: no verdict
        assert_eq!(client.health().breaker, BreakerState::HalfOpen);
        let trial = client.admit().expect("the next request may try");
        client.record_success();
        drop(trial);
        assert_eq!(client.health().breaker, BreakerState::Closed);
        assert!(client.admit().is_ok());
    }

    #[test]
    fn a_429_lowers_the_rate_once_per_burst_and_successes_raise_it_slowly() {
        let budget = RateBudget::new(2000.0, 200, 24);
        let before = Instant::now();
        for _ in 0..20 {
            budget.on_accepted(true);
        }
        assert_eq!(budget.current_rate(), 2000.0, "at the ceiling already");
        // The vendor accepted 20 in the last second: 0.8 × 20.
        budget.on_throttled(Instant::now());
        assert!((budget.current_rate() - 16.0).abs() < 1e-9, "{budget:?}");
        // More 429s to requests sent before that decrease: the same signal.
        for _ in 0..15 {
            budget.on_throttled(before);
        }
        assert!((budget.current_rate() - 16.0).abs() < 1e-9, "{budget:?}");
        // A 429 to a request sent at the new rate is a new signal.
        budget.on_throttled(Instant::now());
        assert!(budget.current_rate() < 16.0, "{budget:?}");
        // Additive increase: 1/rate per success, about +1/s per second of successes.
        let low = budget.current_rate();
        let n = low.ceil() as usize;
        for _ in 0..n {
            budget.on_accepted(true);
        }
        let raised = budget.current_rate();
        assert!(
            raised > low + 0.9 && raised < low + 1.2,
            "{low} -> {raised}"
        );
        // A 5xx is accepted by the throttle but raises nothing.
        budget.on_accepted(false);
        assert_eq!(budget.current_rate(), raised);
    }

    #[test]
    fn without_accepted_calls_a_429_cuts_at_most_tenfold_and_never_below_the_floor() {
        let budget = RateBudget::new(2000.0, 200, 24);
        budget.on_throttled(Instant::now());
        assert!((budget.current_rate() - 200.0).abs() < 1e-9, "{budget:?}");
        for _ in 0..10 {
            budget.on_throttled(Instant::now());
        }
        assert_eq!(budget.current_rate(), 1.0);
        for _ in 0..1000 {
            budget.on_accepted(true);
        }
        assert!(budget.current_rate() > 40.0, "{budget:?}");
        // Capped at the configured rate (n successes from 1/s: about sqrt(2n) req/s).
        for _ in 0..3_000_000 {
            budget.on_accepted(true);
        }
        assert_eq!(budget.current_rate(), 2000.0);
        // An unlimited budget stays unlimited.
        let open = RateBudget::new(f64::INFINITY, 10, 8);
        open.on_throttled(Instant::now());
        assert_eq!(open.current_rate(), f64::INFINITY);
    }

    #[tokio::test]
    async fn after_a_decrease_the_next_tokens_come_at_the_new_rate() {
        let budget = RateBudget::new(1000.0, 100, 8);
        for _ in 0..50 {
            budget.take_token().await; // from the stored burst
        }
        for _ in 0..20 {
            budget.on_accepted(true);
        }
        budget.on_throttled(Instant::now()); // 0.8 × 20 = 16/s, stored burst dropped
        let started = Instant::now();
        for _ in 0..4 {
            budget.take_token().await;
        }
        let took = started.elapsed();
        // 4 tokens at 16/s: 250 ms (50 tokens were still stored at 1000/s).
        assert!(took >= Duration::from_millis(200), "took {took:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn scim_mapping_is_503_or_429_with_retry_after() {
        let e: ScimError = VendorError::Unavailable {
            reason: "down".into(),
            retry_after: Duration::from_millis(2500),
        }
        .into();
        assert_eq!((e.status, e.retry_after), (503, Some(3)));
        let e: ScimError = VendorError::Throttled {
            retry_after: Duration::ZERO,
        }
        .into();
        assert_eq!((e.status, e.retry_after), (429, Some(1)));
        for err in [
            VendorError::Ambiguous { reason: "x".into() },
            VendorError::Auth { reason: "x".into() },
            VendorError::Decode { reason: "x".into() },
            VendorError::Rejected {
                status: 400,
                body: "secret-ish vendor body".into(),
            },
        ] {
            let e: ScimError = err.into();
            assert_eq!(e.status, 503);
            assert!(e.retry_after.unwrap() >= 1);
            assert!(!e.detail.contains("secret-ish"));
        }
    }
}
