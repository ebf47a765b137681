//! `vigil gate`: asks a running Vigil whether a service may deploy (its SLOs' error-budget
//! policies) and answers with the exit code, for CI pipelines: 0 allowed, 1 frozen (the
//! reasons printed), 2 when the answer could not be had.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::{GateArgs, ServerArgs};

/// Exit code of a frozen service; 2 means the gate could not answer.
const FROZEN: u8 = 1;
const NO_ANSWER: u8 = 2;

pub async fn run(args: &GateArgs) -> ExitCode {
    match decide(args).await {
        Ok(decision) => {
            let allow = decision["allow"].as_bool().unwrap_or(false);
            let service = decision["service"].as_str().unwrap_or(&args.service);
            if allow {
                println!("deploys of {service} are allowed");
                return ExitCode::SUCCESS;
            }
            println!("deploys of {service} are frozen:");
            for reason in decision["reasons"].as_array().into_iter().flatten() {
                println!("  - {}", reason.as_str().unwrap_or_default());
            }
            ExitCode::from(FROZEN)
        }
        Err(e) => {
            eprintln!("vigil gate: {e:#}");
            ExitCode::from(NO_ANSWER)
        }
    }
}

async fn decide(args: &GateArgs) -> anyhow::Result<serde_json::Value> {
    ask(&args.server, "/api/v1/gate", 10, |client, url| client.get(url).query(&[("service", &args.service)])).await
}

/// Sends the request `build` makes for `path` of the server and returns its JSON answer; a
/// non-2xx status is an error carrying the server's `error` and `hint`. `default_timeout`
/// (seconds) applies unless `--timeout-seconds` is given.
pub async fn ask(
    server: &ServerArgs,
    path: &str,
    default_timeout: u64,
    build: impl FnOnce(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> anyhow::Result<serde_json::Value> {
    let timeout = Duration::from_secs(server.timeout_seconds.unwrap_or(default_timeout));
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let url = format!("{}{path}", server.url.trim_end_matches('/'));
    let mut request = build(&client, &url);
    if let Some(token) = &server.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.with_context(|| format!("asking {url}"))?;
    let status = response.status();
    let body: serde_json::Value =
        response.json().await.with_context(|| format!("{url} answered {status} without a JSON body"))?;
    if !status.is_success() {
        let error = body["error"].as_str().unwrap_or("no reason given");
        let hint = body["hint"].as_str().map(|h| format!(" ({h})")).unwrap_or_default();
        bail!("{url} answered {status}: {error}{hint}");
    }
    Ok(body)
}
