use super::*;
use std::collections::HashMap;

const EXAMPLE: &str = include_str!("../../deploy/scim-bridge.example.toml");

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, &no_env)
}

fn problems(text: &str) -> Vec<Problem> {
    parse(text).expect_err("config should be rejected").problems
}

fn problems_with_env(text: &str, env: &[(&str, &str)]) -> Vec<Problem> {
    Config::from_toml_str(text, &env_of(env))
        .expect_err("config should be rejected")
        .problems
}

/// True when some problem sits at `path` and its message contains `needle`.
fn has(problems: &[Problem], path: &str, needle: &str) -> bool {
    problems
        .iter()
        .any(|p| p.key_path == path && p.message.contains(needle))
}

#[track_caller]
fn assert_has(problems: &[Problem], path: &str, needle: &str) {
    assert!(
        has(problems, path, needle),
        "expected a problem at `{path}` containing {needle:?}; got:\n{}",
        ConfigError {
            problems: problems.to_vec()
        }
    );
}

fn local_tenant(id: &str, token: &str) -> String {
    format!(
        "[[tenants]]\nid = \"{id}\"\ntokens = [\"{token}\"]\n[tenants.vendor]\nkind = \"local\"\n"
    )
}

/// A tenant whose vendor table is `vendor` (the lines after `[tenants.vendor]`).
fn vendor_tenant(vendor: &str) -> String {
    format!("[[tenants]]\nid = \"t\"\ntokens = [\"tok-0123456789abcdef0123456789abcdef\"]\n[tenants.vendor]\n{vendor}\n")
}

// ---- Secret and TenantId -------------------------------------------------------------------

#[test]
fn secret_never_prints() {
    let s = Secret::new("hunter2-super-secret");
    assert_eq!(format!("{s}"), "<redacted>");
    assert_eq!(format!("{s:?}"), "<redacted>");
    assert_eq!(s.expose(), "hunter2-super-secret");
    let t = TenantConfig {
        id: TenantId::parse("x").unwrap(),
        tokens: vec![s.clone()],
        jwt_secret: Some(s.clone()),
        vendor: VendorConfig::Metabase {
            base_url: Url::parse("https://m.example/").unwrap(),
            auth: MetabaseAuth::ApiKey(s),
        },
        roles: RoleRules::default(),
        on_vendor_unavailable: Default::default(),
        attributes: Default::default(),
        dry_run: false,
        sweep: None,
    };
    assert!(!format!("{t:?}").contains("hunter2"));
}

#[test]
fn tenant_id_rules() {
    for ok in ["a", "acme-sisense", "0", "a-1-b", &"x".repeat(63)] {
        assert_eq!(TenantId::parse(ok).unwrap().as_str(), ok);
    }
    for bad in [
        "",
        "Acme",
        "acme_sisense",
        "acme sisense",
        "ä",
        "a/b",
        &"x".repeat(64),
    ] {
        assert!(TenantId::parse(bad).is_err(), "{bad:?} should be rejected");
    }
    assert_eq!("acme".parse::<TenantId>().unwrap().to_string(), "acme");
}

// ---- defaults and the embedded default ------------------------------------------------------

#[test]
fn minimal_config_takes_defaults() {
    let c = parse(&local_tenant(
        "default",
        "tok-0123456789abcdef0123456789abcdef",
    ))
    .unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.data_dir, PathBuf::from("./data"));
    assert_eq!(c.body_limit_bytes, 1024 * 1024);
    assert_eq!(c.tenants.len(), 1);
    let t = &c.tenants[0];
    assert_eq!(t.id.as_str(), "default");
    assert_eq!(t.tokens.len(), 1);
    assert_eq!(t.tokens[0].expose(), "tok-0123456789abcdef0123456789abcdef");
    assert!(t.jwt_secret.is_none());
    assert!(matches!(t.vendor, VendorConfig::Local));
    assert_eq!(t.roles, RoleRules::default());
}

#[test]
fn top_level_keys() {
    let text = format!(
        "listen = \"0.0.0.0:9000\"\ndata_dir = \"/var/lib/scim\"\nbody_limit = \"2 MiB\"\n{}",
        local_tenant("a", "tok-0123456789abcdef0123456789abcdef")
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/scim"));
    assert_eq!(c.body_limit_bytes, 2 * 1024 * 1024);

    let c = parse(&format!(
        "body_limit = 65536\n{}",
        local_tenant("a", "tok-0123456789abcdef0123456789abcdef")
    ))
    .unwrap();
    assert_eq!(c.body_limit_bytes, 65536);

    let p = problems(&format!(
        "listen = \"localhost\"\nbody_limit = \"lots\"\ndata_dir = 5\n{}",
        local_tenant("a", "tok-0123456789abcdef0123456789abcdef")
    ));
    assert_has(&p, "listen", "socket address");
    assert_has(&p, "body_limit", "not a size");
    assert_has(&p, "data_dir", "expected a string, found integer");
    let p = problems(&format!(
        "body_limit = 10\n{}",
        local_tenant("a", "tok-0123456789abcdef0123456789abcdef")
    ));
    assert_has(&p, "body_limit", "between 1 KiB and 1 GiB");
}

#[test]
fn embedded_default_has_one_local_tenant() {
    let c = Config::embedded_default(None, PathBuf::from("./data"), Secret::new("generated"));
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.data_dir, PathBuf::from("./data"));
    assert_eq!(c.body_limit_bytes, DEFAULT_BODY_LIMIT);
    assert_eq!(c.tenants.len(), 1);
    let t = c.tenant("default").unwrap();
    assert!(matches!(t.vendor, VendorConfig::Local));
    assert_eq!(t.tokens[0].expose(), "generated");
    assert!(t.jwt_secret.is_none());

    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let c = Config::embedded_default(Some(addr), PathBuf::from("/tmp/d"), Secret::new("x"));
    assert_eq!(c.listen, addr);
    assert!(!c.summary().contains("generated"));
}

// ---- ${ENV} ---------------------------------------------------------------------------------

#[test]
fn env_values_are_substituted() {
    let text = r#"
listen = "127.0.0.1:${PORT}"
[[tenants]]
id = "acme"
tokens = ["${TOKEN}", "prefix-${TOKEN}-suffix"]
jwt_secret = "${JWT}"
[tenants.vendor]
kind = "metabase"
base_url = "https://${HOST}/"
api_key = "${MB_KEY}"
"#;
    let env = env_of(&[
        ("PORT", "9999"),
        ("TOKEN", "abc-0123456789abcdef0123456789abcdef"),
        ("JWT", "0123456789abcdef0123"),
        ("HOST", "mb.example"),
        ("MB_KEY", "mb_key"),
    ]);
    let c = Config::from_toml_str(text, &env).unwrap();
    assert_eq!(c.listen.port(), 9999);
    let t = &c.tenants[0];
    assert_eq!(t.tokens[0].expose(), "abc-0123456789abcdef0123456789abcdef");
    assert_eq!(
        t.tokens[1].expose(),
        "prefix-abc-0123456789abcdef0123456789abcdef-suffix"
    );
    assert_eq!(
        t.jwt_secret.as_ref().unwrap().expose(),
        "0123456789abcdef0123"
    );
    match &t.vendor {
        VendorConfig::Metabase { base_url, auth } => {
            assert_eq!(base_url.as_str(), "https://mb.example/");
            assert!(matches!(auth, MetabaseAuth::ApiKey(k) if k.expose() == "mb_key"));
        }
        other => panic!("unexpected vendor {other:?}"),
    }
}

#[test]
fn missing_env_variable_names_variable_and_key_path() {
    let p = problems(&local_tenant("a", "${SCIM_TOKEN_A}"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key_path, "tenants[0].tokens[0]");
    assert!(p[0].message.contains("`SCIM_TOKEN_A`"), "{}", p[0].message);
    assert!(p[0].message.contains("not set"));
}

#[test]
fn every_missing_variable_is_reported() {
    let text = r#"
[[tenants]]
id = "a"
tokens = ["${ONE}"]
jwt_secret = "${TWO}"
[tenants.vendor]
kind = "sisense"
base_url = "https://s.example"
username = "admin"
password = "${THREE}"
"#;
    let p = problems(text);
    assert_has(&p, "tenants[0].tokens[0]", "`ONE`");
    assert_has(&p, "tenants[0].jwt_secret", "`TWO`");
    assert_has(&p, "tenants[0].vendor.password", "`THREE`");
}

#[test]
fn dollar_dollar_brace_escapes_a_literal() {
    let text = local_tenant("a", "$${NOT_A_VAR}-$plain-$$-${X}-0123456789");
    let c = Config::from_toml_str(&text, &env_of(&[("X", "x")])).unwrap();
    assert_eq!(
        c.tenants[0].tokens[0].expose(),
        "${NOT_A_VAR}-$plain-$$-x-0123456789"
    );
}

#[test]
fn env_values_are_not_expanded_again() {
    let c = Config::from_toml_str(
        &local_tenant("a", "${T}"),
        &env_of(&[("T", "${OTHER}-0123456789abcdef0123456789")]),
    )
    .unwrap();
    assert_eq!(
        c.tenants[0].tokens[0].expose(),
        "${OTHER}-0123456789abcdef0123456789"
    );
}

#[test]
fn malformed_references_are_problems() {
    let p = problems(&local_tenant("a", "${UNCLOSED"));
    assert_has(&p, "tenants[0].tokens[0]", "unterminated");
    let p = problems(&local_tenant("a", "${not a name}"));
    assert_has(&p, "tenants[0].tokens[0]", "environment variable name");
    let p = problems(&local_tenant("a", "${}"));
    assert_has(&p, "tenants[0].tokens[0]", "environment variable name");
}

// ---- structure: unknown keys, types, tenants ---------------------------------------------

#[test]
fn unknown_keys_are_reported_with_a_suggestion() {
    let text = r#"
listn = "127.0.0.1:1"
[[tenants]]
id = "a"
tokens = ["tok-0123456789abcdef0123456789abcdef"]
jwt_secert = "0123456789abcdef"
[tenants.vendor]
kind = "local"
[tenants.roles]
defualt = "Viewer"
rules = [{ grup = "x", role = "y" }]
"#;
    let p = problems(text);
    assert_has(&p, "listn", "did you mean `listen`");
    assert_has(&p, "tenants[0].jwt_secert", "did you mean `jwt_secret`");
    assert_has(&p, "tenants[0].roles.defualt", "did you mean `default`");
    assert_has(&p, "tenants[0].roles.rules[0].grup", "did you mean `group`");
    assert_eq!(p.len(), 4, "{p:?}");
}

#[test]
fn unknown_key_far_from_any_known_one_lists_the_choices() {
    let p = problems(&format!(
        "frobnicate = 1\n{}",
        local_tenant("a", "tok-0123456789abcdef0123456789abcdef")
    ));
    assert_has(&p, "frobnicate", "expected one of `listen`");
}

#[test]
fn odd_key_names_are_quoted_in_paths() {
    let p = problems(&format!(
        "\"my key\" = 1\n{}",
        local_tenant("a", "tok-0123456789abcdef0123456789abcdef")
    ));
    assert_has(&p, "\"my key\"", "unknown key");
}

#[test]
fn tenants_are_required_and_must_be_an_array_of_tables() {
    assert_has(
        &problems("listen = \"127.0.0.1:1\""),
        "tenants",
        "at least one",
    );
    assert_has(&problems("tenants = []"), "tenants", "at least one");
    assert_has(
        &problems("[tenants]\nid = \"a\""),
        "tenants",
        "write [[tenants]]",
    );
    assert_has(&problems("tenants = [1]"), "tenants[0]", "expected a table");
}

#[test]
fn duplicate_tenant_ids_are_reported() {
    let text = format!(
        "{}{}{}",
        local_tenant("acme", "t1-0123456789abcdef0123456789abcdef"),
        local_tenant("beta", "t2-0123456789abcdef0123456789abcdef"),
        local_tenant("acme", "t3-0123456789abcdef0123456789abcdef")
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_has(
        &p,
        "tenants[2].id",
        "duplicate tenant id `acme` (already used by tenants[0])",
    );
}

#[test]
fn bad_tenant_id_is_reported() {
    let p = problems(&local_tenant(
        "Acme_Corp",
        "tok-0123456789abcdef0123456789abcdef",
    ));
    assert_has(&p, "tenants[0].id", "a-z");
    let p = problems("[[tenants]]\ntokens = [\"tok-0123456789abcdef0123456789abcdef\"]\n[tenants.vendor]\nkind = \"local\"\n");
    assert_has(&p, "tenants[0].id", "required key is missing");
    let p = problems(&local_tenant(
        &"a".repeat(64),
        "tok-0123456789abcdef0123456789abcdef",
    ));
    assert_has(&p, "tenants[0].id", "at most 63");
}

#[test]
fn tenant_needs_tokens_or_jwt_secret() {
    let p = problems("[[tenants]]\nid = \"a\"\n[tenants.vendor]\nkind = \"local\"\n");
    assert_has(&p, "tenants[0]", "`tokens`, `jwt_secret`");
    let p = problems("[[tenants]]\nid = \"a\"\ntokens = []\n[tenants.vendor]\nkind = \"local\"\n");
    assert_has(&p, "tenants[0]", "`tokens`, `jwt_secret`");

    // jwt_secret alone is enough.
    let c = parse(
        "[[tenants]]\nid = \"a\"\njwt_secret = \"0123456789abcdef\"\n[tenants.vendor]\nkind = \"local\"\n",
    )
    .unwrap();
    assert!(c.tenants[0].tokens.is_empty());
    assert!(c.tenants[0].jwt_secret.is_some());
}

#[test]
fn secrets_must_be_non_empty_and_jwt_secret_long_enough() {
    let text = "[[tenants]]\nid = \"a\"\ntokens = [\"\", 5]\njwt_secret = \"short\"\n[tenants.vendor]\nkind = \"local\"\n";
    let p = problems(text);
    assert_has(&p, "tenants[0].tokens[0]", "empty");
    assert_has(
        &p,
        "tenants[0].tokens[1]",
        "expected a string, found integer",
    );
    assert_has(&p, "tenants[0].jwt_secret", "at least 16 characters");

    let p = problems_with_env(&local_tenant("a", "${EMPTY}"), &[("EMPTY", "")]);
    assert_has(&p, "tenants[0].tokens[0]", "empty");

    let p =
        problems("[[tenants]]\nid = \"a\"\ntokens = \"t\"\n[tenants.vendor]\nkind = \"local\"\n");
    assert_has(&p, "tenants[0].tokens", "array of strings");
}

#[test]
fn a_token_shared_by_two_tenants_is_refused() {
    let text = format!(
        "{}{}",
        local_tenant("a", "same-token-0123456789abcdef01234567"),
        local_tenant("b", "same-token-0123456789abcdef01234567")
    );
    let p = problems(&text);
    assert_has(
        &p,
        "tenants[1].tokens[0]",
        "also configured at tenants[0].tokens[0]",
    );
    assert!(!ConfigError { problems: p }
        .to_string()
        .contains("same-token"));
}

#[test]
fn vendor_table_and_kind_are_required() {
    let p =
        problems("[[tenants]]\nid = \"a\"\ntokens = [\"tok-0123456789abcdef0123456789abcdef\"]\n");
    assert_has(&p, "tenants[0].vendor", "required table is missing");
    let p = problems(&vendor_tenant("base_url = \"https://x.example\""));
    assert_has(&p, "tenants[0].vendor.kind", "required key is missing");
    let p = problems(&vendor_tenant("kind = \"looker\"\nbase_urll = \"x\""));
    assert_has(&p, "tenants[0].vendor.kind", "unknown vendor kind `looker`");
    assert_has(&p, "tenants[0].vendor.base_urll", "did you mean `base_url`");
}

// ---- vendors ------------------------------------------------------------------------------

#[test]
fn local_takes_no_other_keys() {
    let p = problems(&vendor_tenant(
        "kind = \"local\"\nbase_url = \"https://x.example\"",
    ));
    assert_has(&p, "tenants[0].vendor.base_url", "not a local setting");
}

#[test]
fn sisense_full_and_defaults() {
    let c = parse(&vendor_tenant(
        "kind = \"sisense\"\nbase_url = \"https://bi.example/sisense\"\nusername = \"admin\"\npassword = \"pw\"",
    ))
    .unwrap();
    match &c.tenants[0].vendor {
        VendorConfig::Sisense {
            base_url,
            username,
            password,
            api_version,
            mode,
            scim_token,
            deprovision,
        } => {
            assert!(scim_token.is_none());
            // A trailing slash keeps the path prefix when connectors `join` API paths.
            assert_eq!(base_url.as_str(), "https://bi.example/sisense/");
            assert_eq!(
                base_url.join("api/v1/users").unwrap().path(),
                "/sisense/api/v1/users"
            );
            assert_eq!(username, "admin");
            assert_eq!(password.expose(), "pw");
            assert_eq!(*api_version, SisenseApiVersion::V1);
            assert_eq!(*mode, SisenseMode::Rest);
            assert_eq!(*deprovision, SisenseDeprovision::Deactivate);
        }
        other => panic!("{other:?}"),
    }

    let c = parse(&vendor_tenant(
        "kind = \"sisense\"\nbase_url = \"http://bi.example\"\nusername = \"admin\"\npassword = \"pw\"\napi_version = \"v0.9\"\nmode = \"scim\"\nscim_token = \"tok-123\"\ndeprovision = \"delete\"",
    ))
    .unwrap();
    match &c.tenants[0].vendor {
        VendorConfig::Sisense { scim_token, .. } => {
            assert_eq!(scim_token.as_ref().map(|s| s.expose()), Some("tok-123"))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.tenants[0].vendor,
        VendorConfig::Sisense {
            api_version: SisenseApiVersion::V0_9,
            mode: SisenseMode::Scim,
            deprovision: SisenseDeprovision::Delete,
            ..
        }
    ));
}

#[test]
fn sisense_scim_token_goes_with_scim_mode_only() {
    let base = "kind = \"sisense\"\nbase_url = \"http://bi.example\"\nusername = \"admin\"\npassword = \"pw\"";
    let p = problems(&vendor_tenant(&format!("{base}\nmode = \"scim\"")));
    assert_has(
        &p,
        "tenants[0].vendor.scim_token",
        "required with mode = \"scim\"",
    );
    let p = problems(&vendor_tenant(&format!("{base}\nscim_token = \"x\"")));
    assert_has(
        &p,
        "tenants[0].vendor.scim_token",
        "only used with mode = \"scim\"",
    );
    let p = problems(&vendor_tenant(&format!(
        "{base}\nmode = \"scim\"\nscim_token = \"${{NO_SUCH_SCIM_TOKEN_VAR}}\""
    )));
    assert_has(&p, "tenants[0].vendor.scim_token", "NO_SUCH_SCIM_TOKEN_VAR");
}

#[test]
fn sisense_required_keys_and_foreign_keys() {
    let p = problems(&vendor_tenant(
        "kind = \"sisense\"\napi_version = \"v2\"\nmode = \"soap\"\npat_name = \"x\"\napi_key = \"k\"",
    ));
    assert_has(&p, "tenants[0].vendor.base_url", "required key is missing");
    assert_has(&p, "tenants[0].vendor.username", "required key is missing");
    assert_has(&p, "tenants[0].vendor.password", "required key is missing");
    assert_has(
        &p,
        "tenants[0].vendor.api_version",
        "unknown value `v2`; expected `v1` or `v0.9`",
    );
    assert_has(&p, "tenants[0].vendor.mode", "expected `rest` or `scim`");
    assert_has(
        &p,
        "tenants[0].vendor.pat_name",
        "not a sisense setting (it belongs to tableau)",
    );
    assert_has(
        &p,
        "tenants[0].vendor.api_key",
        "not a sisense setting (it belongs to metabase)",
    );
    assert_eq!(p.len(), 7, "{p:?}");
}

#[test]
fn base_url_rules() {
    for (url, needle) in [
        ("not a url", "not a valid URL"),
        ("ftp://x.example", "http:// or https://"),
        ("https://user:pw@x.example", "user name or password"),
        ("https://x.example/?a=b", "query or fragment"),
        ("https://x.example/#top", "query or fragment"),
        ("mailto:x@example.com", "http:// or https://"),
    ] {
        let p = problems(&vendor_tenant(&format!(
            "kind = \"metabase\"\nbase_url = \"{url}\"\napi_key = \"k\""
        )));
        assert_has(&p, "tenants[0].vendor.base_url", needle);
        let text = ConfigError { problems: p }.to_string();
        assert!(!text.contains(":pw@"), "{text}");
    }
}

#[test]
fn tableau_pat_and_defaults() {
    let c = parse(&vendor_tenant(
        "kind = \"tableau\"\nbase_url = \"https://tab.example\"\nsite = \"\"\npat_name = \"bridge\"\npat_secret = \"s\"",
    ))
    .unwrap();
    match &c.tenants[0].vendor {
        VendorConfig::Tableau {
            site,
            api_version,
            auth,
            deprovision,
            ..
        } => {
            assert_eq!(site, "");
            assert_eq!(api_version, DEFAULT_TABLEAU_API_VERSION);
            assert!(
                matches!(auth, TableauAuth::Pat { name, secret } if name == "bridge" && secret.expose() == "s")
            );
            assert_eq!(*deprovision, TableauDeprovision::Unlicense);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tableau_flavor_is_set_or_inferred_from_the_host() {
    let flavor_of = |extra: &str, base: &str| {
        let c = parse(&vendor_tenant(&format!(
            "kind = \"tableau\"\nbase_url = \"{base}\"\nsite = \"acme\"\npat_name = \"n\"\npat_secret = \"s\"{extra}"
        )))
        .unwrap();
        match &c.tenants[0].vendor {
            VendorConfig::Tableau { flavor, .. } => *flavor,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(flavor_of("", "https://tab.example"), TableauFlavor::Server);
    assert_eq!(
        flavor_of("", "https://10ay.online.tableau.com"),
        TableauFlavor::Cloud
    );
    assert_eq!(
        flavor_of("\nflavor = \"cloud\"", "https://tab.example"),
        TableauFlavor::Cloud
    );
    assert_eq!(
        flavor_of("\nflavor = \"server\"", "https://10ay.online.tableau.com"),
        TableauFlavor::Server
    );
    let p = problems(&vendor_tenant(
        "kind = \"tableau\"\nbase_url = \"https://tab.example\"\nsite = \"a\"\npat_name = \"n\"\npat_secret = \"s\"\nflavor = \"online\"",
    ));
    assert_has(&p, "tenants[0].vendor.flavor", "");
}

#[test]
fn tableau_connected_app() {
    let c = parse(&vendor_tenant(
        "kind = \"tableau\"\nbase_url = \"https://tab.example\"\nsite = \"acme\"\napi_version = \"3.20\"\nclient_id = \"c\"\nsecret_id = \"i\"\nsecret_value = \"v\"\nusername = \"admin@acme\"\ndeprovision = \"delete\"",
    ))
    .unwrap();
    match &c.tenants[0].vendor {
        VendorConfig::Tableau {
            auth:
                TableauAuth::ConnectedApp {
                    client_id,
                    secret_id,
                    secret_value,
                    username,
                },
            deprovision,
            api_version,
            ..
        } => {
            assert_eq!((client_id.as_str(), secret_id.as_str()), ("c", "i"));
            assert_eq!(secret_value.expose(), "v");
            assert_eq!(username, "admin@acme");
            assert_eq!(*deprovision, TableauDeprovision::Delete);
            assert_eq!(api_version, "3.20");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tableau_problems() {
    let p = problems(&vendor_tenant(
        "kind = \"tableau\"\nbase_url = \"https://tab.example\"",
    ));
    assert_has(&p, "tenants[0].vendor.site", "required key is missing");
    assert_has(&p, "tenants[0].vendor", "Tableau sign-in is missing");

    let p = problems(&vendor_tenant(
        "kind = \"tableau\"\nbase_url = \"https://tab.example\"\nsite = \"a\"\npat_name = \"n\"\nclient_id = \"c\"",
    ));
    assert_has(&p, "tenants[0].vendor", "not both");

    let p = problems(&vendor_tenant(
        "kind = \"tableau\"\nbase_url = \"https://tab.example\"\nsite = \"a\"\nclient_id = \"c\"\napi_version = \"3.10\"",
    ));
    assert_has(&p, "tenants[0].vendor.secret_id", "required key is missing");
    assert_has(
        &p,
        "tenants[0].vendor.secret_value",
        "required key is missing",
    );
    assert_has(&p, "tenants[0].vendor.username", "required key is missing");
    assert_has(&p, "tenants[0].vendor.api_version", "3.17 or later");

    let p = problems(&vendor_tenant(
        "kind = \"tableau\"\nbase_url = \"https://tab.example\"\nsite = \"a\"\npat_name = \"n\"\napi_version = \"latest\"\ndeprovision = \"remove\"\npassword = \"x\"",
    ));
    assert_has(
        &p,
        "tenants[0].vendor.pat_secret",
        "required key is missing",
    );
    assert_has(&p, "tenants[0].vendor.api_version", "such as \"3.24\"");
    assert_has(
        &p,
        "tenants[0].vendor.deprovision",
        "`unlicense` or `delete`",
    );
    assert_has(&p, "tenants[0].vendor.password", "not a tableau setting");
}

#[test]
fn thoughtspot_variants_and_problems() {
    let c = parse(&vendor_tenant(
        "kind = \"thoughtspot\"\nbase_url = \"https://ts.example\"\nusername = \"svc\"\nsecret_key = \"k\"\norg_id = 2",
    ))
    .unwrap();
    assert!(matches!(
        &c.tenants[0].vendor,
        VendorConfig::Thoughtspot { username, auth: ThoughtspotAuth::SecretKey(k), org_id: 2, token_validity_s: 3600, orgs: None, .. }
            if username == "svc" && k.expose() == "k"
    ));
    // No Org is no default: ThoughtSpot would pick one itself.
    let p = problems(&vendor_tenant(
        "kind = \"thoughtspot\"\nbase_url = \"https://ts.example\"\nusername = \"svc\"\npassword = \"p\"",
    ));
    assert_has(&p, "tenants[0].vendor.org_id", "required key is missing");
    // org_id from the environment arrives as a string.
    let c = Config::from_toml_str(
        &vendor_tenant(
            "kind = \"thoughtspot\"\nbase_url = \"https://ts.example\"\nusername = \"svc\"\npassword = \"p\"\norg_id = \"${ORG}\"\ntoken_validity_s = 600",
        ),
        &env_of(&[("ORG", "7")]),
    )
    .unwrap();
    assert!(matches!(
        c.tenants[0].vendor,
        VendorConfig::Thoughtspot {
            org_id: 7,
            token_validity_s: 600,
            ..
        }
    ));

    let p = problems(&vendor_tenant(
        "kind = \"thoughtspot\"\nbase_url = \"https://ts.example\"\npassword = \"p\"\nsecret_key = \"k\"\norg_id = -1\ntoken_validity_s = 5",
    ));
    assert_has(&p, "tenants[0].vendor.username", "required key is missing");
    assert_has(&p, "tenants[0].vendor", "not both");
    assert_has(&p, "tenants[0].vendor.org_id", "negative");
    assert_has(&p, "tenants[0].vendor.token_validity_s", "between 60");

    let c = parse(&vendor_tenant(
        "kind = \"thoughtspot\"\nbase_url = \"https://ts.example\"\nusername = \"svc\"\npassword = \"p\"\norg_id = 0\naccount_type = \"SAML_USER\"",
    ))
    .unwrap();
    assert!(matches!(
        c.tenants[0].vendor,
        VendorConfig::Thoughtspot {
            account_type: Some(ThoughtspotAccountType::Saml),
            ..
        }
    ));
    let p = problems(&vendor_tenant(
        "kind = \"thoughtspot\"\nbase_url = \"https://ts.example\"\nusername = \"svc\"\npassword = \"p\"\norg_id = 0\naccount_type = \"saml\"",
    ));
    assert_has(&p, "tenants[0].vendor.account_type", "`SAML_USER`");

    let p = problems(&vendor_tenant(
        "kind = \"thoughtspot\"\nbase_url = \"https://ts.example\"\nusername = \"svc\"\norg_id = 1.5",
    ));
    assert_has(&p, "tenants[0].vendor", "sign-in is missing");
    assert_has(
        &p,
        "tenants[0].vendor.org_id",
        "expected an integer, found float",
    );
}

#[test]
fn thoughtspot_orgs_from_groups() {
    let base = "kind = \"thoughtspot\"\nbase_url = \"https://ts.example\"\nusername = \"svc\"\npassword = \"p\"";
    let c = parse(&vendor_tenant(&format!(
        "{base}\norg_id = 0\norg_group_pattern = \"org-*\"\ncreate_orgs = true"
    )))
    .unwrap();
    let VendorConfig::Thoughtspot { orgs: Some(o), .. } = &c.tenants[0].vendor else {
        panic!("Orgs from groups expected");
    };
    assert!(o.create);
    assert_eq!(o.org_of("org-acme").as_deref(), Some("acme"));
    assert_eq!(o.org_of("ORG-Acme Corp").as_deref(), Some("Acme Corp"));
    assert_eq!(o.org_of("org-"), None, "the Org's name must not be empty");
    assert_eq!(o.org_of("sales"), None);
    // Not a byte-offset cut: names in any language neither panic nor match by accident.
    assert_eq!(o.org_of("Comé Paris"), None);
    assert_eq!(o.org_of("é"), None);
    assert_eq!(o.org_of("org-Café Zürich").as_deref(), Some("Café Zürich"));
    let suffix = ThoughtspotOrgGroups {
        pattern: "*-клиент".into(),
        create: false,
    };
    assert_eq!(suffix.org_of("acme-клиент").as_deref(), Some("acme"));
    assert_eq!(suffix.org_of("ééé-клиенx"), None);
    assert_eq!(suffix.org_of("клиент"), None);
    let p = problems(&vendor_tenant(&format!(
        "{base}\norg_id = 3\norg_group_pattern = \"org-*-*\""
    )));
    assert_has(&p, "tenants[0].vendor.org_group_pattern", "exactly one `*`");
    let p = problems(&vendor_tenant(&format!(
        "{base}\norg_id = 3\norg_group_pattern = \"org-*\""
    )));
    assert_has(&p, "tenants[0].vendor.org_group_pattern", "org_id = 0");
    let p = problems(&vendor_tenant(&format!(
        "{base}\norg_id = 0\ncreate_orgs = true"
    )));
    assert_has(&p, "tenants[0].vendor.create_orgs", "org_group_pattern");
}

#[test]
fn tenant_attributes_map_vendor_attributes_to_scim_paths() {
    let ts = "[tenants.vendor]\nkind = \"thoughtspot\"\nbase_url = \"https://ts.example\"\nusername = \"svc\"\npassword = \"p\"\norg_id = 0\n";
    let c = parse(&format!(
        "[[tenants]]\nid = \"t\"\ntokens = [\"tok-0123456789abcdef0123456789abcdef\"]\n{ts}[tenants.attributes]\nregion = \"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division\"\ntitle = \"title\"\n"
    ))
    .unwrap();
    assert_eq!(c.tenants[0].attributes.len(), 2);
    assert_eq!(c.tenants[0].attributes["title"], "title");
    let p = problems(&format!(
        "[[tenants]]\nid = \"t\"\ntokens = [\"tok-0123456789abcdef0123456789abcdef\"]\n{ts}[tenants.attributes]\nregion = \"emails[type eq \\\"work\\\"].value\"\nbad = 3\n"
    ));
    assert_has(&p, "tenants[0].attributes.region", "value filter");
    assert_has(&p, "tenants[0].attributes.bad", "expected a string");
    let p = problems(
        "[[tenants]]\nid = \"t\"\ntokens = [\"tok-0123456789abcdef0123456789abcdef\"]\n[tenants.vendor]\nkind = \"local\"\n[tenants.attributes]\nregion = \"title\"\n",
    );
    assert_has(&p, "tenants[0].attributes", "keeps no per-user attributes");
    // Metabase login_attributes take the same table.
    let c = parse(
        "[[tenants]]\nid = \"t\"\ntokens = [\"tok-0123456789abcdef0123456789abcdef\"]\n[tenants.vendor]\nkind = \"metabase\"\nbase_url = \"https://mb.example\"\napi_key = \"k\"\n[tenants.attributes]\nregion = \"title\"\n",
    )
    .unwrap();
    assert_eq!(c.tenants[0].attributes["region"], "title");
}

#[test]
fn metabase_variants_and_problems() {
    let c = parse(&vendor_tenant(
        "kind = \"metabase\"\nbase_url = \"https://mb.example\"\nusername = \"admin@mb\"\npassword = \"p\"",
    ))
    .unwrap();
    assert!(matches!(
        &c.tenants[0].vendor,
        VendorConfig::Metabase { auth: MetabaseAuth::Password { username, password }, .. }
            if username == "admin@mb" && password.expose() == "p"
    ));

    let p = problems(&vendor_tenant(
        "kind = \"metabase\"\nbase_url = \"https://mb.example\"",
    ));
    assert_has(&p, "tenants[0].vendor", "Metabase sign-in is missing");
    let p = problems(&vendor_tenant(
        "kind = \"metabase\"\nbase_url = \"https://mb.example\"\napi_key = \"k\"\nusername = \"u\"",
    ));
    assert_has(&p, "tenants[0].vendor", "not both");
    let p = problems(&vendor_tenant(
        "kind = \"metabase\"\nbase_url = \"https://mb.example\"\npassword = \"p\"\nsite = \"x\"",
    ));
    assert_has(&p, "tenants[0].vendor.username", "required key is missing");
    assert_has(
        &p,
        "tenants[0].vendor.site",
        "not a metabase setting (it belongs to tableau)",
    );
}

// ---- roles ----------------------------------------------------------------------------------

#[test]
fn role_rules_parse_in_order() {
    let text = format!(
        "{}[tenants.roles]\ndefault = \"Viewer\"\nrules = [\n  {{ group = \"BI Admins\", role = \"Admin\" }},\n  {{ role = \"Designer\" }},\n]\n",
        local_tenant("a", "tok-0123456789abcdef0123456789abcdef")
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.tenants[0].roles,
        RoleRules {
            default: Some("Viewer".into()),
            rules: vec![
                RoleRule {
                    group: Some("BI Admins".into()),
                    role: "Admin".into()
                },
                RoleRule {
                    group: None,
                    role: "Designer".into()
                },
            ],
        }
    );

    // Array-of-tables form works too.
    let text = format!(
        "{}[[tenants.roles.rules]]\ngroup = \"G\"\nrole = \"R\"\n",
        local_tenant("a", "tok-0123456789abcdef0123456789abcdef")
    );
    assert_eq!(parse(&text).unwrap().tenants[0].roles.rules.len(), 1);
}

#[test]
fn role_rule_problems() {
    let text = format!(
        "{}[tenants.roles]\ndefault = \"\"\nrules = [{{ group = \"G\" }}, \"Admin\", {{ group = \"\", role = \"R\" }}]\n",
        local_tenant("a", "tok-0123456789abcdef0123456789abcdef")
    );
    let p = problems(&text);
    assert_has(&p, "tenants[0].roles.default", "must not be empty");
    assert_has(
        &p,
        "tenants[0].roles.rules[0].role",
        "required key is missing",
    );
    assert_has(&p, "tenants[0].roles.rules[1]", "expected a table");
    assert_has(&p, "tenants[0].roles.rules[2].group", "must not be empty");
}

// ---- all problems at once; no secrets in errors ----------------------------------------------

#[test]
fn many_problems_are_reported_at_once() {
    let text = r#"
listen = "nope"
[[tenants]]
id = "Bad Id"
tokens = ["${MISSING_TOKEN}"]
jwt_secert = "x"
[tenants.vendor]
kind = "sisense"
base_url = "ftp://bi.example"

[[tenants]]
id = "ok"
jwt_secret = "short"
[tenants.vendor]
kind = "metabase"
"#;
    let err = parse(text).unwrap_err();
    let p = &err.problems;
    assert_has(p, "listen", "socket address");
    assert_has(p, "tenants[0].id", "a-z");
    assert_has(p, "tenants[0].tokens[0]", "MISSING_TOKEN");
    assert_has(p, "tenants[0].jwt_secert", "did you mean `jwt_secret`");
    assert_has(p, "tenants[0].vendor.base_url", "http:// or https://");
    assert_has(p, "tenants[0].vendor.username", "required key is missing");
    assert_has(p, "tenants[0].vendor.password", "required key is missing");
    assert_has(p, "tenants[1].jwt_secret", "at least 16");
    assert_has(p, "tenants[1].vendor.base_url", "required key is missing");
    assert_has(p, "tenants[1].vendor", "Metabase sign-in is missing");
    assert_eq!(p.len(), 10, "{err}");
    // Display: one problem per line, "path: message".
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), 10);
    assert!(shown
        .lines()
        .any(|l| l == "tenants[1].vendor.base_url: required key is missing"));
}

#[test]
fn secret_values_never_appear_in_errors() {
    let secret = "S3CRET-VALUE-abcdefghijklmnop";
    let text = r#"
[[tenants]]
id = "${TENANT}"
tokens = ["${TOKEN}"]
jwt_secret = "${SHORT}"
[tenants.vendor]
kind = "${KIND}"
[tenants.roles]
default = 1

[[tenants]]
id = "b"
tokens = ["${TOKEN}"]
[tenants.vendor]
kind = "sisense"
base_url = "${URL}"
username = "u"
password = "${TOKEN}"
mode = "${TOKEN}"
"#;
    let env = env_of(&[
        ("TENANT", secret),
        ("TOKEN", secret),
        ("SHORT", "S3CRET"),
        ("KIND", secret),
        ("URL", &format!("https://user:{secret}@x.example")),
    ]);
    let err = Config::from_toml_str(text, &env).unwrap_err();
    let shown = format!("{err}\n{err:?}");
    assert!(err.problems.len() >= 6, "{shown}");
    assert!(!shown.contains("S3CRET"), "{shown}");
}

#[test]
fn syntax_errors_carry_line_and_column_but_not_the_source_line() {
    let text = "listen = \"127.0.0.1:8080\"\n[[tenants]]\nid = \"a\"\ntokens = [\"hunter2-secret\"\njwt_secret = 5\n";
    let err = parse(text).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    let msg = &err.problems[0].message;
    assert!(msg.starts_with("TOML syntax error at line "), "{msg}");
    assert!(msg.contains("column"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");

    let err = parse("a = 1\nb = = 2\n").unwrap_err();
    assert!(
        err.problems[0].message.contains("line 2, column"),
        "{}",
        err.problems[0].message
    );
}

#[test]
fn load_reads_a_file_and_reports_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scim-bridge.toml");
    std::fs::write(
        &path,
        local_tenant("a", "tok-0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.tenants[0].id.as_str(), "a");

    let err = Config::load(&dir.path().join("missing.toml")).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0].message.contains("cannot read"));
}

// ---- the shipped example and the summary -------------------------------------------------------

fn example_env(name: &str) -> Option<String> {
    // Any variable the example names gets a distinct fake value, long enough for jwt_secret.
    Some(format!(
        "fake-{}-value-0123456789",
        name.to_ascii_lowercase()
    ))
}

#[test]
fn shipped_example_parses_and_shows_every_vendor_kind() {
    let c = Config::from_toml_str(EXAMPLE, &example_env).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = c.tenants.iter().map(|t| t.vendor.kind()).collect();
    for kind in ["local", "sisense", "tableau", "thoughtspot", "metabase"] {
        assert!(kinds.contains(&kind), "example lacks a {kind} tenant");
    }
    // Both Tableau sign-in kinds are shown.
    assert!(c.tenants.iter().any(|t| matches!(
        t.vendor,
        VendorConfig::Tableau {
            auth: TableauAuth::Pat { .. },
            ..
        }
    )));
    assert!(c.tenants.iter().any(|t| matches!(
        t.vendor,
        VendorConfig::Tableau {
            auth: TableauAuth::ConnectedApp { .. },
            ..
        }
    )));
    let sisense = c.tenant("acme-sisense").unwrap();
    assert_eq!(sisense.roles.rules.len(), 3);
    assert_eq!(sisense.roles.default.as_deref(), Some("Viewer"));

    // Without the environment, every secret is reported missing by name.
    let err = Config::from_toml_str(EXAMPLE, &no_env).unwrap_err();
    assert_has(
        &err.problems,
        "tenants[1].vendor.password",
        "`ACME_SISENSE_PASSWORD`",
    );
    assert!(err
        .problems
        .iter()
        .all(|p| p.message.contains("environment variable")));
}

#[test]
fn summary_lists_tenants_without_secrets() {
    let c = Config::from_toml_str(EXAMPLE, &example_env).unwrap();
    let s = c.summary();
    for needle in [
        "tenants:    6",
        "- tenant acme-sisense",
        "sisense https://bi.acme.example/",
        "API v1, mode rest, deprovision deactivate",
        "tableau (cloud) https://10ay.online.tableau.com/ site `acme`",
        "personal access token `scim-bridge`",
        "Default site",
        "secret key",
        "metabase https://metabase.acme.example/ with API key",
        "2 static tokens",
        "JWT accepted",
        "3 rules, default `Viewer`",
    ] {
        assert!(s.contains(needle), "summary lacks {needle:?}:\n{s}");
    }
    assert!(!s.contains("fake-"), "summary shows a secret:\n{s}");
}

#[test]
fn on_vendor_unavailable_defaults_to_queue_and_names_a_bad_value() {
    let c = parse(&local_tenant("a", "tok-0123456789abcdef0123456789abcdef")).unwrap();
    assert_eq!(
        c.tenants[0].on_vendor_unavailable,
        OnVendorUnavailable::Queue
    );
    let text = "[[tenants]]\nid = \"a\"\ntokens = [\"tok-0123456789abcdef0123456789abcdef\"]\non_vendor_unavailable = \"fail\"\n[tenants.vendor]\nkind = \"local\"\n";
    assert_eq!(
        parse(text).unwrap().tenants[0].on_vendor_unavailable,
        OnVendorUnavailable::Fail
    );
    let p = problems(&text.replace("\"fail\"", "\"drop\""));
    assert_has(
        &p,
        "tenants[0].on_vendor_unavailable",
        "expected `queue` or `fail`",
    );
}

#[test]
fn two_tenants_sharing_a_tableau_pat_are_refused() {
    let tenant = |id: &str, host: &str, pat: &str| {
        format!(
            "[[tenants]]\nid = \"{id}\"\ntokens = [\"token-{id}-0123456789abcdef0123456789\"]\n[tenants.vendor]\nkind = \"tableau\"\nbase_url = \"https://{host}\"\nsite = \"{id}\"\npat_name = \"{pat}\"\npat_secret = \"s\"\n"
        )
    };
    let text = tenant("a", "tab.example", "bridge") + &tenant("b", "tab.example", "bridge");
    let p = problems(&text);
    assert_has(&p, "tenants[1].vendor.pat_name", "sign each other out");
    // Another PAT, or another server: fine.
    let ok = tenant("a", "tab.example", "bridge") + &tenant("b", "tab.example", "bridge-b");
    assert!(parse(&ok).is_ok());
    let ok = tenant("a", "tab.example", "bridge") + &tenant("b", "other.example", "bridge");
    assert!(parse(&ok).is_ok());
}

#[test]
fn tableau_auth_setting_is_optional_and_checked() {
    let base = "kind = \"tableau\"\nbase_url = \"https://tab.example\"\nsite = \"a\"\npat_name = \"n\"\npat_secret = \"s\"";
    let setting = |extra: &str| {
        let c = parse(&vendor_tenant(&format!("{base}{extra}"))).unwrap();
        match &c.tenants[0].vendor {
            VendorConfig::Tableau { auth_setting, .. } => *auth_setting,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(setting(""), None);
    assert_eq!(
        setting("\nauth_setting = \"TableauIDWithMFA\""),
        Some(TableauAuthSetting::TableauIdWithMfa)
    );
    let p = problems(&vendor_tenant(&format!("{base}\nauth_setting = \"MFA\"")));
    assert_has(&p, "tenants[0].vendor.auth_setting", "");
}

#[test]
fn limits_trusted_proxies_and_jwt_lifetime_have_defaults_and_are_validated() {
    let tenant = "[[tenants]]\nid = \"t\"\ntokens = [\"tok-0123456789abcdef0123456789abcdef\"]\n[tenants.vendor]\nkind = \"local\"\n";
    let c = parse(tenant).unwrap();
    assert_eq!(c.limits, crate::config::RequestLimits::default());
    assert!(c.trusted_proxies.is_empty());
    assert_eq!(c.jwt_max_lifetime.as_secs(), 90 * 24 * 3600);
    let c = parse(&format!(
        "trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"fd00::1/8\"]\njwt_max_lifetime = \"7d\"\n[limits]\nbody_read_timeout = \"5s\"\nrequest_timeout = \"20s\"\ntenant_concurrency = 8\nauth_failure_limit = 0\n{tenant}"
    ))
    .unwrap();
    assert_eq!(c.limits.body_read_timeout.as_secs(), 5);
    assert_eq!(c.limits.request_timeout.as_secs(), 20);
    assert_eq!(c.limits.tenant_concurrency, 8);
    assert_eq!(c.limits.auth_failure_limit, 0);
    let nets: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]);
    assert_eq!(c.jwt_max_lifetime.as_secs(), 7 * 24 * 3600);
    let p = problems(&format!(
        "trusted_proxies = [\"10.0.0.0/33\", 7]\njwt_max_lifetime = \"soon\"\n[limits]\nbody_read_timeout = \"90s\"\nrequest_timeout = \"1m\"\ntenant_concurrency = 0\nbogus = 1\n{tenant}"
    ));
    assert_has(&p, "trusted_proxies[0]", "not an IP address or network");
    assert_has(&p, "trusted_proxies[1]", "a string");
    assert_has(&p, "jwt_max_lifetime", "invalid duration");
    assert_has(&p, "limits.body_read_timeout", "request_timeout");
    assert_has(&p, "limits.tenant_concurrency", "integer from 1");
    assert_has(&p, "limits.bogus", "");
}

#[test]
fn static_tokens_shorter_than_32_characters_are_refused() {
    let p = problems(&local_tenant("a", "short-token"));
    assert_has(&p, "tenants[0].tokens[0]", "at least 32 characters");
    assert!(!ConfigError { problems: p }
        .to_string()
        .contains("short-token"));
    let p = problems_with_env(&local_tenant("a", "${T}"), &[("T", &"x".repeat(31))]);
    assert_has(&p, "tenants[0].tokens[0]", "at least 32 characters");
    assert!(parse(&local_tenant("a", &"x".repeat(32))).is_ok());
}

#[test]
fn a_jwt_secret_shared_by_two_tenants_is_a_warning() {
    let tenant = |id: &str, key: &str| {
        format!("[[tenants]]\nid = \"{id}\"\njwt_secret = \"{key}\"\n[tenants.vendor]\nkind = \"local\"\n")
    };
    let key = "0123456789abcdef-shared";
    let text = tenant("a", key) + &tenant("b", "another-key-0123456789") + &tenant("c", key);
    let c = parse(&text).unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_has(&w, "tenants[2].jwt_secret", "tenants[0].jwt_secret");
    assert!(!w[0].to_string().contains(key));
    let text = tenant("a", key) + &tenant("b", "another-key-0123456789");
    assert!(parse(&text).unwrap().warnings().is_empty());
}

#[test]
fn forget_static_tokens_drops_the_plaintext() {
    let mut c = parse(&local_tenant("a", &"x".repeat(40))).unwrap();
    c.forget_static_tokens();
    assert!(c.tenants[0].tokens.is_empty());
}

// ---- governance keys (issue 13): [admin], [audit], [report], dry_run, [tenants.sweep] --------

#[test]
fn governance_keys_take_defaults() {
    let c = parse(&local_tenant("a", "tok-0123456789abcdef0123456789abcdef")).unwrap();
    assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert!(c.admin.tokens.is_empty() && c.admin.metrics_token.is_none());
    assert_eq!(c.audit.retention, None);
    assert_eq!(c.report.person_key, PersonKey::Email);
    assert!(!c.tenants[0].dry_run);
    assert_eq!(c.tenants[0].sweep, None);
}

#[test]
fn governance_keys_are_read() {
    let text = String::from(
        "[admin]\nlisten = \"10.0.0.5:9443\"\ntokens = [\"adm-0123456789abcdef0123456789abcdef\"]\n\
         metrics_token = \"met-0123456789abcdef0123456789abcdef\"\n\
         [audit]\nretention = \"400d\"\n[report]\nperson_key = \"userName\"\n\
         [[tenants]]\nid = \"a\"\ntokens = [\"tok-0123456789abcdef0123456789abcdef\"]\ndry_run = true\n\
         [tenants.vendor]\nkind = \"metabase\"\nbase_url = \"https://mb.example/\"\n\
         api_key = \"mb_0123456789abcdef\"\n\
         [tenants.sweep]\ndays = 60\napply = true\nevery = \"6h\"\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.admin.listen, "10.0.0.5:9443".parse().unwrap());
    assert_eq!(
        c.admin.tokens[0].expose(),
        "adm-0123456789abcdef0123456789abcdef"
    );
    assert!(c.admin.metrics_token.is_some());
    assert_eq!(
        c.audit.retention,
        Some(std::time::Duration::from_secs(400 * 86400))
    );
    assert_eq!(c.report.person_key, PersonKey::UserName);
    let t = &c.tenants[0];
    assert!(t.dry_run);
    assert_eq!(
        t.sweep,
        Some(SweepConfig {
            days: 60,
            apply: true,
            include_unmanaged: false,
            every: std::time::Duration::from_secs(6 * 3600),
        })
    );
}

#[test]
fn governance_key_problems_name_their_path() {
    let tok = "tok-0123456789abcdef0123456789abcdef";
    let p = problems(&format!(
        "[admin]\nlisten = \"nowhere\"\ntokens = [\"short\", \"{tok}\"]\nmetrics_token = \"m\"\nport = 1\n\
         [audit]\nretention = \"1h\"\n[report]\nperson_key = \"phone\"\n\
         [[tenants]]\nid = \"a\"\ntokens = [\"{tok}\"]\ndry_run = \"yes\"\n\
         [tenants.vendor]\nkind = \"local\"\n\
         [tenants.sweep]\napply = 1\nevery = \"10s\"\n"
    ));
    assert_has(&p, "admin.listen", "not a socket address");
    assert_has(&p, "admin.tokens[0]", "too short");
    // The same token as a tenant's: an IdP's credential must not open the console.
    assert_has(&p, "admin.tokens[1]", "must not be a tenant's token");
    assert_has(&p, "admin.metrics_token", "too short");
    assert_has(&p, "admin.port", "");
    assert_has(&p, "audit.retention", "at least 1d");
    assert_has(
        &p,
        "report.person_key",
        "expected `email` or `userName` or `externalId`",
    );
    assert_has(&p, "tenants[0].dry_run", "true or false");
    assert_has(&p, "tenants[0].sweep.days", "required");
    assert_has(&p, "tenants[0].sweep.apply", "true or false");
    assert_has(&p, "tenants[0].sweep.every", "at least 1m");
    // A local tenant has no vendor: nothing to hold back, no sign-ins to sweep.
    let p = problems(&format!(
        "[[tenants]]\nid = \"a\"\ntokens = [\"{tok}\"]\ndry_run = true\n\
         [tenants.vendor]\nkind = \"local\"\n[tenants.sweep]\ndays = 90\n"
    ));
    assert_has(&p, "tenants[0].dry_run", "nothing to hold back");
    assert_has(&p, "tenants[0].sweep", "no vendor accounts");
}

// ---- ${file:/path} secrets and [tls] (issue 14) --------------------------------------------
// In their own file: this one is long enough.
#[path = "tests_files.rs"]
mod files;

// ---- [limits] tenant_rate / tenant_burst (issue 14) ----------------------------------------

#[test]
fn tenant_rate_and_burst_default_off_parse_and_are_validated() {
    let tenant = "[[tenants]]\nid = \"t\"\ntokens = [\"tok-0123456789abcdef0123456789abcdef\"]\n[tenants.vendor]\nkind = \"local\"\n";
    let c = parse(tenant).unwrap();
    assert_eq!(c.limits.tenant_rate, 0, "off by default");
    let c = parse(&format!("[limits]\ntenant_rate = 50\n{tenant}")).unwrap();
    assert_eq!(c.limits.tenant_rate, 50);
    assert_eq!(
        c.limits.burst(),
        100,
        "the bucket defaults to twice the rate"
    );
    let c = parse(&format!(
        "[limits]\ntenant_rate = 50\ntenant_burst = 200\n{tenant}"
    ))
    .unwrap();
    assert_eq!((c.limits.tenant_rate, c.limits.burst()), (50, 200));
    for (bad, needle) in [
        ("-1", "found -1"),
        ("1000001", "found 1000001"),
        ("2.5", "found float"),
        ("\"fast\"", "found string"),
        ("true", "found boolean"),
    ] {
        let p = problems(&format!(
            "[limits]\ntenant_rate = {bad}\ntenant_burst = {bad}\n{tenant}"
        ));
        assert_has(&p, "limits.tenant_rate", "integer from 0 (off) to 1000000");
        assert_has(&p, "limits.tenant_rate", needle);
        assert_has(&p, "limits.tenant_burst", "integer from 1 to 1000000");
        assert_has(&p, "limits.tenant_burst", needle);
    }
    // A bucket of 0 would refuse every request.
    let p = problems(&format!(
        "[limits]\ntenant_rate = 5\ntenant_burst = 0\n{tenant}"
    ));
    assert_has(&p, "limits.tenant_burst", "found 0");
}
