//! Native TLS (issue 14, CONTRACT §3.1 `[tls] cert`/`key`) over real sockets: a CA made in the
//! test signs the bridge's certificates; a client that trusts only that CA does SCIM over
//! HTTPS; the files are replaced while the bridge serves, and the swap is seen by new
//! connections while an open keep-alive connection goes on; a bad replacement is refused and the
//! old pair kept; SIGHUP reloads the release binary; plain HTTP to the TLS port fails cleanly.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SerialNumber,
};
use scim_bridge::config::{Config, TlsConfig};
use scim_bridge::server::reload::Trigger;
use scim_bridge::server::tls::{Reloaded, POLL_INTERVAL};
use scim_bridge::server::{self, RunningServer};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_scim-bridge");
const TOKEN: &str = "tls-test-token-0123456789abcdef0123456789";

/// The test's CA.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// One leaf certificate and its key, as PEM, and the certificate's DER (what a client sees).
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "scim-bridge test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for 127.0.0.1 and localhost, with its own key, serial and common name.
    fn leaf(&self, serial: u64, cn: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Writes `contents` to `path` as a rotation does: a new file renamed over the old one, with
/// `mode`.
fn replace(path: &Path, contents: &str, mode: u32) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
    std::fs::rename(&tmp, path).unwrap();
}

/// Puts `leaf` at `dir/tls.crt` and `dir/tls.key` (key first: a writer that does so never
/// shows a certificate without its key).
fn install(dir: &Path, leaf: &Leaf) -> TlsConfig {
    let tls = TlsConfig {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    replace(&tls.key, &leaf.key_pem, 0o600);
    replace(&tls.cert, &leaf.cert_pem, 0o644);
    tls
}

/// A client that trusts only the test CA and reports the peer certificate.
fn client(ca: &Ca) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .tls_info(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET `url` with the tenant token: the status and the certificate the server presented.
async fn get(client: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let res = client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let cert = res
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a TLS connection reports the peer certificate")
        .to_vec();
    let status = res.status().as_u16();
    let _ = res.bytes().await;
    (status, cert)
}

/// A config with one local tenant, both listeners on free loopback ports, HTTPS on both.
fn config(data: &Path, tls: TlsConfig) -> Config {
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntls = true\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n\
         [[tenants]]\nid = \"acme\"\ntokens = [\"{TOKEN}\"]\n[tenants.vendor]\nkind = \"local\"\n",
        tls.cert.display(),
        tls.key.display()
    );
    let mut c = Config::from_toml_str(&text, &|_| None).unwrap();
    c.data_dir = data.to_path_buf();
    c
}

async fn start(config: &Config) -> Result<RunningServer, server::StartError> {
    let store = scim_bridge::store::Store::open(&config.data_dir).unwrap();
    let cfg = config.clone();
    let state = tokio::task::spawn_blocking(move || server::build_state(&cfg, store))
        .await
        .unwrap()?;
    server::start(config.listen, state, Some(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_scim_and_picks_up_a_rotated_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let first = ca.leaf(1, "bridge-1");
    let tls = install(dir.path(), &first);
    let bridge = start(&config(&dir.path().join("data"), tls.clone()))
        .await
        .unwrap();
    let users = format!(
        "https://127.0.0.1:{}/tenants/acme/scim/v2/Users",
        bridge.addr.port()
    );
    let admin = format!(
        "https://127.0.0.1:{}/healthz",
        bridge.admin_addr().unwrap().port()
    );

    // SCIM over HTTPS, verified against the test CA alone.
    let open = client(&ca);
    let (status, cert) = get(&open, &users).await;
    assert_eq!(status, 200);
    assert_eq!(cert, first.der, "the first certificate is served");
    // `[admin] tls = true`: the admin listener serves the same pair.
    let (status, cert) = get(&client(&ca), &admin).await;
    assert_eq!((status, cert == first.der), (200, true));
    // A client that does not trust the CA is refused by its own verifier.
    assert!(reqwest::Client::new().get(&users).send().await.is_err());

    // Plain HTTP to the TLS port: a clean failure for that client, nothing else.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://127.0.0.1:{}/healthz", bridge.addr.port()))
        .send()
        .await;
    assert!(r.is_err(), "plain HTTP on the TLS port answered: {r:?}");
    let (status, _) = get(&client(&ca), &users).await;
    assert_eq!(
        status, 200,
        "the bridge still serves after a plain-HTTP client"
    );

    // Rotation: new key and certificate (another serial and CN), renamed into place.
    let second = ca.leaf(2, "bridge-2");
    install(dir.path(), &second);
    // Within the poll interval (plus slack for a loaded machine), a new connection gets the new
    // certificate; meanwhile the connection opened before the swap keeps serving requests with
    // its session (one request a second keeps it inside actix's 5 s keep-alive).
    let deadline = Instant::now() + POLL_INTERVAL * 3;
    loop {
        let (status, cert) = get(&open, &users).await;
        assert_eq!(status, 200);
        assert_eq!(
            cert, first.der,
            "the open keep-alive connection was dropped (a new one was made)"
        );
        let (status, cert) = get(&client(&ca), &users).await;
        assert_eq!(status, 200);
        if cert == second.der {
            break;
        }
        assert_eq!(cert, first.der);
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was not picked up within {:?}",
            POLL_INTERVAL * 3
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // After the swap, the old connection still completes a request, on its old session.
    let (status, cert) = get(&open, &users).await;
    assert_eq!((status, cert == first.der), (200, true));
    let (_, cert) = get(&client(&ca), &admin).await;
    assert_eq!(
        cert, second.der,
        "the admin listener follows the same reload"
    );

    let store = bridge.tls.clone().expect("the bridge holds its TLS pair");

    // A bad replacement: a certificate whose key is another one. Refused, named, old kept.
    let third = ca.leaf(3, "bridge-3");
    replace(&tls.cert, &third.cert_pem, 0o644);
    match store.reload(true) {
        Reloaded::Refused(p) => {
            assert_eq!(p[0].key_path, "tls.key", "{p:?}");
            assert!(p[0].message.contains("does not match"), "{p:?}");
            assert!(!p[0].message.contains("PRIVATE KEY"), "{p:?}");
        }
        other => panic!("a mismatched pair was not refused: {other:?}"),
    }
    // Unparseable certificate, empty key file, key that others may read: each refused.
    replace(
        &tls.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64 !!\n",
        0o644,
    );
    assert!(
        matches!(store.reload(true), Reloaded::Refused(p) if p[0].key_path == "tls.cert"),
        "a garbled certificate was not refused"
    );
    replace(&tls.cert, &third.cert_pem, 0o644);
    replace(&tls.key, "", 0o600);
    assert!(
        matches!(store.reload(true), Reloaded::Refused(p) if p[0].key_path == "tls.key" && p[0].message.contains("no PEM private key")),
        "an empty key was not refused"
    );
    #[cfg(unix)]
    {
        let wrong = ca.leaf(4, "bridge-4");
        replace(&tls.key, &wrong.key_pem, 0o644);
        replace(&tls.cert, &wrong.cert_pem, 0o644);
        assert!(
            matches!(store.reload(true), Reloaded::Refused(p) if p[0].message.contains("others may read")),
            "a world-readable key was not refused"
        );
    }
    // The watcher, polling meanwhile, must not have taken any of them either.
    tokio::time::sleep(POLL_INTERVAL + Duration::from_secs(1)).await;
    let (status, cert) = get(&client(&ca), &users).await;
    assert_eq!(
        (status, cert == second.der),
        (200, true),
        "the old pair is kept"
    );

    // A reload request (what SIGHUP sends) takes a good pair at once, without a poll.
    install(dir.path(), &third);
    bridge.reload.trigger(Trigger::Request);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, cert) = get(&client(&ca), &users).await;
        if cert == third.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reload request was not acted on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_pair_refuses_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let one = ca.leaf(1, "one");
    let two = ca.leaf(2, "two");
    let tls = install(dir.path(), &one);
    replace(&tls.key, &two.key_pem, 0o600);
    let err = start(&config(&dir.path().join("data"), tls.clone()))
        .await
        .err()
        .expect("a mismatched pair must not start")
        .to_string();
    assert!(
        err.contains("tls.key") && err.contains("does not match"),
        "{err}"
    );
    assert!(err.contains(&tls.key.display().to_string()), "{err}");
    let missing = TlsConfig {
        cert: dir.path().join("absent.crt"),
        key: tls.key.clone(),
    };
    let err = start(&config(&dir.path().join("data2"), missing))
        .await
        .err()
        .expect("a missing certificate must not start")
        .to_string();
    assert!(
        err.contains("tls.cert") && err.contains("absent.crt"),
        "{err}"
    );
}

/// The release binary, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[cfg(unix)]
fn sighup(child: &Child) {
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP failed");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_the_running_binary() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let first = ca.leaf(1, "bridge-1");
    let tls = install(dir.path(), &first);
    // The tenant token comes from a `${file:…}` secret, as a Kubernetes Secret mounts it.
    let token_file = dir.path().join("scim-token");
    replace(&token_file, &format!("{TOKEN}\n"), 0o440);
    let (port, admin_port) = (free_port(), free_port());
    let config_path: PathBuf = dir.path().join("bridge.toml");
    std::fs::write(
        &config_path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\
             [[tenants]]\nid = \"acme\"\ntokens = [\"${{file:{token}}}\"]\n\
             [tenants.vendor]\nkind = \"local\"\n",
            data = dir.path().join("data").display(),
            cert = tls.cert.display(),
            key = tls.key.display(),
            token = token_file.display(),
        ),
    )
    .unwrap();

    // `config check` loads the pair too.
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(TOKEN));

    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let bridge = Running(child);
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }
    let count = |needle: &str| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    };
    let users = format!("https://127.0.0.1:{port}/tenants/acme/scim/v2/Users");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client(&ca).get(&users).bearer_auth(TOKEN).send().await;
        if matches!(&r, Ok(res) if res.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge did not serve HTTPS: {r:?}\n{:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, cert) = get(&client(&ca), &users).await;
    assert_eq!(cert, first.der);

    // New pair, then SIGHUP at once: taken without waiting for a poll.
    let second = ca.leaf(2, "bridge-2");
    install(dir.path(), &second);
    sighup(&bridge.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, cert) = get(&client(&ca), &users).await;
        assert_eq!(status, 200);
        if cert == second.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGHUP forces a reload even of unchanged files (a poll never does): the log proves the
    // signal, not a poll, did it. And the bridge is alive: SIGHUP's default action is gone.
    let before = count("TLS certificate reloaded");
    assert!(count("SIGHUP received") >= 1, "{:?}", log.lock().unwrap());
    sighup(&bridge.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("TLS certificate reloaded") == before {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload: {:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, cert) = get(&client(&ca), &users).await;
    assert_eq!((status, cert == second.der), (200, true));

    // A bad pair on SIGHUP: refused with a line naming the file; the old pair serves on.
    let third = ca.leaf(3, "bridge-3");
    replace(&tls.cert, &third.cert_pem, 0o644);
    sighup(&bridge.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("refused") == 0 {
        assert!(
            Instant::now() < deadline,
            "the bad pair was not refused: {:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refusal = log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("refused"))
        .cloned()
        .unwrap();
    assert!(
        refusal.contains("tls.key") && refusal.contains(&tls.key.display().to_string()),
        "{refusal}"
    );
    assert!(!refusal.contains("PRIVATE KEY"), "{refusal}");
    let (status, cert) = get(&client(&ca), &users).await;
    assert_eq!((status, cert == second.der), (200, true));
    let all = log.lock().unwrap().join("\n");
    assert!(
        !all.contains(TOKEN),
        "the token from the secret file was logged"
    );
    drop(bridge);
}
