//! Native TLS (issue 14, CONTRACT §3.1 `[tls] cert`/`key`): rustls, no OpenSSL.
//!
//! The listeners do not hold a certificate; they hold a [`CertStore`], rustls's
//! [`ResolvesServerCert`], which hands every new handshake the pair it holds now. Replacing that
//! pair therefore never touches a connection: an open one keeps the session it negotiated, the
//! next handshake gets the new certificate. The store re-reads the files
//! - every [`POLL_INTERVAL`], comparing a SHA-256 of both files' bytes, and
//! - at once on a reload trigger (SIGHUP, see `server::reload`).
//!
//! Polling rather than inotify (`notify`): Kubernetes updates a Secret volume by swapping a
//! `..data` symlink one directory above the files, cert-manager and certbot write with renames,
//! and editors replace files; an inotify watch on the file names misses some of these or fires
//! before both files are written. Hashing two small files every few seconds sees every kind of
//! replacement, costs nothing measurable, and needs no extra dependency. The hash (not mtime and
//! size) is compared because a renewed certificate usually has the same size, and a restored
//! backup may carry an old mtime.
//!
//! A new pair that does not load (unparseable, no key, key not matching the certificate, or a
//! key file others may read) is refused with a log line naming the file, and the old pair keeps
//! serving. A refused pair is logged once, not on every poll: a cert written before its key is
//! refused, then taken when the key lands. The crypto provider is aws-lc-rs, named here and never
//! taken from a process default (two providers in one build make the default ambiguous, and
//! rustls then panics at the first handshake); it is the provider reqwest's rustls already
//! links, so the bridge carries one crypto library.

use crate::config::{Problem, TlsConfig};
use crate::server::reload::{self, Trigger};
use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often the files are compared with what is served.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// A PEM file larger than this is not a certificate chain or a key (a path such as `/dev/zero`
/// must not be read for ever).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The provider every TLS config of the bridge uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The bytes of both files; the key's are zeroed when dropped.
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Drop for Files {
    fn drop(&mut self) {
        self.key.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.key);
    }
}

impl Files {
    fn read(tls: &TlsConfig) -> Result<Files, Vec<Problem>> {
        let cert = read_pem(&tls.cert, "tls.cert", false);
        let key = read_pem(&tls.key, "tls.key", true);
        match (cert, key) {
            (Ok(cert), Ok(key)) => Ok(Files { cert, key }),
            (cert, key) => Err(cert.err().into_iter().chain(key.err()).collect()),
        }
    }

    fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update((self.cert.len() as u64).to_be_bytes());
        h.update(&self.cert);
        h.update(&self.key);
        h.finalize().into()
    }

    /// The certified key of these bytes, checked: a chain whose first certificate parses, a key
    /// the provider can sign with, and the key matching that certificate.
    fn parse(&self, tls: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, Problem> {
        let cert_problem = |message: String| Problem {
            key_path: "tls.cert".into(),
            message,
        };
        let key_problem = |message: String| Problem {
            key_path: "tls.key".into(),
            message,
        };
        let cert_path = tls.cert.display();
        let key_path = tls.key.display();
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_problem(format!("{cert_path}: {}", pem_error(&e))))?;
        if chain.is_empty() {
            return Err(cert_problem(format!(
                "{cert_path}: no PEM `CERTIFICATE` block found"
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| match e {
            pem::Error::NoItemsFound => key_problem(format!(
                "{key_path}: no PEM private key found (expected `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
            )),
            e => key_problem(format!("{key_path}: {}", pem_error(&e))),
        })?;
        let signing = provider.key_provider.load_private_key(key).map_err(|_| {
            key_problem(format!(
                "{key_path}: not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519)"
            ))
        })?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) => Ok(certified),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(key_problem(format!(
                    "{key_path}: the private key does not match the certificate in {cert_path}"
                )))
            }
            // The provider could not tell (it has no public key for this key type): rustls's
            // own `CertifiedKey::from_der` accepts that too; a wrong key then fails handshakes.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(e) => Err(cert_problem(format!(
                "{cert_path}: the first certificate cannot be parsed: {e}"
            ))),
        }
    }
}

/// A PEM syntax error without the bytes `pem::Error`'s `Display` would quote (the line that
/// failed may be part of a key).
fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64".into(),
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => "no PEM block found".into(),
        _ => "not a valid PEM file".into(),
    }
}

/// Reads one PEM file; `secret` (the key) also refuses a file others may read, by the policy of
/// `${file:…}` secrets ([`crate::config::secret_file_mode_problem`]).
fn read_pem(path: &Path, key_path: &str, secret: bool) -> Result<Vec<u8>, Problem> {
    let problem = |message: String| Problem {
        key_path: key_path.into(),
        message,
    };
    let cannot = |e: std::io::Error| problem(format!("cannot read {}: {e}", path.display()));
    let f = std::fs::File::open(path).map_err(cannot)?;
    let meta = f.metadata().map_err(cannot)?;
    if meta.is_dir() {
        return Err(problem(format!("{} is a directory", path.display())));
    }
    if secret {
        if let Some(p) = crate::config::secret_file_mode_problem(path, &meta) {
            return Err(problem(p));
        }
    }
    let mut bytes = Vec::new();
    f.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        bytes.iter_mut().for_each(|b| *b = 0);
        return Err(problem(format!(
            "{} is larger than {} KiB: not a PEM certificate or key",
            path.display(),
            MAX_PEM_BYTES / 1024
        )));
    }
    Ok(bytes)
}

/// What `config check` and start-up ask: do the files exist, parse, and does the key match the
/// certificate. Every problem names `tls.cert` or `tls.key` and the file, never the key.
pub fn check(tls: &TlsConfig) -> Result<(), Vec<Problem>> {
    let files = Files::read(tls)?;
    files
        .parse(tls, &provider())
        .map(|_| ())
        .map_err(|p| vec![p])
}

/// The outcome of one [`CertStore::reload`].
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The files hold what was last seen.
    Unchanged,
    /// New handshakes now get the new pair.
    Replaced,
    /// The new files do not load; the pair served before is still served.
    Refused(Vec<Problem>),
}

/// The pair served to new handshakes, and where it comes from.
pub struct CertStore {
    tls: TlsConfig,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The fingerprint of the files last looked at, loaded or refused: a refused pair is
    /// reported once, not on every poll.
    seen: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.tls.cert)
            .field("key", &self.tls.key)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the pair; a start with files that do not load is refused with the problems.
    pub fn open(tls: &TlsConfig) -> Result<Arc<CertStore>, Vec<Problem>> {
        let provider = provider();
        let files = Files::read(tls)?;
        let key = files.parse(tls, &provider).map_err(|p| vec![p])?;
        Ok(Arc::new(CertStore {
            tls: tls.clone(),
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(files.fingerprint()),
        }))
    }

    /// The certificate chain served now (its first entry is the leaf).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().clone()
    }

    /// Re-reads the files; swaps in the new pair if they changed (or `force`, for SIGHUP) and
    /// load. Blocking file I/O: call it off the async workers.
    pub fn reload(&self, force: bool) -> Reloaded {
        let outcome = self.try_reload(force);
        match &outcome {
            Reloaded::Unchanged => {}
            Reloaded::Replaced => tracing::info!(
                cert = %self.tls.cert.display(),
                "TLS certificate reloaded; new connections get it, open ones keep theirs"
            ),
            Reloaded::Refused(problems) => {
                let why = problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(
                    problems = %why,
                    "the new TLS certificate or key was refused; still serving the previous pair"
                );
            }
        }
        outcome
    }

    fn try_reload(&self, force: bool) -> Reloaded {
        let files = match Files::read(&self.tls) {
            Ok(f) => f,
            Err(problems) => {
                // An unreadable file (mid-rotation, or removed) is reported once per change of
                // what is there: remember the failure itself as what was seen.
                let mut h = Sha256::new();
                for p in &problems {
                    h.update(p.to_string().as_bytes());
                }
                let fp: [u8; 32] = h.finalize().into();
                let mut seen = self.seen.lock();
                if *seen == fp && !force {
                    return Reloaded::Unchanged;
                }
                *seen = fp;
                return Reloaded::Refused(problems);
            }
        };
        let fp = files.fingerprint();
        {
            let mut seen = self.seen.lock();
            if *seen == fp && !force {
                return Reloaded::Unchanged;
            }
            *seen = fp;
        }
        match files.parse(&self.tls, &self.provider) {
            Ok(key) => {
                *self.current.write() = Arc::new(key);
                Reloaded::Replaced
            }
            Err(p) => Reloaded::Refused(vec![p]),
        }
    }

    /// The rustls config of a listener serving this store's pair.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, String> {
        let config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(config)
    }

    /// Re-reads the files every `every`, and at once on each reload trigger, until aborted.
    pub fn spawn_watch(
        self: Arc<Self>,
        every: Duration,
        mut triggers: tokio::sync::broadcast::Receiver<Trigger>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut signals_open = true;
            loop {
                let force = tokio::select! {
                    _ = tick.tick() => false,
                    t = reload::next(&mut triggers), if signals_open => match t {
                        Some(_) => true,
                        None => {
                            signals_open = false;
                            continue;
                        }
                    },
                };
                let store = self.clone();
                if force {
                    tracing::info!(cert = %self.tls.cert.display(), "reloading the TLS certificate and key");
                }
                let _ = tokio::task::spawn_blocking(move || store.reload(force)).await;
            }
        })
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
