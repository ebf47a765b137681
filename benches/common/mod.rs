//! What the benches share: starting Vigil, reading a process's CPU time and peak memory.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Peak resident memory (VmHWM) of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

pub mod peers;

#[path = "../../tests/e2e/ports.rs"]
mod ports;
pub use ports::free_port as port;

pub async fn wait_ready(url: &str) {
    wait_ready_with(&reqwest::Client::new(), url).await;
}

pub async fn wait_ready_with(client: &reqwest::Client, url: &str) {
    for _ in 0..600 {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never became ready");
}

/// A running `vigil serve` on free ports.
pub struct VigilProcess {
    pub child: Child,
    pub http: u16,
    pub otlp_http: u16,
    pub otlp_grpc: u16,
}

impl VigilProcess {
    pub async fn start(data: &Path, extra: &[&str]) -> VigilProcess {
        let vigil = VigilProcess::spawn(data, extra);
        wait_ready(&format!("http://127.0.0.1:{}/-/ready", vigil.http)).await;
        vigil
    }

    /// As `start`, with `extra` turning TLS on; `client` trusts its CA.
    pub async fn start_tls(data: &Path, extra: &[&str], client: &reqwest::Client) -> VigilProcess {
        let vigil = VigilProcess::spawn(data, extra);
        wait_ready_with(client, &format!("https://127.0.0.1:{}/-/ready", vigil.http)).await;
        vigil
    }

    fn spawn(data: &Path, extra: &[&str]) -> VigilProcess {
        let (http, otlp_http, otlp_grpc) = (port(), port(), port());
        // `VIGIL_BENCH_BIN` runs another build side by side (e.g. an allocator comparison).
        let binary = std::env::var_os("VIGIL_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_vigil").into());
        let child = Command::new(binary)
            .arg("serve")
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .args(["--otlp-http-addr", &format!("127.0.0.1:{otlp_http}")])
            .args(["--otlp-grpc-addr", &format!("127.0.0.1:{otlp_grpc}")])
            .args(["--log-level", "warn"])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        VigilProcess { child, http, otlp_http, otlp_grpc }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Merges the server's last compaction pass found due and has not done
    /// (`vigil_storage_compactions_pending`), or `None` before its first pass.
    pub async fn compactions_pending(&self) -> Option<u64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.http);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("vigil_storage_compactions_pending "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
    }

    /// SIGTERM (flush) and wait.
    pub fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
    }
}

/// Bytes and segment files of a Vigil store (`segments/`) that its manifests still name: the
/// files a compaction replaced stay on disk for a grace period (queries planned with them may
/// still read them), listed in each node's root manifest as pending deletes.
pub fn live_store(segments: &Path) -> (u64, usize) {
    let mut replaced = std::collections::HashSet::new();
    for node in std::fs::read_dir(segments.join("nodes")).into_iter().flatten().flatten() {
        let Ok(root) = std::fs::read(node.path().join("manifest.json")) else { continue };
        let root: serde_json::Value = serde_json::from_slice(&root).expect("a root manifest");
        for pending in root["pending_deletes"].as_array().into_iter().flatten() {
            let path = pending["path"].as_str().expect("a pending delete's path");
            replaced.insert(segments.join(path));
            if let Some(stem) = path.strip_suffix(".parquet") {
                replaced.insert(segments.join(format!("{stem}.series")));
            }
        }
    }
    let mut live = (0, 0);
    each_file(segments, &mut |path, bytes| {
        if !replaced.contains(path) {
            live.0 += bytes;
            live.1 += usize::from(path.extension().is_some_and(|e| e == "parquet"));
        }
    });
    live
}

/// Calls `visit` with each file under `dir` and its size. A peer merging in the background
/// removes files between the listing and this: those are skipped.
fn each_file(dir: &Path, visit: &mut dyn FnMut(&Path, u64)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            each_file(&entry.path(), visit);
        } else {
            visit(&entry.path(), meta.len());
        }
    }
}

pub fn dir_bytes(path: &Path, suffix: Option<&str>) -> u64 {
    let mut total = 0;
    each_file(path, &mut |file, bytes| {
        if suffix.is_none_or(|s| file.to_string_lossy().ends_with(s)) {
            total += bytes;
        }
    });
    total
}
