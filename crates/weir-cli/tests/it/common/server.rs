//! `weir serve` as a test runs it: the real binary on a free port of 127.0.0.1, its log kept in `serve.log`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
    /// Headers every request of [`Server::get`] and [`Server::post`] carries (a token).
    pub auth: Vec<(String, String)>,
    log: PathBuf,
}

/// A free port of 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[]).await
    }

    pub async fn start_with(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::launch(dir, &[], env, "http", reqwest::Client::new()).await
    }

    /// `weir serve dir --listen 127.0.0.1:PORT ARGS…`, reached over `scheme` with `http`; waits until it answers.
    pub async fn launch(dir: &Path, args: &[&str], env: &[(&str, &str)], scheme: &str, http: reqwest::Client) -> Self {
        let port = free_port();
        let log = dir.join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", dir.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}"), "--reload-secs", "0.2"])
            .args(args)
            .env_remove("WEIR_STATE_DIR")
            .env_remove("WEIR_API_TOKENS")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Self { child, base: format!("{scheme}://127.0.0.1:{port}"), http, auth: Vec::new(), log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.http.get(format!("{}/signin", server.base)).send().await.is_err() {
            assert!(Instant::now() < deadline, "weir serve did not come up:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.auth = vec![("Authorization".into(), format!("Bearer {token}"))];
        self
    }

    pub async fn get(&self, path: &str) -> Value {
        let mut request = self.http.get(format!("{}{path}", self.base));
        for (k, v) in &self.auth {
            request = request.header(k, v);
        }
        let text = request.send().await.unwrap().text().await.unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }

    /// A JSON POST (as the API asks of calls that change something) with `headers` besides.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        for (k, v) in &self.auth {
            request = request.header(k, v);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The runs of `pipeline`, oldest first, once at least `count` have ended.
    pub async fn runs(&self, pipeline: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let runs = self.get(&format!("/api/runs?pipeline={pipeline}")).await["runs"].as_array().unwrap().clone();
            if runs.iter().filter(|r| r["status"] != "running").count() >= count {
                return runs.into_iter().rev().collect();
            }
            assert!(Instant::now() < deadline, "{pipeline}: fewer than {count} finished runs: {runs:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}
