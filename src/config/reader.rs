//! The walk over the `toml::Value` tree: key paths, `${ENV}` expansion, unknown-key detection,
//! and every per-key rule. Problems are collected, never returned early, so that `config check`
//! lists all of them at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::engine::sweep::DORMANT_DAYS;
use toml::{Table, Value};

use super::{
    default_listen, AdminConfig, AuditConfig, Config, ConfigError, MetabaseAuth,
    OnVendorUnavailable, PersonKey, Problem, ReportConfig, RequestLimits, RoleRule, RoleRules,
    Secret, SisenseApiVersion, SisenseDeprovision, SisenseMode, SweepConfig, TableauAuth,
    TableauAuthSetting, TableauDeprovision, TableauFlavor, TenantConfig, TenantId,
    ThoughtspotAccountType, ThoughtspotAuth, ThoughtspotOrgGroups, TlsConfig, Url, VendorConfig,
    DEFAULT_BODY_LIMIT, DEFAULT_TABLEAU_API_VERSION, DEFAULT_THOUGHTSPOT_TOKEN_VALIDITY_S,
};

const TOP_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "body_limit",
    "limits",
    "trusted_proxies",
    "jwt_max_lifetime",
    "admin",
    "audit",
    "report",
    "tenants",
    "tls",
];
const ADMIN_KEYS: &[&str] = &["listen", "tokens", "metrics_token", "tls"];
const TLS_KEYS: &[&str] = &["cert", "key"];
/// The largest `${file:…}` secret read: a secret file holds one value, and a path such as
/// `/dev/zero` must not be read for ever.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;
const AUDIT_KEYS: &[&str] = &["retention"];
const REPORT_KEYS: &[&str] = &["person_key"];
const SWEEP_KEYS: &[&str] = &["days", "apply", "include_unmanaged", "every"];
const LIMITS_KEYS: &[&str] = &[
    "body_read_timeout",
    "request_timeout",
    "tenant_concurrency",
    "auth_failure_limit",
    "tenant_rate",
    "tenant_burst",
];
const TENANT_KEYS: &[&str] = &[
    "id",
    "tokens",
    "jwt_secret",
    "vendor",
    "roles",
    "on_vendor_unavailable",
    "attributes",
    "dry_run",
    "sweep",
];
const ROLES_KEYS: &[&str] = &["default", "rules"];
const RULE_KEYS: &[&str] = &["group", "role"];
const MIN_JWT_SECRET_CHARS: usize = 16;
const MIN_BODY_LIMIT: u64 = 1024;
const MAX_BODY_LIMIT: u64 = 1024 * 1024 * 1024;

/// The keys each vendor kind accepts (CONTRACT §3). A key of another kind is reported as such,
/// so that e.g. a Tableau `pat_name` left in a Sisense tenant does not read as a mere typo.
const VENDOR_KEYS: &[(&str, &[&str])] = &[
    ("local", &["kind"]),
    (
        "sisense",
        &[
            "kind",
            "base_url",
            "username",
            "password",
            "api_version",
            "mode",
            "scim_token",
            "deprovision",
        ],
    ),
    (
        "tableau",
        &[
            "kind",
            "base_url",
            "site",
            "api_version",
            "pat_name",
            "pat_secret",
            "client_id",
            "secret_id",
            "secret_value",
            "username",
            "deprovision",
            "flavor",
            "auth_setting",
        ],
    ),
    (
        "thoughtspot",
        &[
            "kind",
            "base_url",
            "username",
            "password",
            "secret_key",
            "org_id",
            "token_validity_s",
            "org_group_pattern",
            "create_orgs",
            "account_type",
        ],
    ),
    (
        "metabase",
        &["kind", "base_url", "api_key", "username", "password"],
    ),
];

pub(super) fn read(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let table: Table = match text.parse::<Table>() {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigError {
                problems: vec![syntax_problem(text, &e)],
            })
        }
    };
    let mut reader = Reader {
        env,
        problems: Vec::new(),
    };
    let mut table = table;
    let config = reader.config(&table);
    // The parsed values include literal secrets: zero them before the tree is freed.
    wipe_strings(&mut table);
    match config {
        Some(config) if reader.problems.is_empty() => Ok(config),
        _ => {
            if reader.problems.is_empty() {
                // Every `None` above is paired with a problem; this is a guard, not a path.
                reader.problem("", "invalid configuration");
            }
            Err(ConfigError {
                problems: reader.problems,
            })
        }
    }
}

/// The value of `${file:path}`: the file's text less ONE trailing newline (`\n` or `\r\n`, as
/// `echo` and editors leave one; a second is kept, it is then part of the value). The message of
/// an error names the file and never its content; a file that others may read is refused (see
/// [`super::secret_file_mode_problem`]).
fn read_secret_file(file: &str) -> Result<String, String> {
    use std::io::Read;
    let path = std::path::Path::new(file);
    if !path.is_absolute() {
        return Err(format!(
            "`${{file:{file}}}`: the secret file needs an absolute path, e.g. `${{file:/run/secrets/scim-token}}`"
        ));
    }
    let cannot = |e: std::io::Error| format!("cannot read the secret file {file}: {e}");
    let f = std::fs::File::open(path).map_err(cannot)?;
    let meta = f.metadata().map_err(cannot)?;
    if meta.is_dir() {
        return Err(format!(
            "cannot read the secret file {file}: it is a directory"
        ));
    }
    if let Some(problem) = super::secret_file_mode_problem(path, &meta) {
        return Err(problem);
    }
    let mut bytes = Vec::new();
    f.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        bytes.iter_mut().for_each(|b| *b = 0);
        return Err(format!(
            "the secret file {file} is larger than {} KiB; it must hold the one secret value",
            MAX_SECRET_FILE_BYTES / 1024
        ));
    }
    let mut text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let mut bytes = e.into_bytes();
            bytes.iter_mut().for_each(|b| *b = 0);
            return Err(format!("the secret file {file} is not UTF-8 text"));
        }
    };
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    Ok(text)
}

fn wipe_strings(table: &mut Table) {
    fn wipe(v: &mut Value) {
        match v {
            Value::String(s) => drop(Secret(std::mem::take(s))),
            Value::Array(items) => items.iter_mut().for_each(wipe),
            Value::Table(t) => t.iter_mut().for_each(|(_, v)| wipe(v)),
            _ => {}
        }
    }
    table.iter_mut().for_each(|(_, v)| wipe(v));
}

/// Only the parser's message and the position: `toml`'s `Display` would quote the offending
/// source line, which may hold a literal secret.
fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    let msg = e
        .message()
        .trim()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let message = match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("TOML syntax error at line {line}, column {column}: {msg}")
        }
        None => format!("TOML syntax error: {msg}"),
    };
    Problem {
        key_path: String::new(),
        message,
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A string value after `${ENV}` / `${file:…}` expansion. `from_env` (set for a value that took
/// anything from the environment or from a file) values are never echoed in messages.
struct Text {
    value: String,
    from_env: bool,
}

/// The outcome of reading one optional key: absent, present but wrong (a problem was recorded),
/// or a value.
enum Got<T> {
    Absent,
    Bad,
    Val(T),
}

impl<T> Got<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Got<U> {
        match self {
            Got::Absent => Got::Absent,
            Got::Bad => Got::Bad,
            Got::Val(v) => Got::Val(f(v)),
        }
    }
    fn is_present(&self) -> bool {
        !matches!(self, Got::Absent)
    }
}

struct Reader<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
}

fn join(base: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if base.is_empty() {
        key
    } else {
        format!("{base}.{key}")
    }
}

fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggestion(key: &str, allowed: &[&str]) -> String {
    let lower = key.to_ascii_lowercase();
    let best = allowed
        .iter()
        .map(|a| (levenshtein(&lower, a), *a))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, a)) if d <= (a.len() / 4).max(2) => format!("unknown key; did you mean `{a}`?"),
        _ => format!(
            "unknown key; expected one of {}",
            allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn type_problem(expected: &str, found: &Value) -> String {
    format!("expected {expected}, found {}", found.type_str())
}

impl Reader<'_> {
    fn problem(&mut self, key_path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key_path: key_path.into(),
            message: message.into(),
        });
    }

    /// `${NAME}` takes the environment value, `${file:/abs/path}` the file's content less one
    /// trailing newline (neither is expanded again); `$${` is a literal `${`; any other `$` is
    /// literal.
    fn expand(&mut self, raw: &str, path: &str) -> Option<Text> {
        let mut out = String::with_capacity(raw.len());
        let mut from_env = false;
        let mut ok = true;
        let mut rest = raw;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(after) = rest.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${") {
                let Some(end) = after.find('}') else {
                    self.problem(
                        path,
                        "unterminated `${`; write `${NAME}`, or `$${` for a literal `${`",
                    );
                    return None;
                };
                let name = &after[..end];
                rest = &after[end + 1..];
                if let Some(file) = name.strip_prefix("file:") {
                    match read_secret_file(file) {
                        Ok(value) => {
                            out.push_str(&value);
                            drop(Secret(value));
                            from_env = true;
                        }
                        Err(message) => {
                            self.problem(path, message);
                            ok = false;
                        }
                    }
                    continue;
                }
                if !is_env_name(name) {
                    self.problem(
                        path,
                        "`${...}` must hold an environment variable name (letters, digits, `_`) or `file:/path`; write `$${` for a literal `${`",
                    );
                    ok = false;
                    continue;
                }
                match (self.env)(name) {
                    Some(value) => {
                        out.push_str(&value);
                        from_env = true;
                    }
                    None => {
                        self.problem(path, format!("environment variable `{name}` is not set"));
                        ok = false;
                    }
                }
            } else {
                out.push('$');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        ok.then_some(Text {
            value: out,
            from_env,
        })
    }

    fn unknown_keys(&mut self, table: &Table, base: &str, allowed: &[&str]) {
        for key in table.keys() {
            if !allowed.contains(&key.as_str()) {
                let msg = suggestion(key, allowed);
                self.problem(join(base, key), msg);
            }
        }
    }

    fn text(&mut self, table: &Table, key: &str, base: &str) -> Got<Text> {
        let path = join(base, key);
        match table.get(key) {
            None => Got::Absent,
            Some(Value::String(s)) => match self.expand(s, &path) {
                Some(t) => Got::Val(t),
                None => Got::Bad,
            },
            Some(other) => {
                self.problem(path, type_problem("a string", other));
                Got::Bad
            }
        }
    }

    fn missing(&mut self, table_path: &str, key: &str) {
        self.problem(join(table_path, key), "required key is missing");
    }

    /// A non-empty, non-secret string.
    fn plain(&mut self, table: &Table, key: &str, base: &str) -> Got<String> {
        match self.text(table, key, base) {
            Got::Val(t) if t.value.trim().is_empty() => {
                self.problem(join(base, key), "must not be empty");
                Got::Bad
            }
            other => other.map(|t| t.value),
        }
    }

    fn required_plain(&mut self, table: &Table, key: &str, base: &str) -> Option<String> {
        match self.plain(table, key, base) {
            Got::Val(v) => Some(v),
            Got::Absent => {
                self.missing(base, key);
                None
            }
            Got::Bad => None,
        }
    }

    fn secret(&mut self, table: &Table, key: &str, base: &str) -> Got<Secret> {
        match self.text(table, key, base) {
            Got::Val(t) if t.value.is_empty() => {
                self.problem(join(base, key), "secret is empty");
                Got::Bad
            }
            other => other.map(|t| Secret(t.value)),
        }
    }

    fn required_secret(&mut self, table: &Table, key: &str, base: &str) -> Option<Secret> {
        match self.secret(table, key, base) {
            Got::Val(v) => Some(v),
            Got::Absent => {
                self.missing(base, key);
                None
            }
            Got::Bad => None,
        }
    }

    /// One of a fixed set of keywords, or `T::default()` when absent.
    fn choice<T: Copy + Default>(
        &mut self,
        table: &Table,
        key: &str,
        base: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        match self.text(table, key, base) {
            Got::Absent => Some(T::default()),
            Got::Bad => None,
            Got::Val(t) => {
                if let Some((_, v)) = choices.iter().find(|(name, _)| *name == t.value) {
                    return Some(*v);
                }
                let expected = choices
                    .iter()
                    .map(|(n, _)| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                let msg = if t.from_env {
                    format!("unknown value; expected {expected}")
                } else {
                    format!("unknown value `{}`; expected {expected}", t.value)
                };
                self.problem(join(base, key), msg);
                None
            }
        }
    }

    /// An array of static bearer tokens at `path` (`tenants[N].tokens`, `admin.tokens`): each
    /// at least `MIN_STATIC_TOKEN_CHARS` long. The tokens with their index; whether every item
    /// was good; whether any was given.
    fn token_list(&mut self, t: &Table, path: &str) -> (Vec<(usize, Secret)>, bool, bool) {
        let key = path.rsplit('.').next().unwrap_or(path);
        let mut tokens = Vec::new();
        let mut tokens_ok = true;
        let mut tokens_given = false;
        match t.get(key) {
            None => {}
            Some(Value::Array(items)) => {
                tokens_given = !items.is_empty();
                for (k, item) in items.iter().enumerate() {
                    let item_path = index(path, k);
                    match item {
                        Value::String(raw) => match self.expand(raw, &item_path) {
                            Some(text) if text.value.is_empty() => {
                                self.problem(item_path, "token is empty");
                                tokens_ok = false;
                            }
                            Some(text)
                                if text.value.chars().count() < super::MIN_STATIC_TOKEN_CHARS =>
                            {
                                self.problem(
                                    item_path,
                                    format!(
                                        "token is too short: a static token must be at least {} characters long (generate one with `openssl rand -hex 32`)",
                                        super::MIN_STATIC_TOKEN_CHARS
                                    ),
                                );
                                tokens_ok = false;
                            }
                            Some(text) => tokens.push((k, Secret(text.value))),
                            None => tokens_ok = false,
                        },
                        other => {
                            self.problem(item_path, type_problem("a string", other));
                            tokens_ok = false;
                        }
                    }
                }
            }
            Some(Value::String(_)) => {
                self.problem(
                    path,
                    "expected an array of strings, e.g. tokens = [\"${SCIM_TOKEN}\"]",
                );
                tokens_ok = false;
                tokens_given = true;
            }
            Some(other) => {
                self.problem(path, type_problem("an array of strings", other));
                tokens_ok = false;
                tokens_given = true;
            }
        }
        (tokens, tokens_ok, tokens_given)
    }

    /// A boolean at `base.key`, `default` when absent.
    fn boolean(&mut self, t: &Table, key: &str, base: &str, default: bool) -> Option<bool> {
        match t.get(key) {
            None => Some(default),
            Some(Value::Boolean(b)) => Some(*b),
            Some(other) => {
                self.problem(join(base, key), type_problem("true or false", other));
                None
            }
        }
    }

    /// `[admin]`: the admin listener, its tokens (strong, none a tenant's), the metrics token.
    fn admin(
        &mut self,
        top: &Table,
        tenant_tokens: &HashMap<[u8; 32], (usize, String)>,
    ) -> Option<AdminConfig> {
        let mut out = AdminConfig::default();
        let t = match self.sub_table(top, "admin", "") {
            Got::Absent => return Some(out),
            Got::Bad => return None,
            Got::Val(t) => t,
        };
        self.unknown_keys(t, "admin", ADMIN_KEYS);
        let mut ok = true;
        match self.text(t, "listen", "admin") {
            Got::Absent => {}
            Got::Bad => ok = false,
            Got::Val(v) => match v.value.trim().parse::<SocketAddr>() {
                Ok(addr) => out.listen = addr,
                Err(_) => {
                    self.problem(
                        "admin.listen",
                        "not a socket address; expected IP:PORT such as 127.0.0.1:9090",
                    );
                    ok = false;
                }
            },
        }
        let (tokens, tokens_ok, _) = self.token_list(t, "admin.tokens");
        ok &= tokens_ok;
        for (k, token) in &tokens {
            let hash: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
            if let Some((_, tenant_path)) = tenant_tokens.get(&hash) {
                // A tenant token is never an admin token (CONTRACT §5): an IdP's credential
                // must not open the console.
                self.problem(
                    index("admin.tokens", *k),
                    format!("the same token is configured at {tenant_path}; an admin token must not be a tenant's token"),
                );
                ok = false;
            }
        }
        out.tokens = tokens.into_iter().map(|(_, s)| s).collect();
        match self.secret(t, "metrics_token", "admin") {
            Got::Val(s) if s.expose().chars().count() < super::MIN_STATIC_TOKEN_CHARS => {
                self.problem(
                    "admin.metrics_token",
                    format!(
                        "token is too short: at least {} characters",
                        super::MIN_STATIC_TOKEN_CHARS
                    ),
                );
                ok = false;
            }
            Got::Val(s) => out.metrics_token = Some(s),
            Got::Absent => {}
            Got::Bad => ok = false,
        }
        match self.boolean(t, "tls", "admin", false) {
            Some(b) => out.tls = b,
            None => ok = false,
        }
        ok.then_some(out)
    }

    /// `[audit]`: retention.
    fn audit(&mut self, top: &Table) -> Option<AuditConfig> {
        let t = match self.sub_table(top, "audit", "") {
            Got::Absent => return Some(AuditConfig::default()),
            Got::Bad => return None,
            Got::Val(t) => t,
        };
        self.unknown_keys(t, "audit", AUDIT_KEYS);
        match self.text(t, "retention", "audit") {
            Got::Absent => Some(AuditConfig::default()),
            Got::Bad => None,
            Got::Val(v) => {
                let d = self.duration(&v.value, "audit.retention")?;
                if d < std::time::Duration::from_secs(24 * 3600) {
                    self.problem("audit.retention", "must be at least 1d");
                    return None;
                }
                Some(AuditConfig { retention: Some(d) })
            }
        }
    }

    /// `[report]`: the access review's person key.
    fn report(&mut self, top: &Table) -> Option<ReportConfig> {
        let t = match self.sub_table(top, "report", "") {
            Got::Absent => return Some(ReportConfig::default()),
            Got::Bad => return None,
            Got::Val(t) => t,
        };
        self.unknown_keys(t, "report", REPORT_KEYS);
        let person_key = self.choice(t, "person_key", "report", PersonKey::CHOICES)?;
        Some(ReportConfig { person_key })
    }

    /// `[tenants.sweep]`: the scheduled dormant-account sweep.
    fn sweep(&mut self, t: &Table, base: &str) -> Option<Option<SweepConfig>> {
        let t = match self.sub_table(t, "sweep", base) {
            Got::Absent => return Some(None),
            Got::Bad => return None,
            Got::Val(t) => t,
        };
        let base = join(base, "sweep");
        self.unknown_keys(t, &base, SWEEP_KEYS);
        let days = match t.get("days") {
            Some(Value::Integer(n))
                if u32::try_from(*n).is_ok_and(|d| DORMANT_DAYS.contains(&d)) =>
            {
                Some(*n as u32)
            }
            None => {
                self.problem(
                    join(&base, "days"),
                    "required: the days without a sign-in after which an account is dormant",
                );
                None
            }
            Some(other) => {
                self.problem(
                    join(&base, "days"),
                    type_problem(
                        &format!(
                            "an integer from {} to {}",
                            DORMANT_DAYS.start(),
                            DORMANT_DAYS.end()
                        ),
                        other,
                    ),
                );
                None
            }
        };
        let apply = self.boolean(t, "apply", &base, false);
        let include_unmanaged = self.boolean(t, "include_unmanaged", &base, false);
        let every = match self.text(t, "every", &base) {
            Got::Absent => Some(super::DEFAULT_SWEEP_EVERY),
            Got::Bad => None,
            Got::Val(v) => {
                let path = join(&base, "every");
                match self.duration(&v.value, &path) {
                    Some(d) if d >= std::time::Duration::from_secs(60) => Some(d),
                    Some(_) => {
                        self.problem(path, "must be at least 1m");
                        None
                    }
                    None => None,
                }
            }
        };
        Some(Some(SweepConfig {
            days: days?,
            apply: apply?,
            include_unmanaged: include_unmanaged?,
            every: every?,
        }))
    }

    fn sub_table<'t>(&mut self, table: &'t Table, key: &str, base: &str) -> Got<&'t Table> {
        match table.get(key) {
            None => Got::Absent,
            Some(Value::Table(t)) => Got::Val(t),
            Some(other) => {
                self.problem(join(base, key), type_problem("a table", other));
                Got::Bad
            }
        }
    }

    fn config(&mut self, top: &Table) -> Option<Config> {
        self.unknown_keys(top, "", TOP_KEYS);

        let listen = match self.text(top, "listen", "") {
            Got::Absent => Some(default_listen()),
            Got::Bad => None,
            Got::Val(t) => match t.value.trim().parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.problem(
                        "listen",
                        "not a socket address; expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080",
                    );
                    None
                }
            },
        };

        let data_dir = match self.plain(top, "data_dir", "") {
            Got::Absent => Some(PathBuf::from("./data")),
            Got::Bad => None,
            Got::Val(v) => Some(PathBuf::from(v)),
        };

        let body_limit_bytes = self.body_limit(top);
        let limits = self.limits(top);
        let trusted_proxies = self.trusted_proxies(top);
        let jwt_max_lifetime = match self.text(top, "jwt_max_lifetime", "") {
            Got::Absent => Some(super::DEFAULT_JWT_MAX_LIFETIME),
            Got::Bad => None,
            Got::Val(t) => self.duration(&t.value, "jwt_max_lifetime"),
        };

        let mut tenants = Vec::new();
        let mut all_tenants_ok = true;
        let mut seen_ids: HashMap<TenantId, usize> = HashMap::new();
        let mut seen_tokens: HashMap<[u8; 32], (usize, String)> = HashMap::new();
        match top.get("tenants") {
            None => self.problem("tenants", "at least one [[tenants]] table is required"),
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    self.problem("tenants", "at least one [[tenants]] table is required");
                }
                for (i, item) in items.iter().enumerate() {
                    let base = index("tenants", i);
                    let Value::Table(t) = item else {
                        self.problem(&base, type_problem("a table ([[tenants]])", item));
                        all_tenants_ok = false;
                        continue;
                    };
                    let parts = self.tenant(t, &base);
                    if let Some(id) = &parts.id {
                        if let Some(first) = seen_ids.get(id) {
                            self.problem(
                                join(&base, "id"),
                                format!(
                                    "duplicate tenant id `{id}` (already used by tenants[{first}])"
                                ),
                            );
                        } else {
                            seen_ids.insert(id.clone(), i);
                        }
                    }
                    // A token shared by two tenants would open both; CONTRACT §2 says a token
                    // of tenant A on tenant B's path is a 401.
                    for (k, token) in &parts.tokens {
                        let hash: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
                        let path = index(&join(&base, "tokens"), *k);
                        match seen_tokens.get(&hash) {
                            Some((owner, first_path)) if *owner != i => {
                                let msg = format!(
                                    "the same token is also configured at {first_path}; a token must belong to one tenant only"
                                );
                                self.problem(path, msg);
                            }
                            Some(_) => {}
                            None => {
                                seen_tokens.insert(hash, (i, path));
                            }
                        }
                    }
                    if let Some(tenant) = &parts.tenant {
                        self.shared_pat(&tenants, tenant, &base);
                    }
                    match parts.tenant {
                        Some(tenant) => tenants.push(tenant),
                        None => all_tenants_ok = false,
                    }
                }
            }
            Some(Value::Table(_)) => self.problem(
                "tenants",
                "expected an array of tables: write [[tenants]], not [tenants]",
            ),
            Some(other) => self.problem("tenants", type_problem("an array of tables", other)),
        }

        let admin = self.admin(top, &seen_tokens);
        let audit = self.audit(top);
        let report = self.report(top);
        let tls = self.tls(top);
        if let (Some(a), Some(None)) = (&admin, &tls) {
            if a.tls {
                self.problem(
                    "admin.tls",
                    "the admin listener's HTTPS uses the [tls] cert and key: add a [tls] table, or set admin.tls = false",
                );
            }
        }

        if !all_tenants_ok || tenants.is_empty() {
            return None;
        }
        Some(Config {
            listen: listen?,
            data_dir: data_dir?,
            tenants,
            body_limit_bytes: body_limit_bytes?,
            limits: limits?,
            trusted_proxies: trusted_proxies?,
            jwt_max_lifetime: jwt_max_lifetime?,
            admin: admin?,
            audit: audit?,
            report: report?,
            tls: tls?,
        })
    }

    /// `[tls]`: `cert` and `key`, both or neither. Only the paths are read here; the files are
    /// loaded and checked (PEM, key matches certificate) by `server::tls`, at start, by
    /// `config check`, and on every reload.
    fn tls(&mut self, top: &Table) -> Option<Option<TlsConfig>> {
        let t = match self.sub_table(top, "tls", "") {
            Got::Absent => return Some(None),
            Got::Bad => return None,
            Got::Val(t) => t,
        };
        self.unknown_keys(t, "tls", TLS_KEYS);
        let cert = self.plain(t, "cert", "tls");
        let key = self.plain(t, "key", "tls");
        match (cert, key) {
            (Got::Val(cert), Got::Val(key)) => Some(Some(TlsConfig {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            })),
            (cert, key) => {
                for (name, present) in [("cert", cert.is_present()), ("key", key.is_present())] {
                    if !present {
                        self.problem(
                            join("tls", name),
                            "required key is missing: [tls] needs both `cert` and `key` (PEM files)",
                        );
                    }
                }
                None
            }
        }
    }

    /// A duration such as `"30s"`, `"90d"` (the `token issue --ttl` forms).
    fn duration(&mut self, text: &str, path: &str) -> Option<std::time::Duration> {
        match crate::auth::parse_ttl(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(path, e.replace("TTL", "duration"));
                None
            }
        }
    }

    /// `[limits]`: every key optional, with the defaults of [`RequestLimits`].
    fn limits(&mut self, top: &Table) -> Option<RequestLimits> {
        let mut out = RequestLimits::default();
        let t = match self.sub_table(top, "limits", "") {
            Got::Absent => return Some(out),
            Got::Bad => return None,
            Got::Val(t) => t,
        };
        self.unknown_keys(t, "limits", LIMITS_KEYS);
        let mut ok = true;
        for (key, slot) in [
            ("body_read_timeout", &mut out.body_read_timeout),
            ("request_timeout", &mut out.request_timeout),
        ] {
            let path = join("limits", key);
            match self.text(t, key, "limits") {
                Got::Absent => {}
                Got::Bad => ok = false,
                Got::Val(v) => match self.duration(&v.value, &path) {
                    Some(d) => *slot = d,
                    None => ok = false,
                },
            }
        }
        if out.body_read_timeout > out.request_timeout {
            self.problem(
                "limits.body_read_timeout",
                "must not be longer than limits.request_timeout, which covers the body too",
            );
            ok = false;
        }
        match t.get("tenant_concurrency") {
            None => {}
            Some(Value::Integer(n)) if (1..=100_000).contains(n) => {
                out.tenant_concurrency = *n as usize
            }
            Some(other) => {
                self.problem(
                    "limits.tenant_concurrency",
                    type_problem("an integer from 1 to 100000", other),
                );
                ok = false;
            }
        }
        match t.get("auth_failure_limit") {
            None => {}
            Some(Value::Integer(n)) if (0..=1_000_000).contains(n) => {
                out.auth_failure_limit = *n as u32
            }
            Some(other) => {
                self.problem(
                    "limits.auth_failure_limit",
                    type_problem("an integer from 0 (off) to 1000000", other),
                );
                ok = false;
            }
        }
        // Requests per second, sustained, and the bucket: integers, since a SCIM client's
        // pace is tens per second (Okta; Entra's gallery floor is 25/s per tenant), never a
        // fraction. Above a million the number is a typo, not a limit.
        for (key, slot, expected) in [
            (
                "tenant_rate",
                &mut out.tenant_rate,
                "an integer from 0 (off) to 1000000 (requests per second)",
            ),
            (
                "tenant_burst",
                &mut out.tenant_burst,
                "an integer from 1 to 1000000 (requests; default twice tenant_rate)",
            ),
        ] {
            let least = if key == "tenant_burst" { 1 } else { 0 };
            match t.get(key) {
                None => {}
                Some(Value::Integer(n)) if (least..=1_000_000).contains(n) => *slot = *n as u32,
                Some(Value::Integer(n)) => {
                    self.problem(
                        join("limits", key),
                        format!("expected {expected}, found {n}"),
                    );
                    ok = false;
                }
                Some(other) => {
                    self.problem(join("limits", key), type_problem(expected, other));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// `trusted_proxies`: addresses (`10.0.0.1`) or networks (`10.0.0.0/8`, `fd00::/8`).
    fn trusted_proxies(&mut self, top: &Table) -> Option<Vec<ipnet::IpNet>> {
        let items = match top.get("trusted_proxies") {
            None => return Some(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.problem(
                    "trusted_proxies",
                    type_problem("an array of addresses or networks", other),
                );
                return None;
            }
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index("trusted_proxies", i);
            let Value::String(s) = item else {
                self.problem(path, type_problem("a string such as \"10.0.0.0/8\"", item));
                ok = false;
                continue;
            };
            let s = s.trim();
            let net = s
                .parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from));
            match net {
                Some(n) => out.push(n.trunc()),
                None => {
                    self.problem(
                        path,
                        format!("`{s}` is not an IP address or network (e.g. 10.0.0.0/8, 127.0.0.1, fd00::/8)"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// Tableau allows one session per personal access token: a sign-in ends the PAT's other
    /// session [reference A.2]. Two tenants on the same server with one PAT would sign each
    /// other out on every request, so the config says so instead.
    fn shared_pat(&mut self, earlier: &[TenantConfig], tenant: &TenantConfig, base: &str) {
        let VendorConfig::Tableau {
            base_url,
            auth: TableauAuth::Pat { name, secret },
            ..
        } = &tenant.vendor
        else {
            return;
        };
        // The same token is the same name and secret: PAT names are unique per user only.
        let clash = earlier.iter().find(|t| {
            matches!(&t.vendor, VendorConfig::Tableau {
                base_url: other_url,
                auth: TableauAuth::Pat { name: other, secret: other_secret },
                ..
            } if other == name && other_secret.expose() == secret.expose()
                && other_url.host_str() == base_url.host_str()
                && other_url.port_or_known_default() == base_url.port_or_known_default())
        });
        if let Some(first) = clash {
            self.problem(
                join(&join(base, "vendor"), "pat_name"),
                format!(
                    "tenant `{}` signs in to the same Tableau with the personal access token `{name}`; Tableau keeps one session per PAT, so the two tenants would sign each other out: give each its own PAT, or use a connected app",
                    first.id
                ),
            );
        }
    }

    fn body_limit(&mut self, top: &Table) -> Option<usize> {
        let bytes = match top.get("body_limit") {
            None => return Some(DEFAULT_BODY_LIMIT),
            Some(Value::Integer(n)) => u64::try_from(*n).ok(),
            Some(Value::String(_)) => match self.text(top, "body_limit", "") {
                Got::Val(t) => parse_size(&t.value),
                _ => return None,
            },
            Some(other) => {
                self.problem(
                    "body_limit",
                    type_problem(
                        "a size in bytes (integer) or a string such as \"2 MiB\"",
                        other,
                    ),
                );
                return None;
            }
        };
        match bytes {
            Some(n) if (MIN_BODY_LIMIT..=MAX_BODY_LIMIT).contains(&n) => usize::try_from(n).ok(),
            Some(_) => {
                self.problem("body_limit", "must be between 1 KiB and 1 GiB");
                None
            }
            None => {
                self.problem(
                    "body_limit",
                    "not a size; expected bytes (1048576) or a number with a unit (B, KiB, MiB, GiB, KB, MB, GB)",
                );
                None
            }
        }
    }

    fn tenant(&mut self, t: &Table, base: &str) -> TenantParts {
        self.unknown_keys(t, base, TENANT_KEYS);

        let id = match self.text(t, "id", base) {
            Got::Absent => {
                self.missing(base, "id");
                None
            }
            Got::Bad => None,
            Got::Val(text) => match TenantId::parse(&text.value) {
                Ok(id) => Some(id),
                Err(msg) => {
                    let msg = if text.from_env {
                        "not a valid tenant id: use 1 to 63 characters from a-z, 0-9 and `-`"
                            .to_string()
                    } else {
                        msg
                    };
                    self.problem(join(base, "id"), msg);
                    None
                }
            },
        };

        let tokens_path = join(base, "tokens");
        let (tokens, tokens_ok, tokens_given) = self.token_list(t, &tokens_path);

        let jwt_secret = match self.secret(t, "jwt_secret", base) {
            Got::Val(s) if s.expose().chars().count() < MIN_JWT_SECRET_CHARS => {
                self.problem(
                    join(base, "jwt_secret"),
                    format!("must be at least {MIN_JWT_SECRET_CHARS} characters long (it is an HS256 signing key)"),
                );
                Got::Bad
            }
            other => other,
        };
        if !tokens_given && !jwt_secret.is_present() {
            self.problem(
                base,
                "a tenant needs `tokens`, `jwt_secret`, or both, so that its IdP can authenticate",
            );
        }

        let vendor = match self.sub_table(t, "vendor", base) {
            Got::Val(v) => self.vendor(v, &join(base, "vendor")),
            Got::Absent => {
                self.problem(
                    join(base, "vendor"),
                    "required table is missing; add [tenants.vendor] with `kind = \"local\"` or a vendor",
                );
                None
            }
            Got::Bad => None,
        };

        let roles = match self.sub_table(t, "roles", base) {
            Got::Val(r) => self.roles(r, &join(base, "roles")),
            Got::Absent => Some(RoleRules::default()),
            Got::Bad => None,
        };

        let on_vendor_unavailable = self.choice(
            t,
            "on_vendor_unavailable",
            base,
            OnVendorUnavailable::CHOICES,
        );

        let attributes = match self.sub_table(t, "attributes", base) {
            Got::Val(a) => self.attributes(a, &join(base, "attributes"), vendor.as_ref()),
            Got::Absent => Some(Default::default()),
            Got::Bad => None,
        };

        let dry_run = self.boolean(t, "dry_run", base, false);
        let sweep = self.sweep(t, base);
        // Both are about a vendor's accounts; a local tenant has none.
        if matches!(vendor, Some(VendorConfig::Local)) {
            if dry_run == Some(true) {
                self.problem(
                    join(base, "dry_run"),
                    "a local tenant sends nothing to a vendor, so it has nothing to hold back",
                );
            }
            if matches!(sweep, Some(Some(_))) {
                self.problem(
                    join(base, "sweep"),
                    "a local tenant has no vendor accounts (no sign-ins) to sweep",
                );
            }
        }

        let jwt_secret = match jwt_secret {
            Got::Val(s) => Some(Some(s)),
            Got::Absent => Some(None),
            Got::Bad => None,
        };
        let tenant = (|| {
            if !tokens_ok {
                return None;
            }
            Some(TenantConfig {
                id: id.clone()?,
                tokens: tokens.iter().map(|(_, s)| s.clone()).collect(),
                jwt_secret: jwt_secret?,
                vendor: vendor?,
                roles: roles?,
                on_vendor_unavailable: on_vendor_unavailable?,
                attributes: attributes?,
                dry_run: dry_run?,
                sweep: sweep?,
            })
        })();
        TenantParts { id, tokens, tenant }
    }

    fn vendor(&mut self, t: &Table, base: &str) -> Option<VendorConfig> {
        let kind = match self.text(t, "kind", base) {
            Got::Absent => {
                self.problem(
                    join(base, "kind"),
                    "required key is missing; one of local, sisense, tableau, thoughtspot, metabase",
                );
                None
            }
            Got::Bad => None,
            Got::Val(text) => {
                let known = VENDOR_KEYS.iter().find(|(k, _)| *k == text.value);
                if known.is_none() {
                    let msg = if text.from_env {
                        "unknown vendor kind; expected one of local, sisense, tableau, thoughtspot, metabase".to_string()
                    } else {
                        format!(
                            "unknown vendor kind `{}`; expected one of local, sisense, tableau, thoughtspot, metabase",
                            text.value
                        )
                    };
                    self.problem(join(base, "kind"), msg);
                }
                known.copied()
            }
        };

        let Some((kind, allowed)) = kind else {
            // Without a kind only plain typos can be told apart from other kinds' keys.
            let mut all: Vec<&str> = VENDOR_KEYS
                .iter()
                .flat_map(|(_, k)| k.iter().copied())
                .collect();
            all.sort_unstable();
            all.dedup();
            self.unknown_keys(t, base, &all);
            return None;
        };

        for key in t.keys() {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let owners: Vec<&str> = VENDOR_KEYS
                .iter()
                .filter(|(_, keys)| keys.contains(&key.as_str()))
                .map(|(k, _)| *k)
                .collect();
            let msg = if owners.is_empty() {
                suggestion(key, allowed)
            } else {
                format!("not a {kind} setting (it belongs to {})", owners.join(", "))
            };
            self.problem(join(base, key), msg);
        }

        match kind {
            "local" => Some(VendorConfig::Local),
            "sisense" => self.sisense(t, base),
            "tableau" => self.tableau(t, base),
            "thoughtspot" => self.thoughtspot(t, base),
            "metabase" => self.metabase(t, base),
            _ => unreachable!("VENDOR_KEYS lists exactly these kinds"),
        }
    }

    fn base_url(&mut self, t: &Table, base: &str) -> Option<Url> {
        let path = join(base, "base_url");
        let text = match self.text(t, "base_url", base) {
            Got::Val(text) => text,
            Got::Absent => {
                self.missing(base, "base_url");
                return None;
            }
            Got::Bad => return None,
        };
        let mut url = match Url::parse(text.value.trim()) {
            Ok(url) => url,
            Err(e) => {
                self.problem(path, format!("not a valid URL ({e})"));
                return None;
            }
        };
        let mut ok = true;
        if url.scheme() != "http" && url.scheme() != "https" {
            self.problem(&path, "must be an http:// or https:// URL");
            ok = false;
        } else if url.host().is_none() {
            self.problem(&path, "must name a host");
            ok = false;
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.problem(
                &path,
                "must not contain a user name or password; use the vendor's credential keys",
            );
            ok = false;
        }
        if url.query().is_some() || url.fragment().is_some() {
            self.problem(&path, "must not contain a query or fragment");
            ok = false;
        }
        if !ok {
            return None;
        }
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        Some(url)
    }

    fn sisense(&mut self, t: &Table, base: &str) -> Option<VendorConfig> {
        let base_url = self.base_url(t, base);
        let username = self.required_plain(t, "username", base);
        let password = self.required_secret(t, "password", base);
        let api_version = self.choice(t, "api_version", base, SisenseApiVersion::CHOICES);
        let mode = self.choice(t, "mode", base, SisenseMode::CHOICES);
        let deprovision = self.choice(t, "deprovision", base, SisenseDeprovision::CHOICES);
        // `mode = "scim"` forwards to Sisense's own SCIM endpoint, which takes the bearer token
        // generated in Sisense Admin > Security; the REST credentials still set roles.
        let scim_token = match (mode, self.secret(t, "scim_token", base)) {
            (Some(SisenseMode::Scim), Got::Val(s)) => Some(Some(s)),
            (Some(SisenseMode::Scim), Got::Absent) => {
                self.problem(
                    join(base, "scim_token"),
                    "required with mode = \"scim\" (the SCIM bearer token from Sisense Admin > Security)",
                );
                None
            }
            (Some(SisenseMode::Rest), Got::Val(_)) => {
                self.problem(
                    join(base, "scim_token"),
                    "only used with mode = \"scim\"; remove it or set the mode",
                );
                None
            }
            (_, Got::Bad) => None,
            _ => Some(None),
        };
        Some(VendorConfig::Sisense {
            base_url: base_url?,
            username: username?,
            password: password?,
            api_version: api_version?,
            mode: mode?,
            scim_token: scim_token?,
            deprovision: deprovision?,
        })
    }

    fn tableau(&mut self, t: &Table, base: &str) -> Option<VendorConfig> {
        let base_url = self.base_url(t, base);
        // An empty `site` is the Default site on Tableau Server, so only presence is required.
        let site = match self.text(t, "site", base) {
            Got::Val(text) => Some(text.value),
            Got::Absent => {
                self.problem(
                    join(base, "site"),
                    "required key is missing; the site's contentUrl (\"\" for the Default site on Tableau Server)",
                );
                None
            }
            Got::Bad => None,
        };
        let api_version = match self.text(t, "api_version", base) {
            Got::Absent => Some(DEFAULT_TABLEAU_API_VERSION.to_string()),
            Got::Bad => None,
            Got::Val(text) => {
                if parse_api_version(&text.value).is_some() {
                    Some(text.value)
                } else {
                    self.problem(
                        join(base, "api_version"),
                        "expected a REST API version such as \"3.24\"",
                    );
                    None
                }
            }
        };
        let version = api_version.as_deref().and_then(parse_api_version);

        let deprovision = self.choice(t, "deprovision", base, TableauDeprovision::CHOICES);
        let auth_setting = if t.contains_key("auth_setting") {
            self.choice(t, "auth_setting", base, TableauAuthSetting::CHOICES)
                .map(Some)
        } else {
            Some(None)
        };
        let flavor = if t.contains_key("flavor") {
            self.choice(t, "flavor", base, TableauFlavor::CHOICES)
        } else {
            // Tableau Cloud's pods are `*.online.tableau.com` [reference A.1].
            let cloud = base_url
                .as_ref()
                .and_then(|u| u.host_str())
                .is_some_and(|h| h == "online.tableau.com" || h.ends_with(".online.tableau.com"));
            Some(if cloud {
                TableauFlavor::Cloud
            } else {
                TableauFlavor::Server
            })
        };

        const PAT: &[&str] = &["pat_name", "pat_secret"];
        const APP: &[&str] = &["client_id", "secret_id", "secret_value", "username"];
        let has_pat = PAT.iter().any(|k| t.contains_key(*k));
        let has_app = APP.iter().any(|k| t.contains_key(*k));
        let auth = match (has_pat, has_app) {
            (true, true) => {
                self.problem(
                    base,
                    "choose one Tableau sign-in: `pat_name` + `pat_secret`, or `client_id` + `secret_id` + `secret_value` + `username`, not both",
                );
                None
            }
            (false, false) => {
                self.problem(
                    base,
                    "Tableau sign-in is missing: set `pat_name` + `pat_secret`, or `client_id` + `secret_id` + `secret_value` + `username`",
                );
                None
            }
            (true, false) => {
                let name = self.required_plain(t, "pat_name", base);
                let secret = self.required_secret(t, "pat_secret", base);
                if matches!(version, Some(v) if v < (3, 6)) {
                    self.problem(
                        join(base, "api_version"),
                        "personal access tokens need REST API 3.6 or later",
                    );
                }
                name.zip(secret)
                    .map(|(name, secret)| TableauAuth::Pat { name, secret })
            }
            (false, true) => {
                let client_id = self.required_plain(t, "client_id", base);
                let secret_id = self.required_plain(t, "secret_id", base);
                let secret_value = self.required_secret(t, "secret_value", base);
                let username = self.required_plain(t, "username", base);
                if matches!(version, Some(v) if v < (3, 17)) {
                    self.problem(
                        join(base, "api_version"),
                        "connected-app (JWT) sign-in needs REST API 3.17 or later",
                    );
                }
                // Built in a closure: a `?` here must not skip the checks after this match.
                (|| {
                    Some(TableauAuth::ConnectedApp {
                        client_id: client_id?,
                        secret_id: secret_id?,
                        secret_value: secret_value?,
                        username: username?,
                    })
                })()
            }
        };
        Some(VendorConfig::Tableau {
            base_url: base_url?,
            site: site?,
            api_version: api_version?,
            auth: auth?,
            deprovision: deprovision?,
            flavor: flavor?,
            auth_setting: auth_setting?,
        })
    }

    fn thoughtspot(&mut self, t: &Table, base: &str) -> Option<VendorConfig> {
        let base_url = self.base_url(t, base);
        let username = self.required_plain(t, "username", base);
        let password = self.secret(t, "password", base);
        let secret_key = self.secret(t, "secret_key", base);
        let auth = match (password, secret_key) {
            // ThoughtSpot's OpenAPI spec and its developer guide disagree on which one wins when
            // both are sent (reference B.2), so the config must not leave it to chance.
            (p, s) if p.is_present() && s.is_present() => {
                self.problem(
                    base,
                    "set either `password` or `secret_key`, not both (ThoughtSpot's documentation disagrees on which one wins)",
                );
                None
            }
            (Got::Val(p), Got::Absent) => Some(ThoughtspotAuth::Password(p)),
            (Got::Absent, Got::Val(s)) => Some(ThoughtspotAuth::SecretKey(s)),
            (Got::Absent, Got::Absent) => {
                self.problem(
                    base,
                    "ThoughtSpot sign-in is missing: set `password` or `secret_key` (trusted authentication)",
                );
                None
            }
            _ => None,
        };
        let org_id = match t.get("org_id") {
            None => {
                self.problem(
                    join(base, "org_id"),
                    "required key is missing: the Org to provision into (0 for the Primary Org); without it ThoughtSpot picks the Org of the secret key or of the last sign-in, which may be another customer's",
                );
                None
            }
            Some(Value::Integer(n)) if *n >= 0 => Some(*n),
            Some(Value::Integer(_)) => {
                self.problem(join(base, "org_id"), "must not be negative");
                None
            }
            Some(Value::String(_)) => match self.text(t, "org_id", base) {
                Got::Val(text) => match text.value.trim().parse::<i64>() {
                    Ok(n) if n >= 0 => Some(n),
                    _ => {
                        self.problem(join(base, "org_id"), "expected a non-negative integer");
                        None
                    }
                },
                _ => None,
            },
            Some(other) => {
                self.problem(join(base, "org_id"), type_problem("an integer", other));
                None
            }
        };
        let token_validity_s = match t.get("token_validity_s") {
            None => Some(DEFAULT_THOUGHTSPOT_TOKEN_VALIDITY_S),
            // At least a minute, so that renewing ahead of expiry leaves time to work; ThoughtSpot
            // caps what it grants on its side.
            Some(Value::Integer(n)) if (60..=31_536_000).contains(n) => Some(*n as u64),
            Some(Value::Integer(_)) => {
                self.problem(
                    join(base, "token_validity_s"),
                    "must be between 60 and 31536000 seconds",
                );
                None
            }
            Some(other) => {
                self.problem(
                    join(base, "token_validity_s"),
                    type_problem("an integer (seconds)", other),
                );
                None
            }
        };
        let create_orgs = match t.get("create_orgs") {
            None => Some(false),
            Some(Value::Boolean(b)) => Some(*b),
            Some(other) => {
                self.problem(
                    join(base, "create_orgs"),
                    type_problem("true or false", other),
                );
                None
            }
        };
        let orgs = match self.plain(t, "org_group_pattern", base) {
            Got::Absent => {
                if create_orgs == Some(true) {
                    self.problem(
                        join(base, "create_orgs"),
                        "only meaningful with `org_group_pattern`",
                    );
                }
                Some(None)
            }
            Got::Bad => None,
            Got::Val(p) if p.matches('*').count() != 1 => {
                self.problem(
                    join(base, "org_group_pattern"),
                    "must hold exactly one `*`, which stands for the Org's name (e.g. \"org-*\")",
                );
                None
            }
            Got::Val(p) => {
                // Org membership and Org creation need a cluster-wide token: one for the Primary
                // Org of a cluster administrator [reference B.6].
                if org_id.is_some_and(|o| o != 0) {
                    self.problem(
                        join(base, "org_group_pattern"),
                        "Orgs driven by groups need `org_id = 0` (a Primary-Org token of a cluster administrator, which may change Org membership)",
                    );
                }
                create_orgs.map(|create| {
                    Some(ThoughtspotOrgGroups {
                        pattern: p.trim().to_string(),
                        create,
                    })
                })
            }
        };
        let account_type = if t.contains_key("account_type") {
            self.choice(t, "account_type", base, ThoughtspotAccountType::CHOICES)
                .map(Some)
        } else {
            Some(None)
        };
        Some(VendorConfig::Thoughtspot {
            base_url: base_url?,
            username: username?,
            auth: auth?,
            org_id: org_id?,
            token_validity_s: token_validity_s?,
            orgs: orgs?,
            account_type: account_type?,
        })
    }

    fn metabase(&mut self, t: &Table, base: &str) -> Option<VendorConfig> {
        let base_url = self.base_url(t, base);
        let has_key = t.contains_key("api_key");
        let has_login = t.contains_key("username") || t.contains_key("password");
        let auth = match (has_key, has_login) {
            (true, true) => {
                self.problem(
                    base,
                    "set either `api_key` or `username` + `password`, not both",
                );
                None
            }
            (false, false) => {
                self.problem(
                    base,
                    "Metabase sign-in is missing: set `api_key`, or `username` + `password`",
                );
                None
            }
            (true, false) => self
                .required_secret(t, "api_key", base)
                .map(MetabaseAuth::ApiKey),
            (false, true) => {
                let username = self.required_plain(t, "username", base);
                let password = self.required_secret(t, "password", base);
                username
                    .zip(password)
                    .map(|(username, password)| MetabaseAuth::Password { username, password })
            }
        };
        Some(VendorConfig::Metabase {
            base_url: base_url?,
            auth: auth?,
        })
    }

    /// `[tenants.attributes]`: vendor attribute name = SCIM attribute path. Only vendors that
    /// keep per-user attributes take it (ThoughtSpot formula variables, Metabase
    /// `login_attributes`).
    fn attributes(
        &mut self,
        t: &Table,
        base: &str,
        vendor: Option<&VendorConfig>,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        if let Some(v) = vendor {
            if !t.is_empty()
                && !matches!(
                    v,
                    VendorConfig::Thoughtspot { .. } | VendorConfig::Metabase { .. }
                )
            {
                self.problem(
                    base,
                    format!(
                        "a {} tenant keeps no per-user attributes; [tenants.attributes] is for ThoughtSpot formula variables and Metabase login_attributes",
                        v.kind()
                    ),
                );
                return None;
            }
        }
        let mut out = std::collections::BTreeMap::new();
        let mut ok = true;
        for key in t.keys() {
            let path = join(base, key);
            if key.trim().is_empty() {
                self.problem(path, "the vendor attribute name must not be empty");
                ok = false;
                continue;
            }
            match self.plain(t, key, base) {
                Got::Val(scim) => match crate::scim::path::attribute_path(scim.trim()) {
                    Ok(_) => {
                        out.insert(key.clone(), scim.trim().to_string());
                    }
                    Err(why) => {
                        self.problem(path, why);
                        ok = false;
                    }
                },
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn roles(&mut self, t: &Table, base: &str) -> Option<RoleRules> {
        self.unknown_keys(t, base, ROLES_KEYS);
        let default = match self.plain(t, "default", base) {
            Got::Val(v) => Some(Some(v)),
            Got::Absent => Some(None),
            Got::Bad => None,
        };
        let rules_path = join(base, "rules");
        let mut rules = Vec::new();
        let mut rules_ok = true;
        match t.get("rules") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let path = index(&rules_path, i);
                    let Value::Table(rule) = item else {
                        self.problem(
                            path,
                            type_problem(
                                "a table such as { group = \"BI Admins\", role = \"Admin\" }",
                                item,
                            ),
                        );
                        rules_ok = false;
                        continue;
                    };
                    self.unknown_keys(rule, &path, RULE_KEYS);
                    let group = match self.plain(rule, "group", &path) {
                        Got::Val(g) => Some(Some(g)),
                        Got::Absent => Some(None),
                        Got::Bad => None,
                    };
                    let role = self.required_plain(rule, "role", &path);
                    match (group, role) {
                        (Some(group), Some(role)) => rules.push(RoleRule { group, role }),
                        _ => rules_ok = false,
                    }
                }
            }
            Some(other) => {
                self.problem(rules_path, type_problem("an array of tables", other));
                rules_ok = false;
            }
        }
        if !rules_ok {
            return None;
        }
        Some(RoleRules {
            default: default?,
            rules,
        })
    }
}

struct TenantParts {
    id: Option<TenantId>,
    /// (index in `tokens`, token) for the cross-tenant uniqueness check.
    tokens: Vec<(usize, Secret)>,
    tenant: Option<TenantConfig>,
}

fn parse_api_version(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.split_once('.')?;
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// "1048576", "512 KiB", "2MiB", "1 MB": binary units for KiB/MiB/GiB (and bare K/M/G), decimal
/// for KB/MB/GB.
pub(super) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}
