//! `scim-bridge demo`: the four vendor simulators and the bridge in one process, ready to try.

use crate::config::{Config, RoleRule, RoleRules, Secret, TenantConfig, TenantId, VendorConfig};
use crate::server::{self, RunningServer, StartError};
use crate::sim::{self, RunningSim, SimOptions, Vendor};
use crate::store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;

/// One row of the demo's table.
pub struct DemoTenant {
    pub id: String,
    pub scim_base: String,
    pub token: String,
    /// The simulator this tenant's connector talks to (`None` for `local`).
    pub vendor_url: Option<String>,
}

pub struct Demo {
    pub bridge: RunningServer,
    pub sims: Vec<RunningSim>,
    pub tenants: Vec<DemoTenant>,
    /// The admin token of the demo's console and admin API (made up at start).
    pub admin_token: String,
    /// The store's directory: a private temporary one (see [`start`]).
    pub data_dir: PathBuf,
    /// Owns `data_dir`: removes it when the demo stops, or when the demo is dropped.
    temp: tempfile::TempDir,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the {vendor} simulator: {source}")]
    Simulator {
        vendor: Vendor,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bridge(#[from] StartError),
    #[error("cannot create the demo data dir: {0}")]
    DataDir(std::io::Error),
}

/// Creates a permission group in the Metabase simulator (its default API key, CONTRACT §2);
/// `false` when the simulator did not take it.
async fn seed_metabase_group(base: &crate::config::Url, name: &str) -> bool {
    let Ok(url) = base.join("api/permissions/group") else {
        return false;
    };
    let sent = reqwest::Client::new()
        .post(url)
        .header("x-api-key", sim::metabase::DEFAULT_API_KEY)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await;
    sent.is_ok_and(|r| r.status().is_success())
}

fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("demo-{}", hex::encode(bytes))
}

/// Starts every simulator on a free loopback port and the bridge on `listen`, with a fresh data
/// dir under the system temp dir (removed by [`Demo::stop`]).
///
/// The data dir is made by `tempfile` (issue 15): mode 0700 (asked for explicitly), a random
/// name, created exclusively, so another local user can neither read the demo's store nor plant
/// a directory (or a symlink) at a predictable path for the demo to adopt.
pub async fn start(listen: SocketAddr) -> Result<Demo, DemoError> {
    let mut sims = Vec::new();
    for vendor in Vendor::ALL {
        let running = sim::start(
            vendor,
            "127.0.0.1:0".parse().expect("literal address"),
            SimOptions::default(),
        )
        .await
        .map_err(|source| DemoError::Simulator { vendor, source })?;
        sims.push(running);
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix("scim-bridge-demo-");
    // tempfile makes a directory with the umask's mode (0755 under 022) unless told otherwise.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    let temp = builder.tempdir().map_err(DemoError::DataDir)?;
    let data_dir = temp.path().to_path_buf();
    let local_token = random_token();
    let url_of = |vendor: Vendor| {
        sims.iter().find(|s| s.vendor == vendor).map(|s| {
            crate::config::Url::parse(&format!("{}/", s.base_url())).expect("simulator URL")
        })
    };
    let mut tenant_configs = vec![TenantConfig {
        id: TenantId::parse("local").expect("valid tenant id"),
        tokens: vec![Secret::new(local_token.clone())],
        jwt_secret: None,
        vendor: VendorConfig::Local,
        roles: RoleRules::default(),
        on_vendor_unavailable: Default::default(),
        attributes: Default::default(),
        dry_run: false,
        sweep: None,
    }];
    let mut tokens = vec![("local", local_token, None)];
    let rules = |pairs: &[(&str, &str)], default: &str| RoleRules {
        default: Some(default.into()),
        rules: pairs
            .iter()
            .map(|(group, role)| RoleRule {
                group: Some(group.to_string()),
                role: role.to_string(),
            })
            .collect(),
    };
    // Metabase role rules name permission groups the instance has (the bridge never creates
    // one): the simulator gets an "Analysts" group first, as an administrator would make it.
    let metabase_ready = match url_of(Vendor::Metabase) {
        Some(base) => seed_metabase_group(&base, "Analysts").await,
        None => false,
    };
    let vendors = [
        url_of(Vendor::Sisense).map(|base_url| {
            (
                "sisense",
                VendorConfig::Sisense {
                    base_url,
                    username: sim::sisense::DEFAULT_USER.into(),
                    password: Secret::new(sim::sisense::DEFAULT_PASSWORD),
                    api_version: Default::default(),
                    mode: Default::default(),
                    scim_token: None,
                    deprovision: Default::default(),
                },
                rules(
                    &[("BI Admins", "Admin"), ("BI Designers", "Designer")],
                    "Viewer",
                ),
                Default::default(),
            )
        }),
        url_of(Vendor::Tableau).map(|base_url| {
            (
                "tableau",
                VendorConfig::Tableau {
                    base_url,
                    site: sim::tableau::DEFAULT_SITE.into(),
                    api_version: crate::config::DEFAULT_TABLEAU_API_VERSION.into(),
                    auth: crate::config::TableauAuth::Pat {
                        name: sim::tableau::DEFAULT_PAT_NAME.into(),
                        secret: Secret::new(sim::tableau::DEFAULT_PAT_SECRET),
                    },
                    deprovision: Default::default(),
                    flavor: Default::default(),
                    auth_setting: None,
                },
                rules(
                    &[
                        ("BI Admins", "SiteAdministratorCreator"),
                        ("Tableau Creators", "Creator"),
                        ("BI Designers", "Creator"),
                    ],
                    "Viewer",
                ),
                Default::default(),
            )
        }),
        url_of(Vendor::Thoughtspot).map(|base_url| {
            (
                "thoughtspot",
                VendorConfig::Thoughtspot {
                    base_url,
                    // The simulator's defaults (CONTRACT §2).
                    username: "tsadmin".into(),
                    auth: crate::config::ThoughtspotAuth::SecretKey(Secret::new(
                        "simulator-secret-key",
                    )),
                    org_id: 0,
                    token_validity_s: crate::config::DEFAULT_THOUGHTSPOT_TOKEN_VALIDITY_S,
                    orgs: Some(crate::config::ThoughtspotOrgGroups {
                        pattern: "org-*".into(),
                        create: true,
                    }),
                    account_type: None,
                },
                // Analyst and Viewer are RBAC roles of the simulator: users hold them through
                // the bridge's role groups.
                rules(
                    &[("BI Admins", "Analyst"), ("BI Designers", "Analyst")],
                    "Viewer",
                ),
                // The simulator's seeded formula variable, for row-level security.
                std::collections::BTreeMap::from([(
                    "region".to_string(),
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division"
                        .to_string(),
                )]),
            )
        }),
        url_of(Vendor::Metabase)
            .filter(|_| metabase_ready)
            .map(|base_url| {
                (
                    "metabase",
                    VendorConfig::Metabase {
                        base_url,
                        auth: crate::config::MetabaseAuth::ApiKey(Secret::new(
                            sim::metabase::DEFAULT_API_KEY,
                        )),
                    },
                    // Administrators membership from the rules; users no rule covers are in no
                    // role group (Metabase's plain users).
                    RoleRules {
                        default: None,
                        ..rules(
                            &[
                                ("BI Admins", "Administrators"),
                                ("BI Designers", "Analysts"),
                            ],
                            "",
                        )
                    },
                    // login_attributes for data sandboxing.
                    std::collections::BTreeMap::from([(
                        "region".to_string(),
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division"
                            .to_string(),
                    )]),
                )
            }),
    ];
    for (id, vendor, roles, attributes) in vendors.into_iter().flatten() {
        let token = random_token();
        let vendor_url = vendor
            .base_url()
            .map(|u| u.as_str().trim_end_matches('/').to_string());
        tenant_configs.push(TenantConfig {
            id: TenantId::parse(id).expect("valid tenant id"),
            tokens: vec![Secret::new(token.clone())],
            jwt_secret: None,
            vendor,
            roles,
            on_vendor_unavailable: Default::default(),
            attributes,
            dry_run: false,
            sweep: None,
        });
        tokens.push((id, token, vendor_url));
    }
    let admin_token = random_token();
    let config = Config {
        listen,
        data_dir: data_dir.clone(),
        body_limit_bytes: 1 << 20,
        limits: Default::default(),
        trusted_proxies: Vec::new(),
        jwt_max_lifetime: crate::config::DEFAULT_JWT_MAX_LIFETIME,
        // The admin listener on a free loopback port (9090 may be taken), with its own token.
        admin: crate::config::AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tokens: vec![Secret::new(admin_token.clone())],
            metrics_token: None,
            tls: false,
        },
        audit: Default::default(),
        report: Default::default(),
        tls: None,
        tenants: tenant_configs,
    };
    let store = Store::open(&data_dir).map_err(StartError::from)?;
    let state = server::build_state(&config, store)?;
    let bridge = server::start(listen, state, None)?;
    let tenants = tokens
        .into_iter()
        .map(|(id, token, vendor_url)| DemoTenant {
            id: id.into(),
            scim_base: format!("http://{}/tenants/{id}/scim/v2", bridge.addr),
            token,
            vendor_url,
        })
        .collect();
    Ok(Demo {
        bridge,
        sims,
        tenants,
        admin_token,
        data_dir,
        temp,
    })
}

impl Demo {
    /// The table printed at start: tenants with their SCIM base URL and token, then the
    /// simulators with their default credentials, and one ready curl line.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<12} {:<52} {:<40} {}\n",
            "TENANT", "SCIM BASE URL", "TOKEN", "VENDOR URL"
        ));
        for t in &self.tenants {
            out.push_str(&format!(
                "{:<12} {:<52} {:<40} {}\n",
                t.id,
                t.scim_base,
                t.token,
                t.vendor_url.as_deref().unwrap_or("-")
            ));
        }
        if let Some(a) = self.bridge.admin_addr() {
            out.push_str(&format!(
                "\nAdmin console: http://{a}/admin   admin token: {}\n",
                self.admin_token
            ));
        }
        out.push_str("\nVendor simulators (`scim-bridge simulate --help` for fault flags):\n");
        for s in &self.sims {
            for line in sim::banner(s.vendor, &s.base_url(), &SimOptions::default()).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        if let Some(t) = self.tenants.first() {
            out.push_str(&format!(
                "\nTry it:\n  curl -s -H 'Authorization: Bearer {}' -H 'Content-Type: application/scim+json' \\\n    -d '{{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"ada@example.com\",\"name\":{{\"givenName\":\"Ada\",\"familyName\":\"Lovelace\"}}}}' \\\n    {}/Users\n",
                t.token, t.scim_base
            ));
        }
        out
    }

    pub async fn stop(self) {
        self.bridge.stop().await;
        for s in self.sims {
            s.stop().await;
        }
        // The bridge has stopped and released the store: remove the data dir.
        let _ = self.temp.close();
    }
}
