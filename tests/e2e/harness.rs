//! Starts the real `vigil` binary and talks to it as a client does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

pub use crate::ports::free_port;

/// Under CI every outside program must be there; elsewhere a missing one skips the test.
pub fn require_program(path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{path} is missing: .ci/run must install it");
    }
    eprintln!("skipping: {path} is not installed (CI=true makes this a failure)");
    false
}

/// The Python with the tests' requirements: `.venv` (made by .ci/run) or `VIGIL_TEST_PYTHON`.
pub fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("VIGIL_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let works = Command::new(&candidate)
        .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Some(candidate);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{} lacks tests/requirements.txt: .ci/run must install them", candidate.display());
    }
    eprintln!("skipping: no Python with tests/requirements.txt (CI=true makes this a failure)");
    None
}

/// A file of the tests' own data.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(name)
}

pub struct Vigil {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Base URLs of the OTLP receivers.
    pub otlp_http: String,
    pub otlp_grpc: String,
    pub client: reqwest::Client,
    log: PathBuf,
    scheme: &'static str,
    ca_pem: Option<Vec<u8>>,
}

/// The value of one series (`name{labels}` as written) in a `/metrics` text; 0 when absent.
pub fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

impl Vigil {
    /// Vigil's own `/metrics` text.
    pub async fn own_metrics(&self) -> String {
        self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// Starts `vigil serve` with a config file holding `config` (YAML).
    pub async fn start_with_config(data_dir: &Path, config: &str, extra: &[&str]) -> Vigil {
        let path = data_dir.with_extension("yaml");
        std::fs::write(&path, config).unwrap();
        let mut args = vec!["--config", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        Vigil::start(data_dir, &args).await
    }

    /// Starts `vigil serve` on a free port with `data_dir`, plus `extra` arguments.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Vigil {
        Vigil::launch(data_dir, extra, None).await
    }

    /// As `start`, with `extra` turning TLS on; the client trusts `ca_pem`.
    pub async fn start_tls(data_dir: &Path, extra: &[&str], ca_pem: &[u8]) -> Vigil {
        Vigil::launch(data_dir, extra, Some(ca_pem)).await
    }

    async fn launch(data_dir: &Path, extra: &[&str], ca_pem: Option<&[u8]>) -> Vigil {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let (otlp_http, otlp_grpc) = (free_port(), free_port());
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.with_extension(format!("{}.log", addr.port()));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(VIGIL)
            .arg("serve")
            .arg("--http-addr")
            .arg(addr.to_string())
            .arg("--otlp-http-addr")
            .arg(format!("127.0.0.1:{}", otlp_http))
            .arg("--otlp-grpc-addr")
            .arg(format!("127.0.0.1:{}", otlp_grpc))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env_remove("VIGIL_CONFIG")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn vigil");
        let scheme = if ca_pem.is_some() { "https" } else { "http" };
        let ca_pem = ca_pem.map(<[u8]>::to_vec);
        let vigil = Vigil {
            child: Some(child),
            addr,
            otlp_http: format!("{scheme}://127.0.0.1:{otlp_http}"),
            otlp_grpc: format!("{scheme}://127.0.0.1:{otlp_grpc}"),
            client: client(ca_pem.as_deref(), None),
            log,
            scheme,
            ca_pem,
        };
        vigil.wait_ready().await;
        vigil
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// A client that sends `token` as a bearer token with every request (`None`: no token).
    pub fn client_with_token(&self, token: Option<&str>) -> reqwest::Client {
        client(self.ca_pem.as_deref(), token)
    }

    /// From now on the helpers (`sql`, `count`, ...) send `token`.
    pub fn use_token(&mut self, token: &str) {
        self.client = self.client_with_token(Some(token));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A `/proc/PID/status` memory figure (`VmRSS`, `VmHWM`) in bytes.
    pub fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line =
            status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in /proc status"));
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(response) = self.client.get(self.url("/-/ready")).send().await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("vigil did not become ready; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The rows of a query, as JSON arrays.
    /// The JSON body of a GET of `path`.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client.get(self.url(path)).send().await.unwrap().json().await.unwrap()
    }

    pub async fn rows(&self, query: &str) -> Vec<Value> {
        self.sql(query).await["rows"].as_array().unwrap().clone()
    }

    /// Runs SQL and returns the JSON document, panicking on an error status.
    pub async fn sql(&self, query: &str) -> Value {
        let response =
            self.client.post(self.url("/api/v1/sql")).json(&serde_json::json!({"query": query})).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{query} -> {status}: {body}");
        body
    }

    /// The single integer a `SELECT count(*) ...` returns.
    pub async fn count(&self, query: &str) -> i64 {
        let body = self.sql(query).await;
        body["rows"][0][0].as_i64().unwrap_or_else(|| panic!("{query} -> {body}"))
    }

    /// Sends SIGKILL: no flush, no clean WAL close.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("vigil did not stop after SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn client(ca_pem: Option<&[u8]>, token: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if let Some(pem) = ca_pem {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
    }
    if let Some(token) = token {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        builder = builder.default_headers(headers);
    }
    builder.build().unwrap()
}

impl Drop for Vigil {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` every 200 ms until it yields, failing the test after `seconds`.
pub async fn wait_until<T>(what: &str, seconds: u64, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
