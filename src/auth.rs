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

use crate::config::{Config, Secret, TenantConfig, TenantId, DEFAULT_JWT_MAX_LIFETIME};
use crate::store::revoked::RevokedTokens;
use crate::store::{Store, StoreError};

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
    /// `exp − iat` is longer than `jwt_max_lifetime`.
    #[error("token lifetime (exp - iat) exceeds the bridge's maximum of {}", format_duration(*.0))]
    LifetimeTooLong(Duration),
    /// The `jti` is on the tenant's deny list (`scim-bridge token revoke`).
    #[error("token has been revoked")]
    Revoked,
    /// The deny list could not be read; the token is refused rather than let through.
    #[error("the token's revocation status cannot be checked")]
    RevocationUnavailable,
    /// A `crit` header parameter (RFC 7515 §4.1.11): the bridge understands no extension.
    #[error("token names critical header parameters the bridge does not understand")]
    UnsupportedCritical,
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
    /// The longest `exp − iat` accepted (`jwt_max_lifetime`).
    max_lifetime: Duration,
    /// The tenant's deny list of `jti`s, read per request; `None`: nothing is revoked.
    revoked: Option<RevokedTokens>,
}

impl fmt::Debug for TenantAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantAuth")
            .field("tenant", &self.tenant)
            .field("static_tokens", &self.token_hashes.len())
            .field("jwt", &self.jwt.is_some())
            .field("max_lifetime", &self.max_lifetime)
            .field("revocation_list", &self.revoked.is_some())
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
            validation.set_required_spec_claims(&["exp", "aud", "iat"]);
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
            max_lifetime: DEFAULT_JWT_MAX_LIFETIME,
            revoked: None,
        }
    }

    /// The verifier for a configured tenant (its `tokens` and `jwt_secret`), with the default
    /// maximum JWT lifetime and no deny list.
    pub fn for_tenant(tenant: &TenantConfig) -> TenantAuth {
        TenantAuth::new(&tenant.id, &tenant.tokens, tenant.jwt_secret.as_ref())
    }

    /// The verifier `serve` uses: the tenant's tokens and key, the config's `jwt_max_lifetime`,
    /// and the tenant's deny list in `store` (read on every request, so a revocation written to
    /// the store counts at once).
    pub fn for_config(
        config: &Config,
        tenant: &TenantConfig,
        store: &Store,
    ) -> Result<TenantAuth, StoreError> {
        Ok(TenantAuth::for_tenant(tenant)
            .with_max_lifetime(config.jwt_max_lifetime)
            .with_revocations(RevokedTokens::open(store, tenant.id.as_str())?))
    }

    /// Refuses JWTs whose `exp − iat` is longer than `max` (default 90 days).
    pub fn with_max_lifetime(mut self, max: Duration) -> TenantAuth {
        self.max_lifetime = max;
        self
    }

    /// Refuses JWTs whose `jti` is on `list`.
    pub fn with_revocations(mut self, list: RevokedTokens) -> TenantAuth {
        self.revoked = Some(list);
        self
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Whether the tenant has a `jwt_secret`, that is accepts JWTs (which `token revoke`
    /// needs: a tenant without one has no JWT to revoke).
    pub fn accepts_jwt(&self) -> bool {
        self.jwt.is_some()
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
                let data = jsonwebtoken::decode::<serde_json::Value>(bearer, key, validation)
                    .map_err(|e| match e.into_kind() {
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::InvalidAudience => AuthError::WrongTenant,
                        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
                        _ => AuthError::InvalidToken,
                    })?;
                // RFC 7515 §4.1.11: a recipient that does not understand every extension named
                // in `crit` must refuse the token. The bridge understands none.
                if data.header.crit.is_some() {
                    return Err(AuthError::UnsupportedCritical);
                }
                self.check_claims(&data.claims)
            }
            _ => Err(AuthError::InvalidToken),
        }
    }

    /// What the library does not check: `iat` (required, not in the future), `exp − iat` within
    /// the maximum lifetime, and a `jti` (required) that is not revoked.
    fn check_claims(&self, claims: &serde_json::Value) -> Result<(), AuthError> {
        let numeric = |name: &str| -> Result<u64, AuthError> {
            let v = claims
                .get(name)
                .ok_or_else(|| AuthError::MissingClaim(name.to_string()))?;
            match v.as_f64() {
                Some(n) if n.is_finite() && n >= 0.0 => Ok(n.floor() as u64),
                _ => Err(AuthError::InvalidToken),
            }
        };
        let iat = numeric("iat")?;
        let exp = numeric("exp")?;
        if iat > now_secs().saturating_add(JWT_LEEWAY_SECS) {
            return Err(AuthError::NotYetValid);
        }
        if exp.saturating_sub(iat) > self.max_lifetime.as_secs() {
            return Err(AuthError::LifetimeTooLong(self.max_lifetime));
        }
        let jti = match claims.get("jti").and_then(|v| v.as_str()) {
            Some(j) if !j.is_empty() => j,
            _ => return Err(AuthError::MissingClaim("jti".into())),
        };
        // Only a jti that `token revoke` can name is accepted: any other could never be revoked
        // short of rotating the tenant's secret.
        if !crate::store::revoked::valid_jti(jti) {
            return Err(AuthError::InvalidToken);
        }
        if let Some(list) = &self.revoked {
            match list.is_revoked(jti) {
                Ok(false) => {}
                Ok(true) => return Err(AuthError::Revoked),
                Err(e) => {
                    tracing::error!(tenant = %self.tenant, error = %e, "cannot read the revoked-token list");
                    return Err(AuthError::RevocationUnavailable);
                }
            }
        }
        Ok(())
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
    issue_token_with_jti(tenant, jwt_secret, ttl, DEFAULT_JWT_MAX_LIFETIME).map(|(t, _)| t)
}

/// [`issue_token`] with the config's `jwt_max_lifetime`; also returns the token's `jti` (what
/// `scim-bridge token revoke --jti` takes).
pub fn issue_token_with_jti(
    tenant: &TenantId,
    jwt_secret: &Secret,
    ttl: Duration,
    max_lifetime: Duration,
) -> Result<(String, String), AuthError> {
    if ttl.as_secs() == 0 {
        return Err(AuthError::Issue(
            "the TTL must be at least one second".into(),
        ));
    }
    if ttl > max_lifetime {
        return Err(AuthError::Issue(format!(
            "the TTL ({}) is longer than jwt_max_lifetime ({}); issue a shorter token, or raise `jwt_max_lifetime` in the config",
            format_duration(ttl),
            format_duration(max_lifetime)
        )));
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
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(jwt_secret.expose().as_bytes()),
    )
    .map_err(|e| AuthError::Issue(e.to_string()))?;
    Ok((token, claims.jti))
}

/// A duration in the largest unit `parse_ttl` reads back exactly: `90d`, `36h`, `1d12h` → `36h`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, factor) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s >= factor && s % factor == 0 {
            return format!("{}{unit}", s / factor);
        }
    }
    format!("{s}s")
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
        let within_leeway = sign(
            serde_json::json!({"aud": "acme", "exp": now - 5, "iat": now - 60, "jti": "j"}),
            KEY,
        );
        assert_eq!(jwt_only("acme").verify(&within_leeway), Ok(()));
    }

    #[test]
    fn jwt_without_exp_is_refused() {
        let token = sign(
            serde_json::json!({"aud": "acme", "sub": "x", "iat": now_secs(), "jti": "j"}),
            KEY,
        );
        assert_eq!(
            jwt_only("acme").verify(&token),
            Err(AuthError::MissingClaim("exp".into()))
        );
    }

    #[test]
    fn jwt_without_aud_is_refused() {
        let token = sign(
            serde_json::json!({"exp": now_secs() + 60, "iat": now_secs(), "jti": "j"}),
            KEY,
        );
        assert!(jwt_only("acme").verify(&token).is_err());
    }

    fn claims(lifetime: u64) -> serde_json::Value {
        let now = now_secs();
        serde_json::json!({"aud": "acme", "iat": now, "exp": now + lifetime, "jti": "j-1"})
    }

    #[test]
    fn jwt_lifetime_is_bounded() {
        let day = 86_400;
        let auth = jwt_only("acme");
        assert_eq!(auth.verify(&sign(claims(90 * day), KEY)), Ok(()));
        assert_eq!(
            auth.verify(&sign(claims(90 * day + 1), KEY)),
            Err(AuthError::LifetimeTooLong(DEFAULT_JWT_MAX_LIFETIME))
        );
        let short = jwt_only("acme").with_max_lifetime(Duration::from_secs(3600));
        assert_eq!(short.verify(&sign(claims(3600), KEY)), Ok(()));
        assert!(matches!(
            short.verify(&sign(claims(3601), KEY)),
            Err(AuthError::LifetimeTooLong(_))
        ));
        // No iat, or no jti: a token the bridge did not mint, which it cannot bound or revoke.
        let mut c = claims(60);
        c.as_object_mut().unwrap().remove("iat");
        assert_eq!(
            auth.verify(&sign(c, KEY)),
            Err(AuthError::MissingClaim("iat".into()))
        );
        let mut c = claims(60);
        c.as_object_mut().unwrap().remove("jti");
        assert_eq!(
            auth.verify(&sign(c, KEY)),
            Err(AuthError::MissingClaim("jti".into()))
        );
        // iat in the future (beyond the leeway): not yet valid.
        let mut c = claims(60);
        c["iat"] = serde_json::json!(now_secs() + 3600);
        c["exp"] = serde_json::json!(now_secs() + 3700);
        assert_eq!(auth.verify(&sign(c, KEY)), Err(AuthError::NotYetValid));
    }

    #[test]
    fn issue_refuses_a_ttl_over_the_maximum() {
        let max = Duration::from_secs(7 * 86_400);
        let (token, jti) = issue_token_with_jti(&tid("acme"), &Secret::new(KEY), max, max).unwrap();
        let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&token)
            .unwrap()
            .claims;
        assert_eq!(claims["jti"], jti.as_str());
        let err = issue_token_with_jti(
            &tid("acme"),
            &Secret::new(KEY),
            max + Duration::from_secs(1),
            max,
        )
        .unwrap_err();
        assert!(err.to_string().contains("jwt_max_lifetime (7d)"), "{err}");
        assert!(issue_token(&tid("acme"), &Secret::new(KEY), parse_ttl("365d").unwrap()).is_err());
        assert_eq!(format_duration(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn crit_header_is_refused() {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp-policy".into()]);
        let mut c = claims(60);
        c["exp-policy"] = serde_json::json!(1);
        let token =
            jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(KEY.as_bytes())).unwrap();
        assert_eq!(
            jwt_only("acme").verify(&token),
            Err(AuthError::UnsupportedCritical)
        );
    }

    #[test]
    fn revoked_jti_is_refused_from_the_next_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let list = RevokedTokens::open(&store, "acme").unwrap();
        let auth = jwt_only("acme").with_revocations(list.clone());
        let (token, jti) = issue_token_with_jti(
            &tid("acme"),
            &Secret::new(KEY),
            Duration::from_secs(60),
            DEFAULT_JWT_MAX_LIFETIME,
        )
        .unwrap();
        assert_eq!(auth.verify(&token), Ok(()));
        list.revoke(&jti, "test", None).unwrap();
        assert_eq!(auth.verify(&token), Err(AuthError::Revoked));
        // Another tenant's list does not apply.
        let other = TenantAuth::new(&tid("acme"), &[], Some(&Secret::new(KEY)))
            .with_revocations(RevokedTokens::open(&store, "other").unwrap());
        assert_eq!(other.verify(&token), Ok(()));
    }

    #[test]
    fn a_jti_that_revoke_could_not_name_is_refused() {
        let auth = jwt_only("acme");
        let now = now_secs();
        for jti in ["has space", "é", &"x".repeat(300)] {
            let token = sign(
                serde_json::json!({"aud": "acme", "exp": now + 60, "iat": now, "jti": jti}),
                KEY,
            );
            assert_eq!(auth.verify(&token), Err(AuthError::InvalidToken), "{jti:?}");
        }
        let token = sign(
            serde_json::json!({"aud": "acme", "exp": now + 60, "iat": now, "jti": "ok-jti"}),
            KEY,
        );
        assert_eq!(auth.verify(&token), Ok(()));
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
