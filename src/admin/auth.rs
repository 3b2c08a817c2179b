//! Who may use the admin listener (CONTRACT §5): holders of an `[admin] tokens` entry, as a
//! bearer (the CLI, scripts) or through a console session that one of them opened.
//!
//! - Tokens are kept only as SHA-256 hashes and compared in constant time; a tenant's token is
//!   never an admin token (the config reader refuses one configured as both).
//! - A console session is a random 256-bit id in an `HttpOnly; SameSite=Strict` cookie scoped
//!   to `/admin`; the server keeps only its hash. It ends after an hour idle or eight hours in
//!   all, and at logout.
//! - Every state-changing request of a session carries the session's CSRF token (a hidden form
//!   field or `X-CSRF-Token`): SameSite already keeps other sites' forms out, the token also
//!   covers same-site pages and old browsers (OWASP CSRF cheat sheet, "synchronizer token").
//!   A bearer request needs none: a bearer is never sent by a browser on its own.

use crate::config::Secret;
use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "scim_bridge_admin";
const IDLE: Duration = Duration::from_secs(3600);
const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most (a flood of logins cannot grow the map without bound).
const MAX_SESSIONS: usize = 1024;

type Hash = [u8; 32];

fn hash(s: &str) -> Hash {
    Sha256::digest(s.as_bytes()).into()
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The admin credentials of a running bridge.
pub struct AdminAuth {
    /// Replaced by a config reload ([`AdminAuth::set_tokens`]).
    tokens: parking_lot::RwLock<Vec<Hash>>,
    metrics: parking_lot::RwLock<Option<Hash>>,
    sessions: Mutex<HashMap<Hash, Session>>,
}

struct Session {
    csrf: String,
    created: Instant,
    seen: Instant,
}

/// Who a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An admin bearer token.
    Bearer,
    /// A console session, with its CSRF token.
    Session { csrf: String },
}

impl AdminAuth {
    pub fn new(tokens: &[Secret], metrics_token: Option<&Secret>) -> AdminAuth {
        AdminAuth {
            tokens: parking_lot::RwLock::new(tokens.iter().map(|t| hash(t.expose())).collect()),
            metrics: parking_lot::RwLock::new(metrics_token.map(|t| hash(t.expose()))),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// A config reload's admin tokens and `metrics_token`. When the admin tokens change, every
    /// console session ends: a token is removed because it leaked or its holder left, and the
    /// sessions it opened must not outlive it. Whether the admin tokens changed.
    pub fn set_tokens(&self, tokens: &[Secret], metrics_token: Option<&Secret>) -> bool {
        let mut new: Vec<Hash> = tokens.iter().map(|t| hash(t.expose())).collect();
        new.sort_unstable();
        *self.metrics.write() = metrics_token.map(|t| hash(t.expose()));
        let mut current = self.tokens.write();
        let mut old = current.clone();
        old.sort_unstable();
        if old == new {
            return false;
        }
        *current = new;
        drop(current);
        self.sessions.lock().clear();
        true
    }

    /// Whether any admin token is configured (without one, the admin API answers 401 to all).
    pub fn has_tokens(&self) -> bool {
        !self.tokens.read().is_empty()
    }

    /// Whether `token` is an admin token (constant time over every configured hash).
    pub fn is_admin_token(&self, token: &str) -> bool {
        let h = hash(token);
        let mut ok = 0u8;
        for t in self.tokens.read().iter() {
            ok |= t.ct_eq(&h).unwrap_u8();
        }
        ok == 1
    }

    /// Whether `/metrics` answers this bearer: any caller without `metrics_token`; with it,
    /// that token or an admin token.
    pub fn metrics_allowed(&self, bearer: Option<&str>) -> bool {
        let Some(want) = *self.metrics.read() else {
            return true;
        };
        bearer.is_some_and(|b| bool::from(want.ct_eq(&hash(b))) || self.is_admin_token(b))
    }

    /// Opens a console session; the cookie value and the session's CSRF token.
    pub fn open_session(&self) -> (String, String) {
        let id = random_hex();
        let csrf = random_hex();
        let now = Instant::now();
        let mut s = self.sessions.lock();
        s.retain(|_, v| live(v, now));
        if s.len() >= MAX_SESSIONS {
            // The oldest goes: a new login is worth more than a forgotten tab.
            if let Some(oldest) = s.iter().min_by_key(|(_, v)| v.seen).map(|(k, _)| *k) {
                s.remove(&oldest);
            }
        }
        s.insert(
            hash(&id),
            Session {
                csrf: csrf.clone(),
                created: now,
                seen: now,
            },
        );
        (id, csrf)
    }

    /// The session of a cookie value, if live (its idle clock restarts).
    pub fn session(&self, cookie: &str) -> Option<Principal> {
        let now = Instant::now();
        let mut s = self.sessions.lock();
        let key = hash(cookie);
        match s.get_mut(&key) {
            Some(v) if live(v, now) => {
                v.seen = now;
                Some(Principal::Session {
                    csrf: v.csrf.clone(),
                })
            }
            Some(_) => {
                s.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn close_session(&self, cookie: &str) {
        self.sessions.lock().remove(&hash(cookie));
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < IDLE && now.duration_since(s.created) < LIFETIME
}

/// Whether `given` is the session's CSRF token (constant time).
pub fn csrf_matches(want: &str, given: Option<&str>) -> bool {
    given.is_some_and(|g| g.len() == want.len() && bool::from(g.as_bytes().ct_eq(want.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_sessions_and_csrf() {
        let a = AdminAuth::new(
            &[Secret::new("a".repeat(40))],
            Some(&Secret::new("m".repeat(40))),
        );
        assert!(a.is_admin_token(&"a".repeat(40)));
        assert!(!a.is_admin_token(&"a".repeat(39)));
        assert!(a.metrics_allowed(Some(&"m".repeat(40))));
        assert!(a.metrics_allowed(Some(&"a".repeat(40))));
        assert!(!a.metrics_allowed(None));
        let (id, csrf) = a.open_session();
        assert_eq!(
            a.session(&id),
            Some(Principal::Session { csrf: csrf.clone() })
        );
        assert!(csrf_matches(&csrf, Some(&csrf)));
        assert!(!csrf_matches(&csrf, Some("x")));
        assert!(!csrf_matches(&csrf, None));
        a.close_session(&id);
        assert_eq!(a.session(&id), None);
        assert!(AdminAuth::new(&[], None).metrics_allowed(None));
    }
}
