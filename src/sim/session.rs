//! Issued tokens/sessions with an optional lifetime (`--token-ttl-s`). Expiry is vendor logic —
//! each vendor decides how an expired token is answered — this only keeps the book.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    Unknown,
    Expired,
}

pub struct Sessions<T> {
    ttl: Option<Duration>,
    map: RwLock<HashMap<String, (T, Instant)>>,
}

impl<T: Clone> Sessions<T> {
    pub fn new(ttl: Option<Duration>) -> Self {
        Sessions {
            ttl,
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    pub fn issue(&self, token: String, subject: T) {
        self.map.write().insert(token, (subject, Instant::now()));
    }

    /// The subject of a live token.
    pub fn check(&self, token: &str) -> Result<T, SessionError> {
        let map = self.map.read();
        let (subject, issued) = map.get(token).ok_or(SessionError::Unknown)?;
        if self.ttl.is_some_and(|ttl| issued.elapsed() >= ttl) {
            return Err(SessionError::Expired);
        }
        Ok(subject.clone())
    }

    pub fn revoke(&self, token: &str) -> bool {
        self.map.write().remove(token).is_some()
    }

    /// Revokes every token whose subject matches (logout_all, deactivation, password change).
    pub fn revoke_where(&self, pred: impl Fn(&T) -> bool) {
        self.map.write().retain(|_, (s, _)| !pred(s));
    }
}
