//! The CLI's side of the admin API (CONTRACT §5): `audit`, `report`, `sweep` and `plan` talk to
//! a running bridge, because sled lets one process hold a store. The address is `--url`, else
//! the config's `[admin] listen`, else `http://127.0.0.1:9090`; the token is `--admin-token`
//! or `SCIM_BRIDGE_ADMIN_TOKEN`.

use anyhow::{bail, Context, Result};
use std::io::Write;

/// Where and as whom the CLI reaches the admin API.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(url: &str, token: &str) -> Result<AdminClient> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--url must be an http(s) URL, e.g. http://127.0.0.1:9090");
        }
        if token.is_empty() {
            bail!("no admin token: pass --admin-token or set SCIM_BRIDGE_ADMIN_TOKEN");
        }
        Ok(AdminClient {
            base,
            token: token.to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .build()?,
        })
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Url> {
        let mut u = reqwest::Url::parse(&format!("{}{path}", self.base))
            .context("building the admin API URL")?;
        if !query.is_empty() {
            u.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(u)
    }

    async fn check(&self, r: reqwest::Response) -> Result<reqwest::Response> {
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        let body = r.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        match status.as_u16() {
            401 => bail!("the admin API refused the token (HTTP 401): {msg}"),
            _ => bail!("the admin API answered HTTP {}: {msg}", status.as_u16()),
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the bridge's admin API at {}: {e}. Is the bridge running? (Without one, pass --data-dir to read the store directly.)",
            self.base
        )
    }

    /// GET, the JSON answer.
    pub async fn get_json(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<serde_json::Value> {
        let r = self
            .http
            .get(self.url(path, query)?)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(self.check(r).await?.json().await?)
    }

    /// POST of a JSON body, the JSON answer.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        let r = self
            .http
            .post(self.url(path, &[])?)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(self.check(r).await?.json().await?)
    }

    /// GET, the body streamed to `out` as it arrives; `progress` is told the lines so far.
    pub async fn get_to(
        &self,
        path: &str,
        query: &[(&str, String)],
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let mut r = self
            .http
            .get(self.url(path, query)?)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        r = self.check(r).await?;
        let mut lines = 0u64;
        while let Some(chunk) = r.chunk().await? {
            out.write_all(&chunk)?;
            let n = chunk.iter().filter(|b| **b == b'\n').count() as u64;
            if n > 0 {
                lines += n;
                progress(lines);
            }
        }
        out.flush()?;
        Ok(lines)
    }
}

/// Progress of a long CLI job on stderr: a bar redrawn in place on a terminal, a plain line
/// every `every` items otherwise (CI logs, pipes).
pub struct Progress {
    what: &'static str,
    total: Option<u64>,
    tty: bool,
    last: u64,
    every: u64,
    started: std::time::Instant,
}

impl Progress {
    pub fn new(what: &'static str, total: Option<u64>) -> Progress {
        use std::io::IsTerminal;
        Progress {
            what,
            total,
            tty: std::io::stderr().is_terminal(),
            last: 0,
            every: 10_000,
            started: std::time::Instant::now(),
        }
    }

    pub fn update(&mut self, done: u64) {
        if self.tty {
            if done.saturating_sub(self.last) < 500 && Some(done) != self.total {
                return;
            }
            self.last = done;
            let line = match self.total {
                Some(t) if t > 0 => {
                    let width = 30usize;
                    let filled = ((done.min(t) as f64 / t as f64) * width as f64) as usize;
                    format!(
                        "\r{} [{}{}] {done}/{t}",
                        self.what,
                        "#".repeat(filled),
                        " ".repeat(width - filled)
                    )
                }
                _ => format!("\r{} {done}", self.what),
            };
            eprint!("{line}");
        } else if done / self.every > self.last / self.every {
            self.last = done;
            eprintln!(
                "{}: {done}{} ({:.1} s)",
                self.what,
                self.total.map(|t| format!(" of {t}")).unwrap_or_default(),
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    pub fn finish(&mut self, done: u64) {
        if self.tty {
            eprintln!(
                "\r{} {done} done in {:.1} s",
                self.what,
                self.started.elapsed().as_secs_f64()
            );
        } else if done > 0 {
            eprintln!(
                "{}: {done} done in {:.1} s",
                self.what,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}
