//! Bearer tokens for one tenant: static tokens (kept only as SHA-256 hashes, compared in constant
//! time) and HS256 JWTs minted by `scim-bridge token issue` (audience = tenant id, so a token of
//! tenant A never opens tenant B).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::config::{Secret, TenantConfig, TenantId};

/// Clock skew tolerated on `exp` (and `nbf`, when present).
pub const JWT_LEEWAY_SECS: u64 = 30;
/// `sub` of every token `issue_token` mints.
pub const JWT_SUBJECT: &str = "scim-bridge";

/// Why a bearer token was refused. `Display` is safe to log or return in a 401 body: it never
/// contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token")]
    InvalidToken,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token is not valid for this tenant")]
    WrongTenant,
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(String),
    /// `issue_token` could not mint a token (e.g. a zero TTL).
    #[error("cannot issue token: {0}")]
    Issue(String),
}

/// The bearer-token verifier of one tenant.
#[derive(Clone)]
pub struct TenantAuth {
    tenant: TenantId,
    token_hashes: Vec<[u8; 32]>,
    jwt: Option<(DecodingKey, Validation)>,
}

impl fmt::Debug for TenantAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantAuth")
            .field("tenant", &self.tenant)
            .field("static_tokens", &self.token_hashes.len())
            .field("jwt", &self.jwt.is_some())
            .finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    aud: String,
    sub: String,
    iat: u64,
    exp: u64,
    jti: String,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TenantAuth {
    pub fn new(tenant: &TenantId, tokens: &[Secret], jwt_secret: Option<&Secret>) -> TenantAuth {
        let jwt = jwt_secret.map(|secret| {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.set_audience(&[tenant.as_str()]);
            validation.set_required_spec_claims(&["exp", "aud"]);
            validation.leeway = JWT_LEEWAY_SECS;
            validation.validate_exp = true;
            validation.validate_nbf = true;
            (
                DecodingKey::from_secret(secret.expose().as_bytes()),
                validation,
            )
        });
        TenantAuth {
            tenant: tenant.clone(),
            token_hashes: tokens
                .iter()
                .map(|t| sha256(t.expose().as_bytes()))
                .collect(),
            jwt,
        }
    }

    /// The verifier for a configured tenant (its `tokens` and `jwt_secret`).
    pub fn for_tenant(tenant: &TenantConfig) -> TenantAuth {
        TenantAuth::new(&tenant.id, &tenant.tokens, tenant.jwt_secret.as_ref())
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Static tokens first: the bearer's SHA-256 is compared in constant time against every
    /// stored hash (all of them, so the position of a match does not show in the timing). Else,
    /// if the bearer looks like a JWT and the tenant has a `jwt_secret`: HS256 with
    /// `aud` == tenant id and `exp` required, 30 s leeway.
    pub fn verify(&self, bearer: &str) -> Result<(), AuthError> {
        let bearer = bearer.trim();
        if bearer.is_empty() {
            return Err(AuthError::InvalidToken);
        }
        let hash = sha256(bearer.as_bytes());
        let hit = self
            .token_hashes
            .iter()
            .fold(Choice::from(0), |acc, stored| acc | stored.ct_eq(&hash));
        if bool::from(hit) {
            return Ok(());
        }
        match &self.jwt {
            Some((key, validation)) if looks_like_jwt(bearer) => {
                jsonwebtoken::decode::<serde_json::Value>(bearer, key, validation)
                    .map(|_| ())
                    .map_err(|e| match e.into_kind() {
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::InvalidAudience => AuthError::WrongTenant,
                        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
                        _ => AuthError::InvalidToken,
                    })
            }
            _ => Err(AuthError::InvalidToken),
        }
    }
}

/// Three non-empty base64url segments. Static tokens may contain dots too, which is why they are
/// checked first and this is only a gate before the (costlier) JWT path.
fn looks_like_jwt(s: &str) -> bool {
    let mut parts = 0;
    for part in s.split('.') {
        parts += 1;
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

/// Mints a JWT (HS256) for `token issue`: aud = tenant id, sub = "scim-bridge", iat,
/// exp = now + ttl, jti = uuid v4.
pub fn issue_token(
    tenant: &TenantId,
    jwt_secret: &Secret,
    ttl: Duration,
) -> Result<String, AuthError> {
    if ttl.as_secs() == 0 {
        return Err(AuthError::Issue(
            "the TTL must be at least one second".into(),
        ));
    }
    let iat = now_secs();
    let exp = iat
        .checked_add(ttl.as_secs())
        .ok_or_else(|| AuthError::Issue("the TTL is too large".into()))?;
    let claims = Claims {
        aud: tenant.as_str().to_owned(),
        sub: JWT_SUBJECT.to_owned(),
        iat,
        exp,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(jwt_secret.expose().as_bytes()),
    )
    .map_err(|e| AuthError::Issue(e.to_string()))
}

/// Parses `--ttl` values such as "365d", "12h", "30m", "3600s", "90" (seconds); also "1w" and
/// compounds such as "1d12h".
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let input = s.trim();
    if input.is_empty() {
        return Err("empty TTL; expected e.g. 365d, 12h, 30m, 3600s or 90 (seconds)".into());
    }
    let invalid =
        || format!("invalid TTL `{input}`; expected e.g. 365d, 12h, 30m, 3600s or 90 (seconds)");
    if input.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = input.parse().map_err(|_| invalid())?;
        return positive(secs, input);
    }
    let mut total: u64 = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits_end == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits_end].parse().map_err(|_| invalid())?;
        let unit = rest[digits_end..].chars().next().ok_or_else(invalid)?;
        let factor = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(invalid()),
        };
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("TTL `{input}` is too large"))?;
        rest = &rest[digits_end + unit.len_utf8()..];
    }
    positive(total, input)
}

fn positive(secs: u64, input: &str) -> Result<Duration, String> {
    if secs == 0 {
        Err(format!("TTL `{input}` must be longer than zero"))
    } else {
        Ok(Duration::from_secs(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    const KEY: &str = "0123456789abcdef-signing-key";

    fn sign(claims: serde_json::Value, key: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    }

    fn jwt_only(tenant: &str) -> TenantAuth {
        TenantAuth::new(&tid(tenant), &[], Some(&Secret::new(KEY)))
    }

    #[test]
    fn static_token_hit_and_miss() {
        let auth = TenantAuth::new(
            &tid("acme"),
            &[Secret::new("first-token"), Secret::new("second-token")],
            None,
        );
        assert_eq!(auth.verify("first-token"), Ok(()));
        assert_eq!(auth.verify("second-token"), Ok(()));
        assert_eq!(auth.verify("third-token"), Err(AuthError::InvalidToken));
        assert_eq!(auth.verify(""), Err(AuthError::InvalidToken));
        assert_eq!(auth.verify("first-token-x"), Err(AuthError::InvalidToken));
    }

    #[test]
    fn static_token_of_one_tenant_fails_on_another() {
        let a = TenantAuth::new(&tid("a"), &[Secret::new("token-a")], None);
        let b = TenantAuth::new(&tid("b"), &[Secret::new("token-b")], None);
        assert!(a.verify("token-a").is_ok());
        assert_eq!(b.verify("token-a"), Err(AuthError::InvalidToken));
    }

    #[test]
    fn jwt_round_trip() {
        let secret = Secret::new(KEY);
        let token = issue_token(&tid("acme"), &secret, Duration::from_secs(3600)).unwrap();
        let auth = TenantAuth::new(&tid("acme"), &[], Some(&secret));
        assert_eq!(auth.verify(&token), Ok(()));

        let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&token)
            .unwrap()
            .claims;
        assert_eq!(claims["aud"], "acme");
        assert_eq!(claims["sub"], JWT_SUBJECT);
        let iat = claims["iat"].as_u64().unwrap();
        assert_eq!(claims["exp"].as_u64().unwrap(), iat + 3600);
        assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn jwt_of_one_tenant_fails_on_another() {
        let secret = Secret::new(KEY);
        let token = issue_token(&tid("tenant-a"), &secret, Duration::from_secs(60)).unwrap();
        // Same signing key on purpose: only the audience tells the tenants apart.
        assert_eq!(
            jwt_only("tenant-b").verify(&token),
            Err(AuthError::WrongTenant)
        );
    }

    #[test]
    fn expired_jwt_is_refused_but_leeway_applies() {
        let now = now_secs();
        let expired = sign(
            serde_json::json!({"aud": "acme", "exp": now - 120, "iat": now - 3600}),
            KEY,
        );
        assert_eq!(jwt_only("acme").verify(&expired), Err(AuthError::Expired));
        let within_leeway = sign(serde_json::json!({"aud": "acme", "exp": now - 5}), KEY);
        assert_eq!(jwt_only("acme").verify(&within_leeway), Ok(()));
    }

    #[test]
    fn jwt_without_exp_is_refused() {
        let token = sign(serde_json::json!({"aud": "acme", "sub": "x"}), KEY);
        assert_eq!(
            jwt_only("acme").verify(&token),
            Err(AuthError::MissingClaim("exp".into()))
        );
    }

    #[test]
    fn jwt_without_aud_is_refused() {
        let token = sign(serde_json::json!({"exp": now_secs() + 60}), KEY);
        assert!(jwt_only("acme").verify(&token).is_err());
    }

    #[test]
    fn tampered_jwt_is_refused() {
        let secret = Secret::new(KEY);
        let token = issue_token(&tid("acme"), &secret, Duration::from_secs(60)).unwrap();
        let auth = jwt_only("acme");

        // Flip one character of the signature.
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(auth.verify(&tampered), Err(AuthError::InvalidToken));

        // Swap the payload for one naming another audience, keeping the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let other = issue_token(&tid("other"), &secret, Duration::from_secs(60)).unwrap();
        let other_payload = other.split('.').nth(1).unwrap();
        let spliced = format!("{}.{}.{}", parts[0], other_payload, parts[2]);
        assert_eq!(
            jwt_only("other").verify(&spliced),
            Err(AuthError::InvalidToken)
        );

        // Signed with a different key.
        let foreign = sign(
            serde_json::json!({"aud": "acme", "exp": now_secs() + 60}),
            "another-key-of-16-or-more",
        );
        assert_eq!(auth.verify(&foreign), Err(AuthError::InvalidToken));
    }

    #[test]
    fn jwt_with_another_algorithm_is_refused() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"aud": "acme", "exp": now_secs() + 60}),
            &EncodingKey::from_secret(KEY.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            jwt_only("acme").verify(&token),
            Err(AuthError::InvalidToken)
        );
    }

    #[test]
    fn jwt_is_refused_without_jwt_secret() {
        let token = issue_token(&tid("acme"), &Secret::new(KEY), Duration::from_secs(60)).unwrap();
        let auth = TenantAuth::new(&tid("acme"), &[Secret::new("static-token")], None);
        assert_eq!(auth.verify(&token), Err(AuthError::InvalidToken));
    }

    #[test]
    fn static_tokens_and_jwt_together() {
        let secret = Secret::new(KEY);
        let auth = TenantAuth::new(&tid("acme"), &[Secret::new("static-token")], Some(&secret));
        assert_eq!(auth.verify("static-token"), Ok(()));
        let token = issue_token(&tid("acme"), &secret, Duration::from_secs(60)).unwrap();
        assert_eq!(auth.verify(&token), Ok(()));
        assert_eq!(auth.verify("a.b.c"), Err(AuthError::InvalidToken));
    }

    #[test]
    fn errors_and_debug_never_show_the_token() {
        let token = issue_token(&tid("acme"), &Secret::new(KEY), Duration::from_secs(60)).unwrap();
        let err = jwt_only("zzz").verify(&token).unwrap_err();
        assert!(!err.to_string().contains(&token));
        let auth = TenantAuth::new(
            &tid("acme"),
            &[Secret::new("static-token")],
            Some(&Secret::new(KEY)),
        );
        let dbg = format!("{auth:?}");
        assert!(!dbg.contains("static-token") && !dbg.contains(KEY), "{dbg}");
    }

    #[test]
    fn issue_refuses_zero_ttl() {
        assert!(matches!(
            issue_token(&tid("acme"), &Secret::new(KEY), Duration::ZERO),
            Err(AuthError::Issue(_))
        ));
    }

    #[test]
    fn parse_ttl_accepts_units_and_bare_seconds() {
        assert_eq!(parse_ttl("365d"), Ok(Duration::from_secs(365 * 86_400)));
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_ttl("3600s"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl(" 2w "), Ok(Duration::from_secs(2 * 604_800)));
        assert_eq!(parse_ttl("1d12h"), Ok(Duration::from_secs(86_400 + 43_200)));
    }

    #[test]
    fn parse_ttl_rejects_nonsense() {
        for bad in [
            "",
            "0",
            "0d",
            "d",
            "12x",
            "-5",
            "1.5h",
            "h12",
            "12 h",
            "99999999999999999999",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
