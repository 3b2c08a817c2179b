//! The acceptance runs under faults, for any vendor (tests/*_chaos.rs): the simulator process
//! frozen with SIGSTOP in the middle of a sequence and continued by a timer (`Freeze`), and the
//! bridge as the real binary, SIGKILLed while its outbox still holds changes and restarted on
//! the same data dir and port (`Binary`). What is the vendor's — its simulator's switches, the
//! bridge's config file, its end state — the vendor's test passes in.
//!
//! Include it beside `idp.rs` and `bridge.rs` (it uses both through `super`):
//!
//! ```ignore
//! #[path = "support/idp.rs"]
//! mod idp;
//! #[path = "support/bridge.rs"]
//! mod bridge;
//! #[path = "support/chaos.rs"]
//! mod chaos;
//! ```
#![allow(dead_code)]

use super::bridge::outbox_depth;
use super::idp::{bridge_command, free_port, ChildGuard, Idp, REQUEST_LIMIT};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Run 1's switches for `scim-bridge simulate`: 10% of requests failed with the vendor's own
/// 5xx, 20 requests/s before its own 429, sessions or tokens that last `token_ttl`, seed 7.
pub fn vendor_faults(token_ttl: Duration) -> Vec<String> {
    let ttl = token_ttl.as_secs().to_string();
    [
        "--error-rate",
        "0.1",
        "--throttle-rps",
        "20",
        "--token-ttl-s",
        &ttl,
        "--seed",
        "7",
    ]
    .map(String::from)
    .to_vec()
}

/// How many of `tenant`'s deliveries the bridge retried after a fault (the `/metrics` of its
/// admin listener at `admin_root`).
pub async fn deliveries_retried(admin_root: &str, tenant: &str) -> f64 {
    super::bridge::metric(
        admin_root,
        &format!("scim_vendor_deliveries_total{{outcome=\"retried\",tenant=\"{tenant}\"}}"),
    )
    .await
}

/// The simulator process frozen for `freeze` from the sequence's midpoint: call `stop` from the
/// sequence's `mid` hook, then `check` once the sequence has been sent.
pub struct Freeze<'a> {
    sim: &'a mut ChildGuard,
    freeze: Duration,
    stopped_at: Option<Instant>,
}

impl<'a> Freeze<'a> {
    pub fn new(sim: &'a mut ChildGuard, freeze: Duration) -> Freeze<'a> {
        Freeze {
            sim,
            freeze,
            stopped_at: None,
        }
    }

    /// Stops the simulator (SIGSTOP) and arms the timer that continues it (SIGCONT) `freeze`
    /// later; the timer is the simulator guard's, so it is cancelled if the test ends first.
    pub fn stop(&mut self) {
        self.sim.signal("-STOP");
        self.stopped_at = Some(Instant::now());
        let pid = self.sim.pid();
        let freeze = self.freeze;
        self.sim.cont = Some(tokio::spawn(async move {
            tokio::time::sleep(freeze).await;
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid])
                .status();
        }));
    }

    /// After the sequence: while the simulator is still frozen, the bridge's readiness stays
    /// 200 (the store serves) and quick; then waits for the simulator to be continued, and
    /// asserts the IdP sent requests while it was frozen.
    pub async fn check(self, idp: &Idp) {
        let label = &idp.label;
        let stopped_at = self.stopped_at.expect("the sequence reached its midpoint");
        let rest_took = stopped_at.elapsed();
        if rest_took < self.freeze {
            let started = Instant::now();
            let r = idp
                .http
                .get(format!("{}/readyz", idp.root))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{label}: /readyz: {e}"));
            assert_eq!(r.status().as_u16(), 200, "{label}: /readyz while frozen");
            assert!(started.elapsed() < REQUEST_LIMIT, "{label}: /readyz slow");
        }
        let cont = self.sim.cont.take().expect("the continue timer");
        cont.await.unwrap();
        let (n, slowest) = idp.during(stopped_at, stopped_at + self.freeze);
        eprintln!(
            "{label}: rest of the sequence took {rest_took:?} from the stop; \
             {n} requests while frozen, slowest {slowest:?}"
        );
        assert!(
            n > 0,
            "{label}: nothing was sent while the simulator was frozen"
        );
    }
}

/// The bridge as the real binary: `serve --config <dir>/scim-bridge.toml` with a 200 ms inline
/// deadline (in front of a slow simulator, every write is answered from the outbox). Its admin
/// listener is on a free port of its own (`--admin-listen`), never the default 9090 that every
/// bridge of a parallel run would fight over.
pub struct Binary {
    config_path: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub root: String,
    /// The admin listener, `http://127.0.0.1:PORT` (`/metrics`, detailed `/readyz`).
    pub admin_root: String,
    admin_listen: String,
    tenant: &'static str,
    token: &'static str,
    child: ChildGuard,
}

impl Binary {
    /// Writes the config file `toml(listen, data_dir)` into `dir` (data in `dir/data`, on a
    /// free port), starts the binary and waits until `tenant` is ready.
    pub async fn start(
        dir: &Path,
        tenant: &'static str,
        token: &'static str,
        toml: impl FnOnce(&str, &Path) -> String,
    ) -> Binary {
        let port = free_port();
        let config_path = dir.join("scim-bridge.toml");
        std::fs::write(
            &config_path,
            toml(&format!("127.0.0.1:{port}"), &dir.join("data")),
        )
        .unwrap();
        let admin_listen = format!("127.0.0.1:{}", free_port());
        let child = Self::spawn(&config_path, &admin_listen);
        let binary = Binary {
            config_path,
            root: format!("http://127.0.0.1:{port}"),
            admin_root: format!("http://{admin_listen}"),
            admin_listen,
            tenant,
            token,
            child,
        };
        binary.wait_ready().await;
        binary
    }

    fn spawn(config_path: &Path, admin_listen: &str) -> ChildGuard {
        ChildGuard::spawn(
            bridge_command()
                .args(["serve", "--admin-listen", admin_listen, "--config"])
                .arg(config_path)
                .env("SCIM_BRIDGE_INLINE_DEADLINE_MS", "200"),
        )
    }

    async fn wait_ready(&self) {
        Idp::patient(&self.root, self.tenant, self.token)
            .with_admin(&self.admin_root)
            .wait_ready()
            .await;
    }

    /// SIGKILLs the binary — which must still hold changes pending in its outbox, else the
    /// run tests nothing — and starts it again on the same data dir and port.
    pub async fn kill_and_restart(&mut self, label: &str) {
        let pending = outbox_depth(&self.admin_root, self.tenant, "pending").await;
        self.child.kill9();
        eprintln!("{label}: killed with {pending} object(s) pending in the outbox");
        assert!(
            pending >= 1.0,
            "{label}: the outbox was already drained at the kill (the run tests nothing)"
        );
        self.child = Self::spawn(&self.config_path, &self.admin_listen);
        self.wait_ready().await;
    }
}
