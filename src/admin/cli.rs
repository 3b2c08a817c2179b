//! The operations commands of CONTRACT §5 (`audit`, `report access`, `sweep dormant`, `plan`).
//! Each talks to a running bridge through the admin API, or — with `--data-dir` and no bridge
//! running — opens the store itself and calls the same functions the API calls, so both give
//! the same answer. Each returns the process's exit code.

use super::client::{AdminClient, Progress};
use crate::config::Config;
use anyhow::{bail, Result};
use std::io::Write;
use std::path::PathBuf;

/// Which bridge (or store) a command works on.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The admin API's base URL. Default: the config's `[admin] listen`, else
    /// http://127.0.0.1:9090.
    #[arg(long)]
    pub url: Option<String>,
    /// An admin token (`[admin] tokens`); a tenant's token is not one.
    #[arg(long, env = "SCIM_BRIDGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The bridge's config: its `[admin] listen` (and, with --data-dir, its tenants).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Read the store in this directory directly instead of asking a running bridge (sled
    /// allows one process per store, so the bridge must be stopped).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessFormat {
    Csv,
    Jsonl,
    Html,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

impl AuditFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditFormat::Jsonl => "jsonl",
            AuditFormat::Csv => "csv",
        }
    }
}

impl AccessFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessFormat::Csv => "csv",
            AccessFormat::Jsonl => "jsonl",
            AccessFormat::Html => "html",
        }
    }
}

enum Mode {
    Api(AdminClient),
    Store {
        store: crate::store::Store,
        config: Option<Box<Config>>,
    },
}

impl Target {
    fn config(&self) -> Result<Option<Config>> {
        match &self.config {
            Some(p) => Ok(Some(
                Config::load(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
            )),
            None => Ok(None),
        }
    }

    fn mode(&self) -> Result<Mode> {
        let config = self.config()?;
        if let Some(dir) = &self.data_dir {
            let store = crate::store::Store::open(dir).map_err(|e| {
                if e.to_string().contains("lock") || e.to_string().contains("WouldBlock") {
                    anyhow::anyhow!(
                        "the store in {} is in use (is the bridge running? then drop --data-dir and use the admin API)",
                        dir.display()
                    )
                } else {
                    anyhow::anyhow!("cannot open the store in {}: {e}", dir.display())
                }
            })?;
            return Ok(Mode::Store {
                store,
                config: config.map(Box::new),
            });
        }
        let url = match (&self.url, &config) {
            (Some(u), _) => u.clone(),
            (None, Some(c)) => super::tokens::admin_url(c),
            (None, None) => format!("http://{}", crate::config::default_admin_listen()),
        };
        let token = self.admin_token.clone().unwrap_or_default();
        Ok(Mode::Api(AdminClient::new(&url, &token)?))
    }
}

fn since_arg(since: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    crate::governance::audit::parse_since(since).map_err(|e| anyhow::anyhow!("--{e}"))
}

/// `audit export`.
pub async fn audit_export(
    target: &Target,
    tenant: Option<&str>,
    since: Option<&str>,
    format: AuditFormat,
) -> Result<i32> {
    let since_t = since_arg(since)?;
    let mut progress = Progress::new("audit entries", None);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let n = match target.mode()? {
        Mode::Api(c) => {
            let mut q = vec![("format", format.as_str().to_string())];
            if let Some(t) = tenant {
                q.push(("tenant", t.to_string()));
            }
            if let Some(s) = since {
                q.push(("since", s.to_string()));
            }
            let lines = c
                .get_to("/admin/api/audit/export", &q, &mut out, &mut |n| {
                    progress.update(n)
                })
                .await?;
            // CSV's header is a line, not an entry.
            lines.saturating_sub(u64::from(format == AuditFormat::Csv))
        }
        Mode::Store { store, .. } => {
            let filter = crate::governance::audit::ExportFilter {
                tenant: tenant.map(str::to_string),
                since: since_t,
            };
            let format = match format {
                AuditFormat::Jsonl => crate::governance::audit::ExportFormat::Jsonl,
                AuditFormat::Csv => crate::governance::audit::ExportFormat::Csv,
            };
            crate::governance::audit::export_with_progress(
                &store,
                &filter,
                format,
                &mut out,
                Some(&mut |n| progress.update(n)),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    out.flush()?;
    progress.finish(n);
    Ok(0)
}

/// `audit verify`: 0 when every chain holds, 1 naming the first bad entry.
pub async fn audit_verify(target: &Target, tenant: Option<&str>) -> Result<i32> {
    let report = match target.mode()? {
        Mode::Api(c) => {
            let q: Vec<(&str, String)> = tenant
                .map(|t| vec![("tenant", t.to_string())])
                .unwrap_or_default();
            c.get_json("/admin/api/audit/verify", &q).await?
        }
        Mode::Store { store, .. } => crate::governance::audit::verify_json(&store, tenant)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    print_verify(&report)
}

fn print_verify(report: &serde_json::Value) -> Result<i32> {
    if let Some(tenants) = report["tenants"].as_array() {
        for t in tenants {
            println!(
                "{}: {} entries, head {}",
                t["tenant"].as_str().unwrap_or("?"),
                t["entries"],
                t["head"].as_str().unwrap_or("-")
            );
        }
    }
    if report["ok"].as_bool() == Some(true) {
        println!("audit chain intact");
        Ok(0)
    } else {
        let f = &report["fault"];
        eprintln!(
            "audit chain BROKEN: tenant {}, entry {}: {}",
            f["tenant"].as_str().unwrap_or("?"),
            f["seq"],
            f["reason"].as_str().unwrap_or("?")
        );
        Ok(1)
    }
}

/// `report access`.
pub async fn report_access(
    target: &Target,
    tenant: Option<&str>,
    format: AccessFormat,
) -> Result<i32> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut progress = Progress::new("accounts", None);
    match target.mode()? {
        Mode::Api(c) => {
            let mut q = vec![("format", format.as_str().to_string())];
            if let Some(t) = tenant {
                q.push(("tenant", t.to_string()));
            }
            let n = c
                .get_to("/admin/api/report/access", &q, &mut out, &mut |n| {
                    progress.update(n)
                })
                .await?;
            progress.finish(n);
        }
        Mode::Store { store, config } => {
            let Some(config) = config else {
                bail!("with --data-dir, pass --config too: the report needs each tenant's vendor");
            };
            let format: crate::governance::access::Format = format
                .as_str()
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))?;
            let rows = crate::governance::access::rows(
                &store,
                &config.tenants,
                config.report.person_key,
                tenant,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            crate::governance::access::write(&rows, format, &mut out)?;
            progress.finish(rows.len() as u64);
        }
    }
    out.flush()?;
    Ok(0)
}

/// `sweep dormant`: the plan, or with `apply` its deactivations (a running bridge only: they
/// go through the engine, which needs the vendor).
pub async fn sweep_dormant(
    target: &Target,
    tenant: &str,
    days: u32,
    apply: bool,
    include_unmanaged: bool,
) -> Result<i32> {
    if !crate::engine::sweep::DORMANT_DAYS.contains(&days) {
        bail!(crate::engine::sweep::dormant_days_problem("--days"));
    }
    let c = match target.mode()? {
        Mode::Api(c) => c,
        Mode::Store { .. } => {
            bail!("sweep dormant asks the running bridge (it plans from the engine and deactivates through it); drop --data-dir")
        }
    };
    let path = format!("/admin/api/tenants/{}/sweep", urlencode(tenant));
    if apply {
        let v = c
            .post_json(
                &path,
                &serde_json::json!({"days": days, "include_unmanaged": include_unmanaged}),
            )
            .await?;
        print!("{}", v["text"].as_str().unwrap_or_default());
    } else {
        let v = c
            .get_json(
                &path,
                &[
                    ("days", days.to_string()),
                    ("include_unmanaged", include_unmanaged.to_string()),
                ],
            )
            .await?;
        print!("{}", v["text"].as_str().unwrap_or_default());
        eprintln!("(a plan only: add --apply to deactivate these accounts)");
    }
    Ok(0)
}

/// `plan`.
pub async fn plan(target: &Target, tenant: &str, format: PlanFormat) -> Result<i32> {
    let c = match target.mode()? {
        Mode::Api(c) => c,
        Mode::Store { .. } => {
            bail!("plan asks the running bridge (the engine computes it with the vendor's roles); drop --data-dir")
        }
    };
    let path = format!("/admin/api/tenants/{}/plan", urlencode(tenant));
    let v = c.get_json(&path, &[]).await?;
    match format {
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&v["plan"])?),
        PlanFormat::Text => print!("{}", v["text"].as_str().unwrap_or_default()),
    }
    Ok(0)
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
