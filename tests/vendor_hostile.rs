//! Issue 9, "Bad input": a hostile or broken vendor answer (wrong JSON, 200 with an error body,
//! a huge body, a hang, a body that trickles forever) is a transient or permanent failure of
//! that one request, never a panic, never unbounded memory and never a stuck caller.
//!
//! The vendor is a raw TCP listener on port 0 that writes HTTP/1.1 by hand, so that it can do
//! what no well-behaved server framework would: declare 100 MiB, stream forever, never answer.

use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue};
use scim_bridge::connector::http::{
    read_body_limited, Authenticator, BreakerState, ClientSettings, Url, VendorClient, VendorError,
    VendorRequest, DEFAULT_MAX_BODY_BYTES,
};
use scim_bridge::connector::sisense::{rest::user_answer, wire};
use scim_bridge::engine::adapter::AdapterError;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1 << 20;

/// What the vendor saw and did, across all connections.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Body bytes the vendor managed to write.
    sent: AtomicU64,
    /// Connections whose answer has ended (finished, or the client went away).
    finished: AtomicUsize,
    /// Whether a connection wrote its whole body.
    completed: AtomicBool,
}

struct RawVendor {
    base: Url,
    seen: Arc<Seen>,
}

/// A vendor that reads each request's head and then hands the socket to `answer`.
async fn raw_vendor<F, Fut>(answer: F) -> RawVendor
where
    F: Fn(TcpStream, Arc<Seen>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let answer = Arc::new(answer);
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            s.connections.fetch_add(1, SeqCst);
            let (answer, s) = (answer.clone(), s.clone());
            tokio::spawn(async move {
                if read_head(&mut socket).await {
                    answer(socket, s.clone()).await;
                }
                s.finished.fetch_add(1, SeqCst);
            });
        }
    });
    RawVendor {
        base: Url::parse(&format!("http://{addr}/api/")).unwrap(),
        seen,
    }
}

/// Reads up to the end of the request head (the client's request bodies are not looked at).
async fn read_head(socket: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// Writes `total` bytes of body in 64 KiB pieces (HTTP chunks if `chunked`), counting them,
/// until done or the client hangs up.
async fn stream_body(socket: &mut TcpStream, seen: &Seen, total: usize, chunked: bool) {
    let piece = vec![b' '; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(piece.len());
        let ok = if chunked {
            let mut framed = format!("{n:x}\r\n").into_bytes();
            framed.extend_from_slice(&piece[..n]);
            framed.extend_from_slice(b"\r\n");
            socket.write_all(&framed).await.is_ok()
        } else {
            socket.write_all(&piece[..n]).await.is_ok()
        };
        if !ok {
            return;
        }
        seen.sent.fetch_add(n as u64, SeqCst);
        left -= n;
    }
    if chunked && socket.write_all(b"0\r\n\r\n").await.is_err() {
        return;
    }
    seen.completed.store(true, SeqCst);
}

/// `total` bytes of body, chunked (no length up front) or with a true `Content-Length`.
async fn body_of(total: usize, chunked: bool) -> RawVendor {
    raw_vendor(move |mut socket, seen| async move {
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {total}")
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
        );
        if socket.write_all(head.as_bytes()).await.is_ok() {
            stream_body(&mut socket, &seen, total, chunked).await;
        }
    })
    .await
}

/// Answers every request with `status` and exactly `body`.
async fn answering(status: u16, body: Vec<u8>) -> RawVendor {
    let body = Arc::new(body);
    raw_vendor(move |mut socket, seen| {
        let body = body.clone();
        async move {
            let head = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&body).await;
            seen.sent.fetch_add(body.len() as u64, SeqCst);
            seen.completed.store(true, SeqCst);
        }
    })
    .await
}

/// An API-key vendor: signing in sends nothing.
struct StaticKey;

#[async_trait]
impl Authenticator for StaticKey {
    async fn sign_in(
        &self,
        _: &reqwest::Client,
        _: &Url,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError> {
        Ok(vec![(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("k"),
        )])
    }
}

/// A 1 MiB body cap, fast retries, no rate limit, a breaker that stays out of the way.
fn hostile(timeout_ms: u64, max_attempts: u32) -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_millis(timeout_ms),
        connect_timeout: Duration::from_secs(1),
        max_attempts,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        rate_per_sec: f64::INFINITY,
        max_concurrency: 16,
        breaker_threshold: 1000,
        max_body_bytes: MIB,
        ..ClientSettings::default()
    }
}

fn client(vendor: &RawVendor, settings: ClientSettings) -> VendorClient {
    VendorClient::new(vendor.base.clone(), settings, Arc::new(StaticKey)).unwrap()
}

/// No hostile answer may hold a test for long: a client that waits forever fails here.
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: the client was still waiting after 10 s"))
}

/// Waits (briefly) for the vendor to notice that the client went away.
async fn settle(seen: &Seen, connections: usize) {
    let until = Instant::now() + Duration::from_secs(5);
    while seen.finished.load(SeqCst) < connections && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn the_default_cap_is_64_mib() {
    assert_eq!(DEFAULT_MAX_BODY_BYTES, 64 * MIB);
    assert_eq!(ClientSettings::default().max_body_bytes, 64 * MIB);
}

#[tokio::test]
async fn a_streamed_100_mib_body_is_dropped_at_the_cap_without_retries() {
    let vendor = body_of(100 * MIB, true).await;
    let client = client(&vendor, hostile(20_000, 4));
    let started = Instant::now();
    let err = bounded("100 MiB chunked", client.send(VendorRequest::get("users")))
        .await
        .expect_err("a 100 MiB answer against a 1 MiB cap");
    let took = started.elapsed();
    let VendorError::Decode { reason } = &err else {
        panic!("over-size must be Decode, got {err:?}");
    };
    assert!(reason.contains("1048576-byte limit"), "{reason}");
    assert!(reason.contains("GET users"), "{reason}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    settle(&vendor.seen, 1).await;
    let sent = vendor.seen.sent.load(SeqCst);
    // The cap plus what the socket buffers took: the rest was never produced, let alone held.
    assert!(
        sent < 32 * MIB as u64,
        "the vendor got to write {sent} bytes"
    );
    assert!(
        !vendor.seen.completed.load(SeqCst),
        "the whole body was read"
    );
    assert_eq!(
        vendor.seen.connections.load(SeqCst),
        1,
        "the same request gets the same answer: not retried"
    );
    // Counted against the vendor, and said so by the detailed /readyz (admin listener).
    let last = client.health().last_error.expect("recorded");
    assert!(last.contains("limit"), "{last}");
    // The IdP sees 503 + Retry-After, never a 500.
    let scim: scim_bridge::scim::ScimError = err.into();
    assert_eq!(scim.status, 503);
}

#[tokio::test]
async fn a_declared_100_mib_body_is_refused_before_reading_it() {
    let vendor = body_of(100 * MIB, false).await;
    let client = client(&vendor, hostile(20_000, 4));
    let err = bounded("100 MiB declared", client.send(VendorRequest::get("users")))
        .await
        .expect_err("Content-Length over the cap");
    let VendorError::Decode { reason } = &err else {
        panic!("over-size must be Decode, got {err:?}");
    };
    assert!(reason.contains("of 104857600 bytes"), "{reason}");
    settle(&vendor.seen, 1).await;
    let sent = vendor.seen.sent.load(SeqCst);
    assert!(
        sent < 32 * MIB as u64,
        "the vendor got to write {sent} bytes"
    );
    assert_eq!(vendor.seen.connections.load(SeqCst), 1);
}

#[tokio::test]
async fn a_body_of_exactly_the_cap_is_read_and_one_byte_more_is_not() {
    for chunked in [true, false] {
        let vendor = body_of(MIB, chunked).await;
        let resp = bounded(
            "at the cap",
            client(&vendor, hostile(20_000, 1)).send(VendorRequest::get("users")),
        )
        .await
        .unwrap_or_else(|e| panic!("chunked={chunked}: {e:?}"));
        assert_eq!(
            (resp.status, resp.body.len()),
            (200, MIB),
            "chunked={chunked}"
        );

        let vendor = body_of(MIB + 1, chunked).await;
        let err = bounded(
            "over the cap",
            client(&vendor, hostile(20_000, 1)).send(VendorRequest::get("users")),
        )
        .await
        .expect_err("one byte over");
        assert!(
            matches!(err, VendorError::Decode { .. }),
            "chunked={chunked}: {err:?}"
        );
    }
}

#[tokio::test]
async fn repeated_over_size_answers_open_the_breaker() {
    let vendor = body_of(2 * MIB, true).await;
    let client = client(
        &vendor,
        ClientSettings {
            breaker_threshold: 2,
            breaker_cooldown: Duration::from_secs(60),
            ..hostile(20_000, 4)
        },
    );
    for _ in 0..2 {
        let err = bounded("over-size", client.send(VendorRequest::get("users")))
            .await
            .unwrap_err();
        assert!(matches!(err, VendorError::Decode { .. }), "{err:?}");
    }
    assert!(
        matches!(client.health().breaker, BreakerState::Open { .. }),
        "{:?}",
        client.health()
    );
    let err = client.send(VendorRequest::get("users")).await.unwrap_err();
    assert!(matches!(err, VendorError::Unavailable { .. }), "{err:?}");
    assert_eq!(
        vendor.seen.connections.load(SeqCst),
        2,
        "fails fast while open"
    );
}

#[tokio::test]
async fn a_sign_in_answer_can_be_read_with_the_same_cap() {
    let vendor = body_of(100 * MIB, true).await;
    let resp = reqwest::get(vendor.base.join("login").unwrap())
        .await
        .unwrap();
    let err = bounded("sign-in body", read_body_limited(resp, MIB))
        .await
        .unwrap_err();
    assert!(matches!(err, VendorError::Decode { .. }), "{err:?}");
    settle(&vendor.seen, 1).await;
    assert!(vendor.seen.sent.load(SeqCst) < 32 * MIB as u64);

    let vendor = answering(200, br#"{"access_token":"t"}"#.to_vec()).await;
    let resp = reqwest::get(vendor.base.join("login").unwrap())
        .await
        .unwrap();
    let body = read_body_limited(resp, MIB).await.unwrap();
    assert_eq!(&body[..], br#"{"access_token":"t"}"#);
}

#[tokio::test]
async fn a_vendor_that_never_answers_ends_in_unavailable_after_the_retries() {
    let vendor = raw_vendor(|socket, _| async move {
        // Accepted, read, and never a byte back (the socket stays open).
        let _held = socket;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    })
    .await;
    let client = client(&vendor, hostile(300, 2));
    let started = Instant::now();
    let err = bounded("hang", client.send(VendorRequest::get("users/1")))
        .await
        .expect_err("no answer");
    let took = started.elapsed();
    let VendorError::Unavailable { reason, .. } = &err else {
        panic!("a hang must be Unavailable, got {err:?}");
    };
    assert!(reason.contains("timed out"), "{reason}");
    assert_eq!(vendor.seen.connections.load(SeqCst), 2, "two attempts");
    assert!(
        took >= Duration::from_millis(580) && took < Duration::from_millis(1500),
        "took {took:?}"
    );

    // A create that hangs may or may not have been applied: one attempt, then Ambiguous.
    let started = Instant::now();
    let err = bounded(
        "hang on create",
        client.send(VendorRequest::post("users").json(json!({"userName": "a"}))),
    )
    .await
    .expect_err("no answer");
    assert!(matches!(err, VendorError::Ambiguous { .. }), "{err:?}");
    assert_eq!(vendor.seen.connections.load(SeqCst), 3, "not repeated");
    assert!(started.elapsed() < Duration::from_millis(1000));
}

#[tokio::test]
async fn a_body_that_trickles_forever_ends_by_the_timeout() {
    let vendor = raw_vendor(|mut socket, seen| async move {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n[";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        // Always some progress, so only a deadline on the whole read ends it.
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if socket.write_all(b" ").await.is_err() {
                return;
            }
            seen.sent.fetch_add(1, SeqCst);
        }
    })
    .await;
    let client = client(&vendor, hostile(300, 2));
    let started = Instant::now();
    let err = bounded("trickle", client.send(VendorRequest::get("users")))
        .await
        .expect_err("never finishes");
    let took = started.elapsed();
    let VendorError::Unavailable { reason, .. } = &err else {
        panic!("a trickle must be Unavailable, got {err:?}");
    };
    assert!(reason.contains("timed out"), "{reason}");
    assert!(
        took >= Duration::from_millis(580) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
    assert_eq!(vendor.seen.connections.load(SeqCst), 2);
    assert!(
        vendor.seen.sent.load(SeqCst) >= 10,
        "the body was trickling when the deadline hit"
    );
}

/// Sends one GET to a vendor that answers `status` with `body`.
async fn answer_of(status: u16, body: &[u8]) -> scim_bridge::connector::http::VendorResponse {
    let vendor = answering(status, body.to_vec()).await;
    bounded(
        "answer",
        client(&vendor, hostile(5_000, 1)).send(VendorRequest::get("users/1")),
    )
    .await
    .expect("the vendor answered")
}

#[tokio::test]
async fn a_200_that_is_not_json_is_decode() {
    let mut deep = "[".repeat(100_000).into_bytes();
    deep.extend("]".repeat(100_000).into_bytes());
    let bodies: [(&str, Vec<u8>); 5] = [
        ("truncated", br#"{"users": [{"_id": "#.to_vec()),
        (
            "html",
            b"<html><body>Gateway says hi</body></html>".to_vec(),
        ),
        ("empty", Vec::new()),
        ("not utf-8", vec![0xff, 0xfe, 0x00, 0x7b, 0x80]),
        ("100k deep", deep),
    ];
    for (what, body) in bodies {
        let resp = answer_of(200, &body).await;
        assert_eq!(resp.status, 200, "{what}");
        let err = resp.json::<Value>().expect_err(what);
        let VendorError::Decode { reason } = &err else {
            panic!("{what}: {err:?}");
        };
        assert!(reason.starts_with("HTTP 200 body"), "{what}: {reason}");
        assert!(
            !reason.contains("Gateway says hi"),
            "no vendor body in errors"
        );
        // And the adapter layer retries it later rather than failing the object for good.
        assert!(matches!(
            user_answer(&resp),
            Err(AdapterError::Transient { .. })
        ));
    }
}

#[tokio::test]
async fn a_200_with_an_error_body_where_a_user_is_expected_is_decode() {
    let body = serde_json::to_vec(&json!({
        "error": {"code": 5000, "message": "Internal error, sorry", "status": 500}
    }))
    .unwrap();
    let resp = answer_of(200, &body).await;
    assert!(resp.is_success());
    let err = resp.json::<wire::User>().expect_err("no _id");
    assert!(matches!(err, VendorError::Decode { .. }), "{err:?}");
    assert!(!err.to_string().contains("sorry"), "{err}");
    let err = resp.json::<Vec<wire::User>>().expect_err("not a list");
    assert!(matches!(err, VendorError::Decode { .. }), "{err:?}");
    let Err(AdapterError::Transient { reason, .. }) = user_answer(&resp) else {
        panic!("the Sisense adapter must retry an unreadable user later");
    };
    assert!(reason.contains("unreadable Sisense user"), "{reason}");

    // Wrong types and an empty list where one user is expected: the same.
    for body in [
        json!({"_id": 42, "userName": ["a"]}),
        json!([]),
        json!(null),
        json!("ok"),
    ] {
        let resp = answer_of(200, &serde_json::to_vec(&body).unwrap()).await;
        assert!(
            matches!(resp.json::<wire::User>(), Err(VendorError::Decode { .. })),
            "{body}"
        );
        assert!(
            matches!(user_answer(&resp), Err(AdapterError::Transient { .. })),
            "{body}"
        );
    }
}
