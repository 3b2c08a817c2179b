//! Configuration: TOML with `${ENV}` secrets, validated into typed structs (CONTRACT §3).
//!
//! The file is read as a `toml::Value` tree and walked by hand rather than through serde derive:
//! the walk knows the key path of every value, so each problem (a typo such as `jwt_secert`, a
//! missing variable, a Tableau key in a Sisense tenant) is reported by path, and all of them are
//! collected before failing — an operator fixes a config in one round, not ten.
//!
//! Values that can be secrets live in [`Secret`], which never prints; problem messages never echo
//! a value that came from the environment, from a `${file:/path}` secret file, or from a secret
//! key.

mod reader;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use url::Url;

/// Default listen address when neither the file nor the CLI sets one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default request body limit (the optional `body_limit` key).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// The shortest static bearer token (`tokens`, `SCIM_BRIDGE_TOKEN`) accepted, in characters.
pub const MIN_STATIC_TOKEN_CHARS: usize = 32;
/// Default Tableau REST API version (the path segment `/api/{v}/`).
pub const DEFAULT_TABLEAU_API_VERSION: &str = "3.24";

/// A secret string (bearer token, password, API key, signing key).
///
/// `Debug` and `Display` print `<redacted>`; it has no `Serialize` and no `PartialEq` (comparing
/// secrets must be constant-time, see `auth`). Read it only where it is sent or hashed, via
/// [`Secret::expose`].
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value itself. Call sites are the places a secret leaves the process (a vendor
    /// sign-in, a hash, a signature) and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The value is overwritten with zeros when a `Secret` is dropped (best effort: copies made
/// before it became a `Secret`, e.g. by the TOML parser or in the environment, are not).
impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&bytes);
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A tenant id: `[a-z0-9-]+`, 1..=63 characters. It is a URL path segment
/// (`/tenants/{tenant}/scim/v2/`) and the JWT audience, so the only constructor validates it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub const MAX_LEN: usize = 63;

    pub fn parse(value: &str) -> Result<TenantId, String> {
        if value.is_empty() {
            return Err("tenant id must not be empty".into());
        }
        if value.len() > Self::MAX_LEN {
            return Err(format!(
                "tenant id is {} characters long; at most {} are allowed",
                value.len(),
                Self::MAX_LEN
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "tenant id `{value}` may contain only lower-case letters a-z, digits and `-`"
            ));
        }
        Ok(TenantId(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TenantId {
    type Err = String;
    fn from_str(s: &str) -> Result<TenantId, String> {
        TenantId::parse(s)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// As written (relative paths are relative to the working directory, as `--data-dir` is).
    pub data_dir: PathBuf,
    pub tenants: Vec<TenantConfig>,
    /// Request body limit in bytes; TOML key `body_limit` (an integer, or a string such as
    /// `"2 MiB"`).
    pub body_limit_bytes: usize,
    /// `[limits]`: request deadlines and fairness between tenants and clients.
    pub limits: RequestLimits,
    /// `trusted_proxies` (CONTRACT §3.1): the only peers whose `X-Forwarded-*` / `Forwarded`
    /// headers are honoured. Empty by default: nobody's.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `jwt_max_lifetime`: the longest `exp − iat` a tenant JWT may have, for `token issue`
    /// and validation alike (default 90 days).
    pub jwt_max_lifetime: std::time::Duration,
    /// `[admin]`: the admin listener and tokens.
    pub admin: AdminConfig,
    /// `[audit]`: retention.
    pub audit: AuditConfig,
    /// `[report]`: the access review's person key.
    pub report: ReportConfig,
    /// `[tls]` (CONTRACT §3.1): when set, the public listener serves HTTPS with this pair.
    pub tls: Option<TlsConfig>,
}

/// `[tls]`: a PEM certificate chain and its private key. The files are read at start (and by
/// `config check`), then re-read when they change or on SIGHUP (`server::tls`), so that a
/// rotation by cert-manager or certbot needs no restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `cert`: the leaf certificate first, then any intermediates (PEM).
    pub cert: PathBuf,
    /// `key`: the leaf's private key (PEM: PKCS#8, PKCS#1 or SEC1). A secret: the file must
    /// not be readable by others, as for `${file:…}` ([`secret_file_mode_problem`]).
    pub key: PathBuf,
}

/// Why a file holding a secret (a `${file:…}` value, `[tls] key`) is refused for its mode, if
/// it is: others may read or write it, or its group may write it.
///
/// The policy follows the token file of issue 15 (refuse, never warn: a secret that others can
/// read must be replaced, not only restricted), with one difference: a group-*readable* file is
/// accepted. Kubernetes gives every file of a Secret volume the pod's `fsGroup` and adds group
/// read (a `defaultMode: 0400` Secret is mounted 0440), and a non-root StatefulSet with a PVC
/// needs `fsGroup`; refusing group read would refuse the deployment `deploy/` describes. The
/// group there is the pod's own. World-readable (the Secret volume's default 0644, a Docker
/// secret's 0444) is refused with the fix named.
pub fn secret_file_mode_problem(path: &Path, meta: &std::fs::Metadata) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o027 != 0 {
            let who = if mode & 0o007 != 0 {
                "others may read or write it"
            } else {
                "its group may write it"
            };
            return Some(format!(
                "{p} holds a secret but has mode {:04o}: {who}. Restrict it with `chmod 600 {p}` (on Kubernetes: `defaultMode: 0400` on the Secret volume), and consider replacing the secret",
                mode & 0o7777,
                p = path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta);
    None
}

/// `[limits]`: what one slow or hostile client can hold of the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// `body_read_timeout`: the whole request body must arrive within this (default 30 s);
    /// a slower sender gets 408 and the connection is closed.
    pub body_read_timeout: std::time::Duration,
    /// `request_timeout`: the longest a request may take, body and handler (default 60 s).
    pub request_timeout: std::time::Duration,
    /// `tenant_concurrency`: SCIM requests one tenant may have in flight (default 64); more
    /// wait for a slot, so one tenant cannot take every worker.
    pub tenant_concurrency: usize,
    /// `auth_failure_limit`: failed authentications one client address may make on one
    /// tenant's path per minute before it is answered 429 with `Retry-After` there (default
    /// 20; 0 turns it off).
    pub auth_failure_limit: u32,
    /// `tenant_rate`: authenticated SCIM requests per second one tenant may sustain; over it
    /// (its bucket empty) it is answered 429 with `Retry-After`. 0 (the default) turns it off.
    pub tenant_rate: u32,
    /// `tenant_burst`: the tenant's bucket, i.e. requests it may send at once before
    /// `tenant_rate` paces it; 0 (the default) means twice `tenant_rate`. See [`Self::burst`].
    pub tenant_burst: u32,
}

impl RequestLimits {
    /// The bucket size in effect: `tenant_burst`, or twice `tenant_rate` when it is 0 (an IdP
    /// push starts as a burst, so the bucket is bigger than one second's worth).
    pub fn burst(&self) -> u32 {
        if self.tenant_burst > 0 {
            self.tenant_burst
        } else {
            self.tenant_rate.saturating_mul(2)
        }
    }
}

pub const DEFAULT_JWT_MAX_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(90 * 24 * 3600);

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            body_read_timeout: std::time::Duration::from_secs(30),
            request_timeout: std::time::Duration::from_secs(60),
            tenant_concurrency: 64,
            auth_failure_limit: 20,
            tenant_rate: 0,
            tenant_burst: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: TenantId,
    /// Static bearer tokens (at least one of `tokens` / `jwt_secret` is set).
    pub tokens: Vec<Secret>,
    /// HS256 key for `token issue` and JWT bearer validation; at least 16 characters.
    pub jwt_secret: Option<Secret>,
    pub vendor: VendorConfig,
    pub roles: RoleRules,
    pub on_vendor_unavailable: OnVendorUnavailable,
    /// `[tenants.attributes]`: vendor user attribute ← SCIM attribute path (CONTRACT §3.1),
    /// e.g. ThoughtSpot formula variables for row-level security. Paths are validated
    /// (`urn:…:attr`, `attr` or `attr.sub`; no value filters).
    pub attributes: std::collections::BTreeMap<String, String>,
    /// `dry_run = true`: answer the IdP in full, send no vendor writes, keep the plan (CONTRACT
    /// §3.1). Turning it off applies the plan.
    pub dry_run: bool,
    /// `[tenants.sweep]`: the scheduled dormant-account sweep, report-only unless `apply`.
    pub sweep: Option<SweepConfig>,
}

impl TenantConfig {
    /// A digest of everything the tenant's connector is built from: the vendor connection
    /// (secrets included), the role rules, attributes, `dry_run`, `on_vendor_unavailable` and
    /// `[tenants.sweep]`, but not the bearer tokens or the JWT key, which a reload swaps
    /// without touching the connector. Equal digests: the running connector is kept as it is.
    pub fn connector_fingerprint(&self) -> [u8; 32] {
        use sha2::Digest;
        if matches!(self.vendor, VendorConfig::Local) {
            // The local connector reads none of these settings: reopening it would only put a
            // second writer on its tree.
            return sha2::Sha256::digest(b"local").into();
        }
        let bare = TenantConfig {
            tokens: Vec::new(),
            jwt_secret: None,
            ..self.clone()
        };
        let mut h = sha2::Sha256::new();
        h.update(format!("{bare:?}").as_bytes());
        for s in self.vendor.secrets() {
            // Length-prefixed: two secrets cannot be re-split into the same bytes.
            h.update((s.expose().len() as u64).to_le_bytes());
            h.update(s.expose().as_bytes());
        }
        h.finalize().into()
    }
}

/// `[tenants.sweep]` (CONTRACT §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepConfig {
    /// Users whose last vendor sign-in is older than this many days are dormant.
    pub days: u32,
    /// Deactivate them through the engine (actor `sweep`); otherwise only report the plan.
    pub apply: bool,
    /// Also deactivate accounts the IdP does not manage (adopted from the vendor, never written
    /// by the IdP). Off by default: those belong to whoever made them by hand.
    pub include_unmanaged: bool,
    /// How often it runs (default daily).
    pub every: std::time::Duration,
}

/// The default sweep interval.
pub const DEFAULT_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `[admin]` (CONTRACT §3.1 and §5): the admin listener and its tokens.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `listen`: the admin listener (`/metrics`, detailed readiness, `/admin`, `/admin/api/`).
    pub listen: SocketAddr,
    /// `tokens`: admin bearer tokens (at least 32 characters), never a tenant's token. Held
    /// only as SHA-256 hashes once the server starts. Empty: the admin API and console answer
    /// 401 to everyone (`/metrics` stays as `metrics_token` says).
    pub tokens: Vec<Secret>,
    /// `metrics_token`: when set, `GET /metrics` needs it (or an admin token) as a bearer.
    pub metrics_token: Option<Secret>,
    /// `tls = true`: the admin listener serves HTTPS too, with the `[tls]` pair (and its
    /// reloads). Off by default: the listener is meant for a private address.
    pub tls: bool,
}

/// The admin listener's default address: loopback only.
pub fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            tokens: Vec::new(),
            metrics_token: None,
            tls: false,
        }
    }
}

/// `[audit]`: how long audit entries are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// `retention`: entries older than this are pruned (the chain stays verifiable from a
    /// checkpoint). `None` (default): kept for ever.
    pub retention: Option<std::time::Duration>,
}

/// `[report]`: the access review.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportConfig {
    /// `person_key`: what groups one person's accounts across tenants: `email` (default),
    /// `userName` or `externalId`.
    pub person_key: PersonKey,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PersonKey {
    #[default]
    Email,
    UserName,
    ExternalId,
}

impl PersonKey {
    pub const CHOICES: &'static [(&'static str, PersonKey)] = &[
        ("email", PersonKey::Email),
        ("userName", PersonKey::UserName),
        ("externalId", PersonKey::ExternalId),
    ];
}

/// The vendor a tenant provisions into. Every `base_url` is http(s), has no credentials, query or
/// fragment, and its path ends with `/` so that `Url::join("api/...")` keeps any path prefix.
#[derive(Debug, Clone)]
pub enum VendorConfig {
    Local,
    Sisense {
        base_url: Url,
        username: String,
        password: Secret,
        api_version: SisenseApiVersion,
        mode: SisenseMode,
        /// The bearer token of Sisense's own SCIM endpoint; present exactly when `mode = "scim"`.
        scim_token: Option<Secret>,
        deprovision: SisenseDeprovision,
    },
    Tableau {
        base_url: Url,
        /// Site `contentUrl`; empty means the Default site (Tableau Server only).
        site: String,
        /// `major.minor`, e.g. "3.24".
        api_version: String,
        auth: TableauAuth,
        deprovision: TableauDeprovision,
        /// Tableau Cloud or Tableau Server: Cloud user names are emails, and Cloud's Update
        /// User changes only the site role.
        flavor: TableauFlavor,
        /// How new users sign in (Add User's `authSetting`); `None`: the site's default.
        auth_setting: Option<TableauAuthSetting>,
    },
    Thoughtspot {
        base_url: Url,
        username: String,
        auth: ThoughtspotAuth,
        /// The Org every call is scoped to (0 is the Primary Org). Required: without it
        /// ThoughtSpot picks the Org of the secret key or of the last login [reference B.2].
        org_id: i64,
        /// `validity_time_in_sec` asked for each token; renewed before it runs out.
        token_validity_s: u64,
        /// SCIM groups whose displayName matches drive Org membership (`org_group_pattern`).
        orgs: Option<ThoughtspotOrgGroups>,
        /// New users' `account_type` (`account_type`); `None`: ThoughtSpot's default.
        account_type: Option<ThoughtspotAccountType>,
    },
    Metabase {
        base_url: Url,
        auth: MetabaseAuth,
    },
}

impl VendorConfig {
    /// The `kind` key value: `local`, `sisense`, `tableau`, `thoughtspot` or `metabase`.
    pub fn kind(&self) -> &'static str {
        match self {
            VendorConfig::Local => "local",
            VendorConfig::Sisense { .. } => "sisense",
            VendorConfig::Tableau { .. } => "tableau",
            VendorConfig::Thoughtspot { .. } => "thoughtspot",
            VendorConfig::Metabase { .. } => "metabase",
        }
    }

    /// Every secret of the vendor connection (a password, a token, a key): what
    /// [`TenantConfig::connector_fingerprint`] covers besides the `Debug` rendering, which
    /// redacts them.
    pub fn secrets(&self) -> Vec<&Secret> {
        match self {
            VendorConfig::Local => Vec::new(),
            VendorConfig::Sisense {
                password,
                scim_token,
                ..
            } => std::iter::once(password).chain(scim_token).collect(),
            VendorConfig::Tableau { auth, .. } => match auth {
                TableauAuth::Pat { secret, .. } => vec![secret],
                TableauAuth::ConnectedApp { secret_value, .. } => vec![secret_value],
            },
            VendorConfig::Thoughtspot { auth, .. } => match auth {
                ThoughtspotAuth::Password(s) | ThoughtspotAuth::SecretKey(s) => vec![s],
            },
            VendorConfig::Metabase { auth, .. } => match auth {
                MetabaseAuth::ApiKey(s) | MetabaseAuth::Password { password: s, .. } => vec![s],
            },
        }
    }

    /// The vendor's base URL; `None` for the local connector.
    pub fn base_url(&self) -> Option<&Url> {
        match self {
            VendorConfig::Local => None,
            VendorConfig::Sisense { base_url, .. }
            | VendorConfig::Tableau { base_url, .. }
            | VendorConfig::Thoughtspot { base_url, .. }
            | VendorConfig::Metabase { base_url, .. } => Some(base_url),
        }
    }
}

macro_rules! keyword_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? } default $default:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $(#[doc = concat!("`", $text, "`")] $variant,)+
        }
        impl Default for $name {
            fn default() -> $name {
                $name::$default
            }
        }
        impl $name {
            pub(crate) const CHOICES: &'static [(&'static str, $name)] = &[$(($text, $name::$variant)),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum!(
    /// What a write gets while the tenant's vendor cannot take it: accepted and delivered by
    /// the outbox later (`queue`), or `503` with `Retry-After` and nothing kept (`fail`).
    OnVendorUnavailable { Queue => "queue", Fail => "fail" } default Queue
);
keyword_enum!(
    /// Sisense REST API generation: `v1` (`/api/v1/...`) or the legacy `v0.9` (`/api/...`).
    SisenseApiVersion { V1 => "v1", V0_9 => "v0.9" } default V1
);
keyword_enum!(
    /// How the Sisense connector talks to Sisense: its REST API, or Sisense's own SCIM endpoint.
    SisenseMode { Rest => "rest", Scim => "scim" } default Rest
);
keyword_enum!(
    /// What a SCIM DELETE (or `active: false`) does in Sisense.
    SisenseDeprovision { Deactivate => "deactivate", Delete => "delete" } default Deactivate
);
keyword_enum!(
    /// What a SCIM DELETE (or `active: false`) does in Tableau: set the site role to `Unlicensed`
    /// (keeps content ownership) or remove the user from the site.
    TableauDeprovision { Unlicense => "unlicense", Delete => "delete" } default Unlicense
);

keyword_enum!(
    /// Which Tableau: `server` (Tableau Server) or `cloud` (Tableau Cloud). When the key is
    /// absent, a base URL on `online.tableau.com` means Cloud.
    TableauFlavor { Server => "server", Cloud => "cloud" } default Server
);

keyword_enum!(
    /// Add User's `authSetting` [reference A.3]: a Cloud site that requires MFA refuses the
    /// default (`ServerDefault`) and needs `TableauIDWithMFA`; SSO sites use `SAML` or `OpenID`.
    TableauAuthSetting { ServerDefault => "ServerDefault", Saml => "SAML", OpenId => "OpenID", TableauIdWithMfa => "TableauIDWithMFA" } default ServerDefault
);

#[derive(Debug, Clone)]
pub enum TableauAuth {
    /// Personal access token (`pat_name` + `pat_secret`), REST API 3.6+.
    Pat { name: String, secret: Secret },
    /// Connected app, direct trust (`client_id`, `secret_id`, `secret_value`, `username`), 3.17+.
    ConnectedApp {
        client_id: String,
        secret_id: String,
        secret_value: Secret,
        username: String,
    },
}

#[derive(Debug, Clone)]
pub enum ThoughtspotAuth {
    Password(Secret),
    /// Trusted-authentication secret key (`secret_key`); works with MFA, unlike a password.
    SecretKey(Secret),
}

keyword_enum!(
    /// `users/create`'s `account_type` [reference B.3]: users who sign in through SAML or OIDC
    /// SSO must be `SAML_USER` / `OIDC_USER`; ThoughtSpot's default is `LOCAL_USER` (or
    /// `OIDC_USER` under IAMv2).
    ThoughtspotAccountType { Local => "LOCAL_USER", Saml => "SAML_USER", Oidc => "OIDC_USER", Ldap => "LDAP_USER", Remote => "REMOTE_USER" } default Local
);

/// Default `token_validity_s` of a ThoughtSpot tenant: an hour (ThoughtSpot's own default is
/// 300 s; the bridge renews before expiry either way).
pub const DEFAULT_THOUGHTSPOT_TOKEN_VALIDITY_S: u64 = 3600;

/// ThoughtSpot Orgs driven by SCIM groups: a group whose displayName matches `pattern` (one
/// `*`, which stands for the Org's name) makes its members members of that Org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThoughtspotOrgGroups {
    /// e.g. `org-*`: the SCIM group `org-acme` is the Org `acme`.
    pub pattern: String,
    /// Create a missing Org (`create_orgs`); otherwise such a group is refused.
    pub create: bool,
}

impl ThoughtspotOrgGroups {
    /// The Org named by a group name, when it matches the pattern (case-insensitively around a
    /// non-empty `*`).
    pub fn org_of(&self, group: &str) -> Option<String> {
        let (pre, post) = self.pattern.split_once('*')?;
        let g = group.trim();
        // By characters, not bytes: group names are anyone's language.
        let head = g.get(..pre.len()).filter(|h| h.eq_ignore_ascii_case(pre))?;
        let rest = &g[head.len()..];
        let cut = rest.len().checked_sub(post.len())?;
        let tail = rest.get(cut..).filter(|t| t.eq_ignore_ascii_case(post))?;
        let mid = &rest[..rest.len() - tail.len()];
        (!mid.trim().is_empty()).then(|| mid.to_string())
    }
}

#[derive(Debug, Clone)]
pub enum MetabaseAuth {
    /// `x-api-key` (Metabase 0.49+).
    ApiKey(Secret),
    Password {
        username: String,
        password: Secret,
    },
}

/// Supplemental role assignment (CONTRACT §4): the first matching rule wins, else `default`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleRules {
    pub default: Option<String>,
    pub rules: Vec<RoleRule>,
}

/// `{ group = "BI Admins", role = "Admin" }`. A rule without `group` matches users whose SCIM
/// `roles` contain `role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRule {
    pub group: Option<String>,
    pub role: String,
}

/// One thing wrong with a config, at a key path such as `tenants[0].vendor.base_url` (empty for
/// problems of the file as a whole, e.g. a TOML syntax error, which carries line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key_path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key_path, self.message)
        }
    }
}

/// Every problem found in a config, one per line in `Display`. Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the file, resolves `${ENV}` from the process environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                key_path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }],
        })?;
        let config = Config::from_toml_str(&text, &|name| std::env::var(name).ok());
        drop(Secret(text));
        config
    }

    /// Parses and validates `text`, taking `${NAME}` values from `env` (testable without the
    /// process environment). Collects every problem before failing.
    pub fn from_toml_str(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        reader::read(text, env)
    }

    /// The embedded default (CONTRACT §1): one tenant `default`, Local connector, the given token.
    pub fn embedded_default(
        listen: Option<SocketAddr>,
        data_dir: PathBuf,
        token: Secret,
    ) -> Config {
        Config {
            listen: listen.unwrap_or_else(default_listen),
            data_dir,
            tenants: vec![TenantConfig {
                id: TenantId("default".into()),
                tokens: vec![token],
                jwt_secret: None,
                vendor: VendorConfig::Local,
                roles: RoleRules::default(),
                on_vendor_unavailable: Default::default(),
                attributes: Default::default(),
                dry_run: false,
                sweep: None,
            }],
            body_limit_bytes: DEFAULT_BODY_LIMIT,
            limits: RequestLimits::default(),
            trusted_proxies: Vec::new(),
            jwt_max_lifetime: DEFAULT_JWT_MAX_LIFETIME,
            admin: AdminConfig::default(),
            audit: AuditConfig::default(),
            report: ReportConfig::default(),
            tls: None,
        }
    }

    /// The tenant with this id.
    pub fn tenant(&self, id: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.id.as_str() == id)
    }

    /// What `config check` (and `serve`, in its log) warns about without refusing the config:
    /// two tenants signing with the same `jwt_secret` (a token minted for one is still refused by
    /// the other, by audience, but whoever holds the key can mint tokens for both).
    pub fn warnings(&self) -> Vec<Problem> {
        use sha2::{Digest, Sha256};
        let mut out = Vec::new();
        let mut seen: Vec<([u8; 32], usize)> = Vec::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let Some(secret) = &t.jwt_secret else {
                continue;
            };
            let hash: [u8; 32] = Sha256::digest(secret.expose().as_bytes()).into();
            match seen.iter().find(|(h, _)| *h == hash) {
                Some((_, first)) => out.push(Problem {
                    key_path: format!("tenants[{i}].jwt_secret"),
                    message: format!(
                        "the same jwt_secret is also configured at tenants[{first}].jwt_secret (tenant `{}`); whoever holds it can mint tokens for both tenants: give each tenant its own key",
                        self.tenants[*first].id
                    ),
                }),
                None => seen.push((hash, i)),
            }
        }
        out
    }

    /// Drops (and zeroes) the plaintext static tokens, once the verifiers hold their hashes.
    pub fn forget_static_tokens(&mut self) {
        for t in &mut self.tenants {
            t.tokens.clear();
        }
        self.admin.tokens.clear();
        self.admin.metrics_token = None;
    }

    /// Human report of a valid config for `config check`: tenants, vendor kinds, base URLs,
    /// token counts, rule counts — no secret values.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "listen:     {}", self.listen);
        let _ = writeln!(out, "data_dir:   {}", self.data_dir.display());
        let _ = writeln!(out, "body_limit: {} bytes", self.body_limit_bytes);
        let _ = writeln!(
            out,
            "limits:     body within {} s, request within {} s, {} requests in flight per tenant, {} failed sign-ins per address and tenant per minute",
            self.limits.body_read_timeout.as_secs(),
            self.limits.request_timeout.as_secs(),
            self.limits.tenant_concurrency,
            self.limits.auth_failure_limit
        );
        if let Some(tls) = &self.tls {
            let _ = writeln!(
                out,
                "tls:        HTTPS with {} and {}{}",
                tls.cert.display(),
                tls.key.display(),
                if self.admin.tls {
                    " (admin listener too)"
                } else {
                    ""
                }
            );
        }
        if !self.trusted_proxies.is_empty() {
            let nets: Vec<String> = self.trusted_proxies.iter().map(|n| n.to_string()).collect();
            let _ = writeln!(out, "trusted_proxies: {}", nets.join(", "));
        }
        let _ = writeln!(out, "tenants:    {}", self.tenants.len());
        for t in &self.tenants {
            let _ = writeln!(out, "- tenant {}", t.id);
            let _ = writeln!(out, "    vendor: {}", vendor_line(&t.vendor));
            let _ = writeln!(
                out,
                "    auth:   {} static token{}, JWT {}",
                t.tokens.len(),
                if t.tokens.len() == 1 { "" } else { "s" },
                if t.jwt_secret.is_some() {
                    "accepted (signing key set)"
                } else {
                    "not configured"
                }
            );
            let _ = writeln!(
                out,
                "    roles:  {} rule{}, default {}",
                t.roles.rules.len(),
                if t.roles.rules.len() == 1 { "" } else { "s" },
                t.roles
                    .default
                    .as_deref()
                    .map(|d| format!("`{d}`"))
                    .unwrap_or_else(|| "none (vendor default)".into())
            );
        }
        out
    }
}

fn vendor_line(v: &VendorConfig) -> String {
    match v {
        VendorConfig::Local => "local (resources kept in the data dir)".into(),
        VendorConfig::Sisense {
            base_url,
            username,
            api_version,
            mode,
            deprovision,
            ..
        } => format!(
            "sisense {base_url} as `{username}` (password), API {api_version}, mode {mode}, deprovision {deprovision}"
        ),
        VendorConfig::Tableau {
            base_url,
            site,
            api_version,
            auth,
            deprovision,
            flavor,
            ..
        } => {
            let auth = match auth {
                TableauAuth::Pat { name, .. } => format!("personal access token `{name}`"),
                TableauAuth::ConnectedApp {
                    client_id,
                    username,
                    ..
                } => format!("connected app `{client_id}` as `{username}`"),
            };
            let site = if site.is_empty() {
                "Default site".to_string()
            } else {
                format!("site `{site}`")
            };
            format!("tableau ({flavor}) {base_url} {site}, API {api_version}, {auth}, deprovision {deprovision}")
        }
        VendorConfig::Thoughtspot {
            base_url,
            username,
            auth,
            org_id,
            token_validity_s,
            orgs,
            account_type,
        } => {
            let how = match auth {
                ThoughtspotAuth::Password(_) => "password",
                ThoughtspotAuth::SecretKey(_) => "secret key",
            };
            let orgs = orgs
                .as_ref()
                .map(|o| {
                    format!(
                        ", Orgs from groups `{}`{}",
                        o.pattern,
                        if o.create { " (created when missing)" } else { "" }
                    )
                })
                .unwrap_or_default();
            let kind = account_type
                .map(|k| format!(", new users {k}"))
                .unwrap_or_default();
            format!("thoughtspot {base_url} as `{username}` ({how}), Org {org_id}, tokens for {token_validity_s} s{orgs}{kind}")
        }
        VendorConfig::Metabase { base_url, auth } => {
            let how = match auth {
                MetabaseAuth::ApiKey(_) => "API key".to_string(),
                MetabaseAuth::Password { username, .. } => format!("`{username}` (password)"),
            };
            format!("metabase {base_url} with {how}")
        }
    }
}

pub fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .expect("DEFAULT_LISTEN is a socket address")
}
