//! `${file:/path}` secrets and the `[tls]` table (issue 14, CONTRACT §3.1), with real files in a
//! temporary directory.

use super::*;

const TOKEN: &str = "tok-0123456789abcdef0123456789abcdef";

/// Writes `content` to `dir/name` with `mode` (the umask would otherwise decide it).
fn secret_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
    path
}

fn token_from_file(path: &Path) -> Result<Config, ConfigError> {
    parse(&local_tenant("a", &format!("${{file:{}}}", path.display())))
}

#[test]
fn file_value_loses_one_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content, want) in [
        ("lf", format!("{TOKEN}\n"), TOKEN.to_string()),
        ("crlf", format!("{TOKEN}\r\n"), TOKEN.to_string()),
        ("none", TOKEN.to_string(), TOKEN.to_string()),
        // Only one: a second newline is part of the value, as the file says.
        ("two", format!("{TOKEN}\n\n"), format!("{TOKEN}\n")),
        (
            "inner",
            format!("{TOKEN}\nmore\n"),
            format!("{TOKEN}\nmore"),
        ),
    ] {
        let path = secret_file(dir.path(), name, content.as_bytes(), 0o600);
        let c = token_from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.tenants[0].tokens[0].expose(), want, "{name}");
    }
}

#[test]
fn file_value_expands_inside_a_string_and_next_to_env() {
    let dir = tempfile::tempdir().unwrap();
    let path = secret_file(dir.path(), "part", b"from-file\n", 0o600);
    let text = local_tenant(
        "a",
        &format!("${{X}}-${{file:{}}}-0123456789abcdef0123", path.display()),
    );
    let c = Config::from_toml_str(&text, &env_of(&[("X", "env")])).unwrap();
    assert_eq!(
        c.tenants[0].tokens[0].expose(),
        "env-from-file-0123456789abcdef0123"
    );
}

#[test]
fn file_value_is_not_expanded_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = secret_file(
        dir.path(),
        "t",
        b"${NOT_EXPANDED}-0123456789abcdef0123456789",
        0o600,
    );
    let c = token_from_file(&path).unwrap();
    assert_eq!(
        c.tenants[0].tokens[0].expose(),
        "${NOT_EXPANDED}-0123456789abcdef0123456789"
    );
}

#[test]
fn file_works_wherever_env_works() {
    let dir = tempfile::tempdir().unwrap();
    let pw = secret_file(dir.path(), "pw", b"s3cret-password\n", 0o600);
    let port = secret_file(dir.path(), "port", b"9443\n", 0o600);
    let text = format!(
        "listen = \"127.0.0.1:${{file:{port}}}\"\n[[tenants]]\nid = \"s\"\ntokens = [\"{TOKEN}\"]\n\
         [tenants.vendor]\nkind = \"sisense\"\nbase_url = \"https://s.example\"\n\
         username = \"admin\"\npassword = \"${{file:{pw}}}\"\n",
        port = port.display(),
        pw = pw.display()
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.listen.port(), 9443);
    match &c.tenants[0].vendor {
        VendorConfig::Sisense { password, .. } => assert_eq!(password.expose(), "s3cret-password"),
        other => panic!("unexpected vendor {other:?}"),
    }
}

#[test]
fn missing_file_names_key_path_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let p = token_from_file(&path).unwrap_err().problems;
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key_path, "tenants[0].tokens[0]");
    assert!(
        p[0].message.contains(&path.display().to_string()),
        "{}",
        p[0].message
    );
    assert!(p[0].message.contains("cannot read"), "{}", p[0].message);
    // A directory is no secret file either.
    let p = token_from_file(dir.path()).unwrap_err().problems;
    assert_has(&p, "tenants[0].tokens[0]", "directory");
}

#[test]
fn every_bad_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[tenants]]\nid = \"a\"\ntokens = [\"${{file:{d}/one}}\"]\njwt_secret = \"${{file:{d}/two}}\"\n\
         [tenants.vendor]\nkind = \"local\"\n",
        d = dir.path().display()
    );
    let p = problems(&text);
    assert_has(&p, "tenants[0].tokens[0]", "/one");
    assert_has(&p, "tenants[0].jwt_secret", "/two");
}

#[test]
fn relative_path_is_refused() {
    let p = problems(&local_tenant("a", "${file:run/secrets/x}"));
    assert_has(&p, "tenants[0].tokens[0]", "absolute path");
    let p = problems(&local_tenant("a", "${file:}"));
    assert_has(&p, "tenants[0].tokens[0]", "absolute path");
}

#[cfg(unix)]
#[test]
fn file_others_may_read_is_refused_and_group_read_accepted() {
    let dir = tempfile::tempdir().unwrap();
    // World-readable (a Kubernetes Secret volume's default 0644, a Docker secret's 0444):
    // refused as the token file of issue 15 is, with the fix named.
    for mode in [0o644, 0o604, 0o444, 0o606] {
        let path = secret_file(dir.path(), "open", format!("{TOKEN}\n").as_bytes(), mode);
        let p = token_from_file(&path).unwrap_err().problems;
        assert_eq!(p.len(), 1, "{mode:o}: {p:?}");
        assert_eq!(p[0].key_path, "tenants[0].tokens[0]");
        let m = &p[0].message;
        assert!(m.contains(&format!("{mode:04o}")), "{m}");
        assert!(m.contains("others may read"), "{m}");
        assert!(m.contains("chmod 600"), "{m}");
        assert!(m.contains(&path.display().to_string()), "{m}");
        assert!(!m.contains(TOKEN), "the secret is echoed: {m}");
    }
    // Group-writable: refused too.
    let path = secret_file(dir.path(), "gw", TOKEN.as_bytes(), 0o620);
    let p = token_from_file(&path).unwrap_err().problems;
    assert_has(&p, "tenants[0].tokens[0]", "group may write");
    // Group-readable: what Kubernetes mounts with fsGroup (0400 becomes 0440). Accepted.
    for mode in [0o400, 0o600, 0o440, 0o640] {
        let path = secret_file(dir.path(), "ok", TOKEN.as_bytes(), mode);
        let c = token_from_file(&path).unwrap_or_else(|e| panic!("{mode:o}: {e}"));
        assert_eq!(c.tenants[0].tokens[0].expose(), TOKEN);
    }
}

#[test]
fn file_value_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    // A keyword key fed from a file: its unknown value must not appear in the message.
    let path = secret_file(dir.path(), "v", b"leaky-file-value\n", 0o600);
    let text = format!(
        "{}on_vendor_unavailable = \"${{file:{}}}\"\n",
        local_tenant("a", TOKEN).replace("[tenants.vendor]\nkind = \"local\"\n", ""),
        path.display()
    ) + "[tenants.vendor]\nkind = \"local\"\n";
    let p = problems(&text);
    assert_has(&p, "tenants[0].on_vendor_unavailable", "unknown value");
    let all = ConfigError { problems: p }.to_string();
    assert!(!all.contains("leaky-file-value"), "{all}");
    // Too short a token from a file: named by path, not shown.
    let short = secret_file(dir.path(), "short", b"short-secret\n", 0o600);
    let all = token_from_file(&short).unwrap_err().to_string();
    assert!(all.contains("too short"), "{all}");
    assert!(!all.contains("short-secret"), "{all}");
}

#[test]
fn oversized_and_binary_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = secret_file(dir.path(), "big", &vec![b'a'; 65 * 1024], 0o600);
    let p = token_from_file(&big).unwrap_err().problems;
    assert_has(&p, "tenants[0].tokens[0]", "larger than 64 KiB");
    let bin = secret_file(dir.path(), "bin", &[0xff, 0xfe, 0x00, 0x41], 0o600);
    let p = token_from_file(&bin).unwrap_err().problems;
    assert_has(&p, "tenants[0].tokens[0]", "not UTF-8");
}

// ---- [tls] ----------------------------------------------------------------------------------

#[test]
fn tls_table_takes_both_paths() {
    let text = format!(
        "[tls]\ncert = \"/etc/scim-bridge/tls.crt\"\nkey = \"/etc/scim-bridge/tls.key\"\n{}",
        local_tenant("a", TOKEN)
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.tls,
        Some(TlsConfig {
            cert: PathBuf::from("/etc/scim-bridge/tls.crt"),
            key: PathBuf::from("/etc/scim-bridge/tls.key"),
        })
    );
    assert!(!c.admin.tls, "the admin listener stays plain by default");
    assert!(c.summary().contains("HTTPS with /etc/scim-bridge/tls.crt"));
    let c = parse(&local_tenant("a", TOKEN)).unwrap();
    assert_eq!(c.tls, None);
}

#[test]
fn tls_needs_cert_and_key_together() {
    let p = problems(&format!(
        "[tls]\ncert = \"/c.pem\"\n{}",
        local_tenant("a", TOKEN)
    ));
    assert_has(&p, "tls.key", "needs both `cert` and `key`");
    let p = problems(&format!(
        "[tls]\nkey = \"/k.pem\"\n{}",
        local_tenant("a", TOKEN)
    ));
    assert_has(&p, "tls.cert", "needs both");
    let p = problems(&format!(
        "[tls]\ncert = \"/c\"\nkey = \"/k\"\nca = \"/x\"\n{}",
        local_tenant("a", TOKEN)
    ));
    assert_has(&p, "tls.ca", "unknown key");
    let p = problems(&format!("tls = \"on\"\n{}", local_tenant("a", TOKEN)));
    assert_has(&p, "tls", "expected a table");
    let p = problems(&format!(
        "[tls]\ncert = \"\"\nkey = \"/k\"\n{}",
        local_tenant("a", TOKEN)
    ));
    assert_has(&p, "tls.cert", "must not be empty");
}

#[test]
fn admin_tls_reuses_the_tls_table() {
    let text = format!(
        "[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n[admin]\ntls = true\n{}",
        local_tenant("a", TOKEN)
    );
    assert!(parse(&text).unwrap().admin.tls);
    let p = problems(&format!(
        "[admin]\ntls = true\n{}",
        local_tenant("a", TOKEN)
    ));
    assert_has(&p, "admin.tls", "add a [tls] table");
    let p = problems(&format!(
        "[admin]\ntls = \"yes\"\n{}",
        local_tenant("a", TOKEN)
    ));
    assert_has(&p, "admin.tls", "true or false");
}

#[test]
fn tls_paths_may_come_from_env() {
    let text = format!(
        "[tls]\ncert = \"${{CERT}}\"\nkey = \"${{KEY}}\"\n{}",
        local_tenant("a", TOKEN)
    );
    let c =
        Config::from_toml_str(&text, &env_of(&[("CERT", "/c.pem"), ("KEY", "/k.pem")])).unwrap();
    assert_eq!(c.tls.unwrap().key, PathBuf::from("/k.pem"));
}
