//! The config and auth layers through the public API only: the shipped example config, and
//! tokens minted for one configured tenant tried against the others.

use std::time::Duration;

use scim_bridge::auth::{issue_token, parse_ttl, AuthError, TenantAuth};
use scim_bridge::config::{Config, Secret};

const EXAMPLE: &str = include_str!("../deploy/scim-bridge.example.toml");

/// Every JWT tenant gets the same signing key on purpose: only the audience may separate them.
fn fake_env(name: &str) -> Option<String> {
    if name.ends_with("_JWT_SECRET") {
        Some("one-shared-signing-key-for-all".into())
    } else {
        Some(format!("token-for-{name}-0123456789abcdef0123456789"))
    }
}

#[test]
fn example_config_loads_from_a_file() {
    // `load` uses the process environment, so the file here has no `${...}` references.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scim-bridge.toml");
    let mut literal = String::new();
    let mut rest = EXAMPLE;
    while let Some(start) = rest.find("${") {
        literal.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('}') {
            literal.push_str(&format!(
                "literal-{}-value-0123456789abcdef0123456789",
                &after[..name_len]
            ));
            rest = &after[name_len + 1..];
        } else {
            literal.push_str("${");
            rest = after;
        }
    }
    literal.push_str(rest);
    std::fs::write(&path, literal).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.tenants.len(), 6);
}

#[test]
fn a_token_issued_for_one_tenant_opens_only_that_tenant() {
    let config = Config::from_toml_str(EXAMPLE, &fake_env).unwrap_or_else(|e| panic!("{e}"));
    let issuer = config.tenant("acme-sisense").unwrap();
    let key = issuer.jwt_secret.as_ref().unwrap();
    let jwt = issue_token(&issuer.id, key, parse_ttl("90d").unwrap()).unwrap();

    for tenant in &config.tenants {
        let auth = TenantAuth::for_tenant(tenant);
        let result = auth.verify(&jwt);
        if tenant.id == issuer.id {
            assert_eq!(result, Ok(()));
        } else if tenant.jwt_secret.is_some() {
            assert_eq!(result, Err(AuthError::WrongTenant), "{}", tenant.id);
        } else {
            assert_eq!(result, Err(AuthError::InvalidToken), "{}", tenant.id);
        }
        // Static tokens too: each one opens its own tenant and no other.
        for other in &config.tenants {
            for token in &other.tokens {
                assert_eq!(auth.verify(token.expose()).is_ok(), other.id == tenant.id);
            }
        }
    }
}

#[test]
fn embedded_default_accepts_its_token() {
    let config = Config::embedded_default(
        None,
        "./data".into(),
        Secret::new("first-start-token-0123456789abcdef0123"),
    );
    let auth = TenantAuth::for_tenant(&config.tenants[0]);
    assert_eq!(
        auth.verify("first-start-token-0123456789abcdef0123"),
        Ok(())
    );
    assert!(auth.verify("something-else").is_err());
    assert!(issue_token(&config.tenants[0].id, &Secret::new("k"), Duration::ZERO).is_err());
}
