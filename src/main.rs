//! The `scim-bridge` command: parse the CLI, load the config, start. `anyhow` lives here only.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use scim_bridge::config::{Config, Secret};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// mimalloc rather than glibc malloc: under load glibc spent a third of the request path in
/// `_int_malloc`/`malloc_consolidate` (perf, GET by filter), and fragmented resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SCIM 2.0 bridge: provisions users, groups and roles from Okta or Entra ID into Sisense,
/// Tableau, ThoughtSpot and Metabase.
#[derive(Parser)]
#[command(name = "scim-bridge", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge. Without --config (and no ./scim-bridge.toml) it starts the embedded
    /// default: tenant `default` on the `local` connector, data kept in --data-dir.
    Serve(ServeArgs),
    /// One process: the four vendor simulators on free loopback ports and the bridge, with a
    /// table of tenants, SCIM base URLs, tokens and vendor URLs, and a ready curl line.
    Demo {
        /// Address of the bridge.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Run a standalone vendor simulator speaking that vendor's REST API.
    Simulate {
        #[arg(value_enum)]
        vendor: scim_bridge::sim::Vendor,
        /// Address to listen on, e.g. 127.0.0.1:9001.
        #[arg(long)]
        listen: SocketAddr,
        #[command(flatten)]
        opts: Box<scim_bridge::sim::SimOptions>,
    },
    /// Validate configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Mint bearer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The tamper-evident audit log: export it, or verify its hash chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Reports for access reviews.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Sweeps over vendor accounts.
    Sweep {
        #[command(subcommand)]
        command: SweepCommand,
    },
    /// What the engine would change at a tenant's vendor (dry-run tenants, pending and failed work).
    Plan {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum, default_value = "text")]
        format: scim_bridge::admin::cli::PlanFormat,
        #[command(flatten)]
        target: scim_bridge::admin::cli::Target,
    },
    /// Scale-out: tenants partitioned over the replicas of one StatefulSet.
    Shard {
        #[command(subcommand)]
        command: ShardCommand,
    },
    /// The store: export, import and backup (CONTRACT §6).
    Store {
        #[command(subcommand)]
        command: scim_bridge::admin::store::StoreCommand,
    },
}

#[derive(Subcommand)]
enum ShardCommand {
    /// Assigns the config's tenants to N replicas (stable, balanced by size) and writes the
    /// per-shard configs, a ConfigMap, a Service per shard and the Ingress that routes
    /// /tenants/{id}/ to the replica that owns the tenant.
    Plan(ShardPlanArgs),
}

#[derive(Args)]
struct ShardPlanArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    shards: u32,
    /// Output directory (created; files in it are overwritten).
    #[arg(long, default_value = "shards")]
    out: PathBuf,
    /// Users per tenant: the admin API's `GET /admin/api/tenants` answer(s), or {"tenant": N}.
    #[arg(long)]
    sizes: Option<PathBuf>,
    /// The previous plan.json: its tenants keep their shards.
    #[arg(long)]
    previous: Option<PathBuf>,
    /// Put a tenant on a shard: TENANT=SHARD (repeatable). Moving data is the runbook's job.
    #[arg(long = "move", value_name = "TENANT=SHARD")]
    moves: Vec<String>,
    /// The StatefulSet's name (pod i is NAME-i).
    #[arg(long, default_value = "scim-bridge")]
    name: String,
    #[arg(long)]
    namespace: Option<String>,
    /// The Ingress host.
    #[arg(long)]
    host: Option<String>,
    /// The TLS Secret of the Ingress host (needs --host).
    #[arg(long)]
    tls_secret: Option<String>,
    #[arg(long)]
    ingress_class: Option<String>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The audit log, oldest first, with each entry's chain fields (seq, prev, hash).
    Export {
        #[arg(long)]
        tenant: Option<String>,
        /// Only entries at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: scim_bridge::admin::cli::AuditFormat,
        #[command(flatten)]
        target: scim_bridge::admin::cli::Target,
    },
    /// Check every tenant's hash chain; a non-zero exit names the first bad entry.
    Verify {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        target: scim_bridge::admin::cli::Target,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// One row per vendor account, grouped by person across tenants.
    Access {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_enum, default_value = "csv")]
        format: scim_bridge::admin::cli::AccessFormat,
        #[command(flatten)]
        target: scim_bridge::admin::cli::Target,
    },
}

#[derive(Subcommand)]
enum SweepCommand {
    /// Accounts without a vendor sign-in for --days: the plan, or with --apply their deactivation
    /// through the engine (audited, actor `sweep`).
    Dormant {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        days: u32,
        #[arg(long)]
        apply: bool,
        /// Also accounts the IdP does not manage (made at the vendor by hand).
        #[arg(long)]
        include_unmanaged: bool,
        #[command(flatten)]
        target: scim_bridge::admin::cli::Target,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Configuration file (TOML). Default: ./scim-bridge.toml if it exists.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides the config's `listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory for the store (overrides the config's `data_dir`; default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the admin listener (`/metrics`, detailed readiness, `/admin`); overrides
    /// `[admin] listen` (default 127.0.0.1:9090).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// HTTP worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate a config, resolve ${ENV} secrets, report every problem with its key path.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// Also sign in to each vendor and resolve every role and group named in role rules.
        #[arg(long)]
        online: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a bearer token (a JWT signed with the tenant's jwt_secret) to paste into Okta or Entra ID.
    Issue {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        tenant: String,
        /// Lifetime: e.g. 30d, 12h, 30m, 3600s; at most the config's `jwt_max_lifetime`.
        /// Default: `jwt_max_lifetime` (90d unless the config sets it).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Revoke a JWT by its `jti` (printed by `token issue`): the tenant's deny list, audited.
    /// Through the running bridge's admin API (in effect at once), or in the store when no
    /// bridge runs.
    Revoke(scim_bridge::admin::tokens::RevokeArgs),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sled=warn,actix_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Demo { listen } => {
            let demo = scim_bridge::demo::start(listen).await?;
            println!(
                "scim-bridge demo: the bridge on http://{} and four vendor simulators\n",
                demo.bridge.addr
            );
            print!("{}", demo.table());
            println!("\nCtrl-C to stop (the demo's data is discarded).");
            shutdown_signal().await;
            demo.stop().await;
            Ok(())
        }
        Command::Simulate {
            vendor,
            listen,
            opts,
        } => {
            let banner_opts = opts.clone();
            let running = scim_bridge::sim::start(vendor, listen, *opts).await?;
            print!(
                "{}",
                scim_bridge::sim::banner(vendor, &running.base_url(), &banner_opts)
            );
            tokio::select! {
                r = running.wait() => r?,
                _ = shutdown_signal() => {}
            }
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { config, online },
        } => {
            let cfg =
                Config::load(&config).map_err(|e| anyhow::anyhow!("{}:\n{e}", config.display()))?;
            // Tableau's site roles are part of its API: rules naming another are wrong before
            // anything is signed in to.
            let mut problems = scim_bridge::connector::tableau::check_offline(&cfg);
            problems.extend(scim_bridge::connector::thoughtspot::check_offline(&cfg));
            problems.extend(scim_bridge::connector::metabase::check_offline(&cfg));
            // `[tls]`: the files exist, parse, and the key matches the certificate.
            if let Some(tls) = &cfg.tls {
                if let Err(tls_problems) = scim_bridge::server::tls::check(tls) {
                    problems.extend(tls_problems);
                }
            }
            if !problems.is_empty() {
                let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
                bail!("{}:\n{}", config.display(), lines.join("\n"));
            }
            println!("{}: OK", config.display());
            for w in cfg.warnings() {
                eprintln!("warning: {w}");
            }
            print!("{}", cfg.summary());
            if online {
                online_check(&cfg).await?;
            }
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Issue {
                    config,
                    tenant,
                    ttl,
                },
        } => {
            let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let t = cfg
                .tenants
                .iter()
                .find(|t| t.id.as_str() == tenant)
                .with_context(|| format!("no tenant {tenant:?} in {}", config.display()))?;
            let secret = t.jwt_secret.as_ref().with_context(|| {
                format!("tenant {tenant:?} has no jwt_secret to sign tokens with")
            })?;
            let ttl = match ttl {
                Some(ttl) => {
                    scim_bridge::auth::parse_ttl(&ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?
                }
                None => cfg.jwt_max_lifetime,
            };
            let (token, jti) =
                scim_bridge::auth::issue_token_with_jti(&t.id, secret, ttl, cfg.jwt_max_lifetime)
                    .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            println!("{token}");
            eprintln!(
                "jti {jti}, valid for {} (revoke with: scim-bridge token revoke --config {} --tenant {tenant} --jti {jti})",
                scim_bridge::auth::format_duration(ttl),
                config.display()
            );
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Revoke(args),
        } => scim_bridge::admin::tokens::revoke_command(&args).await,
        Command::Audit { command } => {
            use scim_bridge::admin::cli;
            let code = match command {
                AuditCommand::Export {
                    tenant,
                    since,
                    format,
                    target,
                } => {
                    cli::audit_export(&target, tenant.as_deref(), since.as_deref(), format).await?
                }
                AuditCommand::Verify { tenant, target } => {
                    cli::audit_verify(&target, tenant.as_deref()).await?
                }
            };
            std::process::exit(code)
        }
        Command::Report {
            command:
                ReportCommand::Access {
                    tenant,
                    format,
                    target,
                },
        } => {
            let code =
                scim_bridge::admin::cli::report_access(&target, tenant.as_deref(), format).await?;
            std::process::exit(code)
        }
        Command::Sweep {
            command:
                SweepCommand::Dormant {
                    tenant,
                    days,
                    apply,
                    include_unmanaged,
                    target,
                },
        } => {
            let code = scim_bridge::admin::cli::sweep_dormant(
                &target,
                &tenant,
                days,
                apply,
                include_unmanaged,
            )
            .await?;
            std::process::exit(code)
        }
        Command::Plan {
            tenant,
            format,
            target,
        } => {
            let code = scim_bridge::admin::cli::plan(&target, &tenant, format).await?;
            std::process::exit(code)
        }
        Command::Store { command } => {
            let code = scim_bridge::admin::store::run(command).await?;
            std::process::exit(code)
        }
        Command::Shard {
            command: ShardCommand::Plan(args),
        } => shard_plan(args),
    }
}

/// `shard plan`: see `scim_bridge::shard`.
fn shard_plan(args: ShardPlanArgs) -> Result<()> {
    use scim_bridge::shard;
    let mut req = shard::PlanRequest {
        shards: args.shards,
        ..Default::default()
    };
    if let Some(path) = &args.sizes {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        req.sizes = shard::parse_sizes(&text)
            .map_err(|e| anyhow::anyhow!("--sizes {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.previous {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let previous = shard::ShardPlan::parse(&text)
            .map_err(|e| anyhow::anyhow!("--previous {}: {e}", path.display()))?;
        req.previous = previous
            .assignment
            .into_iter()
            .map(|a| (a.tenant, a.shard))
            .collect();
    }
    for m in &args.moves {
        let (t, s) = m
            .split_once('=')
            .with_context(|| format!("--move {m:?}: expected TENANT=SHARD"))?;
        let s: u32 = s
            .parse()
            .map_err(|_| anyhow::anyhow!("--move {m:?}: the shard must be a number"))?;
        req.moves.insert(t.to_string(), s);
    }
    shard::check_label("--name", &args.name).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(ns) = &args.namespace {
        shard::check_label("--namespace", ns).map_err(|e| anyhow::anyhow!(e))?;
    }
    if let Some(h) = &args.host {
        shard::check_host("--host", h).map_err(|e| anyhow::anyhow!(e))?;
    }
    if let Some(s) = &args.tls_secret {
        if args.host.is_none() {
            bail!("--tls-secret needs --host (TLS on an Ingress is per host)");
        }
        shard::check_host("--tls-secret", s).map_err(|e| anyhow::anyhow!(e))?;
    }
    if let Some(c) = &args.ingress_class {
        shard::check_host("--ingress-class", c).map_err(|e| anyhow::anyhow!(e))?;
    }
    let names = shard::KubeNames {
        statefulset: args.name.clone(),
        namespace: args.namespace.clone(),
        port: shard::listen_port(&args.config).map_err(|e| anyhow::anyhow!(e))?,
        host: args.host.clone(),
        tls_secret: args.tls_secret.clone(),
        ingress_class: args.ingress_class.clone(),
    };
    let (plan, secrets) =
        shard::write_plan(&args.config, &req, &names, &args.out).map_err(|e| anyhow::anyhow!(e))?;
    for key in secrets {
        eprintln!(
            "warning: {key} is a literal secret and will be in the shards' ConfigMap: use ${{ENV}} or ${{file:…}} from a Secret"
        );
    }
    println!("shard  tenants  load (users + 1 per tenant)");
    for i in 0..plan.shards {
        println!(
            "{i:>5}  {:>7}  {}",
            plan.tenants_of(i).count(),
            plan.loads[i as usize]
        );
    }
    let moved = plan
        .assignment
        .iter()
        .filter(|a| a.reason == "moved")
        .count();
    println!(
        "wrote {}: plan.json, {name}-0..{last}.toml, kubernetes/{{configmap,services,ingress}}.yaml ({moved} moved by --move)",
        args.out.display(),
        name = args.name,
        last = plan.shards - 1,
    );
    println!(
        "the StatefulSet runs {} replicas, each with --config /etc/scim-bridge/$(POD_NAME).toml from ConfigMap {}-shards",
        plan.shards, args.name
    );
    Ok(())
}

/// `config check --online`: signs in to each vendor and resolves every role and group named in
/// its role rules; every problem is reported with its tenant and key path.
async fn online_check(cfg: &Config) -> Result<()> {
    use scim_bridge::config::VendorConfig;
    let mut problems = Vec::new();
    for (index, tenant) in cfg.tenants.iter().enumerate() {
        let found = match &tenant.vendor {
            VendorConfig::Local => continue,
            VendorConfig::Sisense { .. } => {
                scim_bridge::connector::sisense::check_online(tenant, index).await
            }
            VendorConfig::Tableau { .. } => {
                scim_bridge::connector::tableau::check_online(tenant, index).await
            }
            VendorConfig::Thoughtspot { .. } => {
                scim_bridge::connector::thoughtspot::check_online(tenant, index).await
            }
            VendorConfig::Metabase { .. } => {
                scim_bridge::connector::metabase::check_online(tenant, index).await
            }
        };
        if found.is_empty() {
            println!(
                "--online: tenant {}: signed in, every role rule resolves",
                tenant.id
            );
        }
        problems.extend(found);
    }
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        bail!(
            "--online found {} problem(s):\n{}",
            problems.len(),
            lines.join("\n")
        );
    }
    Ok(())
}

/// The embedded default's token: SCIM_BRIDGE_TOKEN, else the one stored in the data dir, else a
/// new one, stored (mode 0600) and printed this once. A token shorter than 32 characters, or a
/// token file that group or others may read or write, is refused.
fn default_token(data_dir: &Path) -> Result<Secret> {
    use scim_bridge::config::MIN_STATIC_TOKEN_CHARS;
    if let Ok(t) = std::env::var("SCIM_BRIDGE_TOKEN") {
        if !t.trim().is_empty() {
            if t.trim().chars().count() < MIN_STATIC_TOKEN_CHARS {
                bail!(
                    "SCIM_BRIDGE_TOKEN: token is too short: it must be at least {MIN_STATIC_TOKEN_CHARS} characters long (generate one with `openssl rand -hex 32`)"
                );
            }
            return Ok(Secret::new(t.trim().to_string()));
        }
    }
    let path = data_dir.join("default-token");
    if path.exists() {
        check_private(&path)?;
    }
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = Secret::new(t);
        if !t.expose().trim().is_empty() {
            if t.expose().trim().chars().count() < MIN_STATIC_TOKEN_CHARS {
                bail!(
                    "{}: the stored token is too short: it must be at least {MIN_STATIC_TOKEN_CHARS} characters long; delete the file to have a new one generated, or set SCIM_BRIDGE_TOKEN",
                    path.display()
                );
            }
            eprintln!(
                "Using the token stored in {} (set SCIM_BRIDGE_TOKEN to override).",
                path.display()
            );
            return Ok(Secret::new(t.expose().trim().to_string()));
        }
    }
    create_private_dir(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let token = {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    };
    write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "Generated a bearer token for tenant `default` (stored in {}, shown only now):",
        path.display()
    );
    println!("  {token}");
    Ok(Secret::new(token))
}

/// Refuses a token file that group or others may read or write.
fn check_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "{p} holds the bearer token but has mode {:04o}: group or others may read it. Restrict it with `chmod 600 {p}` (and consider replacing the token), then start again",
                mode & 0o7777,
                p = path.display()
            );
        }
    }
    Ok(())
}

/// `create_dir_all`, with mode 0700 for every directory it creates.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

async fn serve(args: ServeArgs) -> Result<()> {
    let config_path = args.config.clone().or_else(|| {
        Path::new("scim-bridge.toml")
            .exists()
            .then(|| PathBuf::from("scim-bridge.toml"))
    });
    let mut config = match &config_path {
        Some(p) => Config::load(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        None => {
            let data_dir = args
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./data"));
            let token = default_token(&data_dir)?;
            Config::embedded_default(args.listen, data_dir, token)
        }
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(a) = args.admin_listen {
        config.admin.listen = a;
    }
    if config.tenants.is_empty() {
        bail!("no tenants configured");
    }
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let store = scim_bridge::store::Store::open(&config.data_dir)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let state = scim_bridge::server::build_state(&config, store)?;
    let mut running = scim_bridge::server::start(config.listen, state, args.workers)?;
    // SIGHUP re-reads the file (CONTRACT §6); the embedded default has none to re-read.
    match &config_path {
        Some(path) => running.reload_config_from(
            scim_bridge::server::reconfigure::ConfigSource {
                path: path.clone(),
                listen: args.listen,
                data_dir: args.data_dir.clone(),
                admin_listen: args.admin_listen,
            },
            &config,
        ),
        None => tracing::info!("no config file: SIGHUP reloads only the TLS pair"),
    }
    // The verifiers hold hashes: the plaintext static tokens are not kept.
    config.forget_static_tokens();
    let addr = running.addr;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let admin_scheme = if config.tls.is_some() && config.admin.tls {
        "https"
    } else {
        "http"
    };
    println!("scim-bridge listening on {scheme}://{addr}");
    if let Some(a) = running.admin_addr() {
        println!("  admin (metrics, console) {admin_scheme}://{a}/admin");
    }
    for t in &config.tenants {
        println!(
            "  tenant {:<16} {scheme}://{addr}/tenants/{}/scim/v2",
            t.id.as_str(),
            t.id.as_str()
        );
    }
    if config.tenants.iter().any(|t| t.id.as_str() == "default") {
        println!("  tenant default also at   {scheme}://{addr}/scim/v2");
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    running.stop().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
