//! TEMPORARY STUB (replaced by h/config).
use crate::config::{Secret, TenantId};
#[derive(Debug, thiserror::Error)]
#[error("invalid token")]
pub struct AuthError;
pub struct TenantAuth {
    tokens: Vec<String>,
}
impl TenantAuth {
    pub fn new(_t: &TenantId, tokens: &[Secret], _j: Option<&Secret>) -> TenantAuth {
        TenantAuth {
            tokens: tokens.iter().map(|t| t.expose().to_string()).collect(),
        }
    }
    pub fn verify(&self, bearer: &str) -> Result<(), AuthError> {
        if self.tokens.iter().any(|t| t == bearer) {
            Ok(())
        } else {
            Err(AuthError)
        }
    }
}
pub fn issue_token(
    _t: &TenantId,
    _s: &Secret,
    _ttl: std::time::Duration,
) -> Result<String, AuthError> {
    Err(AuthError)
}
pub fn parse_ttl(_s: &str) -> Result<std::time::Duration, String> {
    Err("stub".into())
}
