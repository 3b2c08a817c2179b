//! The store commands of CONTRACT §6: `store export`, `store import` and `store backup`, and
//! the admin API's `POST /admin/api/store/backup` that a running bridge answers.
//!
//! Export and import open the store themselves (sled allows one process per store, so the
//! bridge must be stopped); a running bridge's store is exported from a backup:
//! `store backup --to DIR`, then `store export --data-dir DIR`. Backup goes through the admin
//! API when a bridge runs, or opens the store with `--data-dir` when none does.
// A handler's `Err` is the HTTP answer itself (a 4xx to send), not an error to propagate.
#![allow(clippy::result_large_err)]

use super::client::AdminClient;
use super::{bad_request, server_error, AdminState};
use crate::config::Config;
use crate::server::AppState;
use crate::store::backup::{BackupError, BackupReport};
use crate::store::dump::DumpError;
use crate::store::Store;
use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::{bail, Result};
use serde::Deserialize;
use serde_json::json;
use std::path::{Path, PathBuf};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/api/store/backup", web::post().to(backup));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    /// An absolute path on the bridge's host: a new or empty directory.
    to: PathBuf,
}

/// One backup at a time: two would only compete for the disk and for sled's write lock.
static RUNNING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// `POST /admin/api/store/backup` `{"to": "/abs/dir"}`: a consistent copy of the store.
async fn backup(
    req: HttpRequest,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
    body: web::Bytes,
) -> HttpResponse {
    or_answer!(admin.authorize_action(&req, None));
    let body: BackupBody = or_answer!(serde_json::from_slice(&body).map_err(|e| bad_request(
        format!("expected a JSON body {{\"to\": \"/absolute/dir\"}}: {e}")
    )));
    if !body.to.is_absolute() {
        return bad_request("to: must be an absolute path on the bridge's host");
    }
    let store = app.store.clone();
    let to = body.to.clone();
    let result = web::block(move || {
        let Some(_one) = RUNNING.try_lock() else {
            return Err(None);
        };
        crate::store::backup::backup(&store, &to).map_err(Some)
    })
    .await;
    match result {
        Ok(Ok(report)) => {
            tracing::info!(to = %report.to.display(), records = report.records,
                written_during_copy = report.written_during_copy, took_ms = report.took_ms,
                "store backup taken");
            HttpResponse::Ok().json(report)
        }
        Ok(Err(None)) => HttpResponse::Conflict()
            .json(json!({"error": "a backup is already running; try again when it is done"})),
        Ok(Err(Some(BackupError::Target(msg)))) => {
            HttpResponse::Conflict().json(json!({"error": format!("to: {msg}")}))
        }
        Ok(Err(Some(e))) => server_error(format!("the backup failed: {e}")),
        Err(e) => server_error(e),
    }
}

/// The store a command opens: `--data-dir`, else the config's `data_dir`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreDir {
    /// The bridge's config: its `data_dir`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The data dir (overrides the config's).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl StoreDir {
    fn path(&self) -> Result<PathBuf> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        match &self.config {
            Some(p) => Ok(Config::load(p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                .data_dir),
            None => bail!("pass --data-dir DIR or --config FILE to name the store"),
        }
    }

    fn open(&self) -> Result<Store> {
        let dir = self.path()?;
        open_store(&dir)
    }
}

fn open_store(dir: &Path) -> Result<Store> {
    Store::open(dir).map_err(|e| {
        if crate::store::revoked::is_locked(&e) {
            anyhow::anyhow!(
                "the store in {} is in use: a running bridge holds it (one process per store). Stop the bridge, or take a consistent copy with `scim-bridge store backup --to DIR` and use --data-dir DIR",
                dir.display()
            )
        } else {
            anyhow::anyhow!("cannot open the store in {}: {e}", dir.display())
        }
    })
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Write a versioned JSON Lines dump of the store (or one tenant) to stdout: ids, ETags,
    /// the ID map, indexes, vendor state, outbox, audit chain, revoked tokens. The bridge must
    /// be stopped (or export a backup).
    Export {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        store: StoreDir,
    },
    /// Load a dump from stdin into an empty store, or add tenants the store does not hold.
    /// A truncated or altered dump is refused before anything is written.
    Import {
        #[command(flatten)]
        store: StoreDir,
    },
    /// A consistent copy of the store into a new or empty directory, taken while the bridge
    /// serves (through the admin API), or from a stopped bridge's store with --data-dir.
    Backup {
        /// The new or empty directory to copy into (it becomes a data dir).
        #[arg(long)]
        to: PathBuf,
        /// The admin API's base URL. Default: the config's `[admin] listen`, else
        /// http://127.0.0.1:9090.
        #[arg(long)]
        url: Option<String>,
        /// An admin token (`[admin] tokens`).
        #[arg(long, env = "SCIM_BRIDGE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Copy the store in this directory directly (no bridge may be running on it).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs a `store` command; the process's exit code.
pub async fn run(command: StoreCommand) -> Result<i32> {
    match command {
        StoreCommand::Export { tenant, store } => {
            let store = store.open()?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let s = crate::store::dump::export(&store, tenant.as_deref(), &mut out)
                .map_err(|e| anyhow::anyhow!("store export: {e}"))?;
            eprintln!(
                "exported {} records of {} trees (tenants: {})",
                s.records,
                s.trees,
                s.tenants.join(", ")
            );
            Ok(0)
        }
        StoreCommand::Import { store } => {
            let store = store.open()?;
            let stdin = std::io::stdin();
            let mut input = std::io::BufReader::with_capacity(1 << 20, stdin.lock());
            match crate::store::dump::import(&store, &mut input) {
                Ok(s) => {
                    eprintln!(
                        "imported {} records of {} trees (tenants: {})",
                        s.records,
                        s.trees,
                        s.tenants.join(", ")
                    );
                    Ok(0)
                }
                Err(e @ (DumpError::Refused(_) | DumpError::Invalid(_))) => {
                    eprintln!("store import: {e}");
                    Ok(1)
                }
                Err(e) => bail!("store import: {e}"),
            }
        }
        StoreCommand::Backup {
            to,
            url,
            admin_token,
            config,
            data_dir,
        } => {
            let report: serde_json::Value = if let Some(dir) = data_dir {
                let store = open_store(&dir)?;
                let r: BackupReport = crate::store::backup::backup(&store, &to)
                    .map_err(|e| anyhow::anyhow!("store backup: {e}"))?;
                serde_json::to_value(r)?
            } else {
                let url = match (url, &config) {
                    (Some(u), _) => u,
                    (None, Some(p)) => {
                        let c =
                            Config::load(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                        super::tokens::admin_url(&c)
                    }
                    (None, None) => format!("http://{}", crate::config::default_admin_listen()),
                };
                // The bridge resolves the path on its host: send it absolute.
                let to = if to.is_absolute() {
                    to
                } else {
                    std::env::current_dir()?.join(to)
                };
                let client = AdminClient::new(&url, &admin_token.unwrap_or_default())?;
                client
                    .post_json("/admin/api/store/backup", &json!({"to": to}))
                    .await?
            };
            println!(
                "backup in {}: {} records of {} trees ({} written during the copy), {} ms",
                report["to"].as_str().unwrap_or("?"),
                report["records"],
                report["trees"],
                report["written_during_copy"],
                report["took_ms"]
            );
            Ok(0)
        }
    }
}
