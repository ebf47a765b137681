//! `vigil slo backtest FILE`: sends one SLO definition to a running Vigil, which replays its
//! stored data through it (`POST /api/v1/backtest`), and prints what would have fired.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::cli::BacktestArgs;

const NO_ANSWER: u8 = 2;

pub async fn run(args: &BacktestArgs) -> ExitCode {
    match backtest(args).await {
        Ok(answer) => {
            if args.json {
                println!("{answer:#}");
            } else {
                print!("{}", summary(&answer["backtest"]));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigil slo backtest: {e:#}");
            ExitCode::from(NO_ANSWER)
        }
    }
}

async fn backtest(args: &BacktestArgs) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let mut query = Vec::new();
    for (key, value) in [("from", &args.from), ("to", &args.to)] {
        if let Some(value) = value {
            query.push((key, value.clone()));
        }
    }
    crate::gate::ask(&args.server, "/api/v1/backtest", 300, |client, url| {
        client.post(url).query(&query).header("content-type", "application/yaml").body(text)
    })
    .await
}

fn time(ms: &Value) -> String {
    ms.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// The alerts one per line, then the totals.
fn summary(backtest: &Value) -> String {
    let mut out = format!(
        "{} from {} to {}\n",
        backtest["slo"].as_str().unwrap_or_default(),
        time(&backtest["from_ms"]),
        time(&backtest["to_ms"])
    );
    for alert in backtest["alerts"].as_array().into_iter().flatten() {
        let budget = alert["budget_at_start"].as_f64().map_or_else(|| "-".into(), |b| format!("{:.1}%", b * 100.0));
        out.push_str(&format!(
            "  {:<7} {:<28} {} to {}  peak {:.3}  budget {}{}\n",
            alert["severity"].as_str().unwrap_or_default(),
            alert["alertname"].as_str().unwrap_or_default(),
            time(&alert["started_ms"]),
            if alert["ended_ms"].is_null() { "the end (still firing)".into() } else { time(&alert["ended_ms"]) },
            alert["peak_value"].as_f64().unwrap_or(f64::NAN),
            budget,
            if alert["inhibited"] == true { "  (inhibited, not sent)" } else { "" },
        ));
    }
    let totals = &backtest["totals"];
    out.push_str(&format!(
        "{} pages, {} tickets ({} more inhibited), {} other alerts; {} minutes paging; budget left at the end {}\n",
        totals["pages"],
        totals["tickets"],
        totals["inhibited_tickets"],
        totals["other"],
        totals["page_minutes"],
        totals["final_budget"].as_f64().map_or_else(|| "-".into(), |b| format!("{:.1}%", b * 100.0)),
    ));
    out
}
