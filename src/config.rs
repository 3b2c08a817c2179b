//! TEMPORARY STUB (replaced by h/config).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
#[derive(Clone)]
pub struct Secret(String);
impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantId(String);
impl TenantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
#[derive(Clone, Debug)]
pub enum VendorConfig {
    Local,
}
#[derive(Clone, Debug, Default)]
pub struct RoleRules {
    pub default: Option<String>,
    pub rules: Vec<RoleRule>,
}
#[derive(Clone, Debug)]
pub struct RoleRule {
    pub group: Option<String>,
    pub role: String,
}
#[derive(Clone, Debug)]
pub struct TenantConfig {
    pub id: TenantId,
    pub tokens: Vec<Secret>,
    pub jwt_secret: Option<Secret>,
    pub vendor: VendorConfig,
    pub roles: RoleRules,
}
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tenants: Vec<TenantConfig>,
    pub body_limit_bytes: usize,
}
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.problems)
    }
}
impl std::error::Error for ConfigError {}
impl Config {
    pub fn load(_p: &Path) -> Result<Config, ConfigError> {
        Err(ConfigError {
            problems: vec!["stub".into()],
        })
    }
    pub fn embedded_default(
        listen: Option<SocketAddr>,
        data_dir: PathBuf,
        token: Secret,
    ) -> Config {
        Config {
            listen: listen.unwrap_or_else(|| "127.0.0.1:8080".parse().unwrap()),
            data_dir,
            body_limit_bytes: 1 << 20,
            tenants: vec![TenantConfig {
                id: TenantId("default".into()),
                tokens: vec![token],
                jwt_secret: None,
                vendor: VendorConfig::Local,
                roles: RoleRules::default(),
            }],
        }
    }
    pub fn summary(&self) -> String {
        String::new()
    }
}
