//! `GET /api/v1/targets`: scrape targets and their health, in Prometheus's shape.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;

pub async fn targets(State(app): State<AppState>) -> Json<Value> {
    let active: Vec<Value> = app
        .scraper
        .targets()
        .into_iter()
        .map(|(target, health)| {
            let labels: serde_json::Map<String, Value> =
                target.target_labels().into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            let last_scrape = health.last_scrape_unix_ms.and_then(chrono::DateTime::from_timestamp_millis).map_or_else(
                || "0001-01-01T00:00:00Z".to_string(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
            json!({
                "discoveredLabels": {"__address__": target.address, "__metrics_path__": target.metrics_path,
                                     "__scheme__": target.scheme, "job": target.job},
                "labels": labels,
                "scrapePool": target.job,
                "scrapeUrl": target.url(),
                "globalUrl": target.url(),
                "lastError": health.last_error,
                "lastScrape": last_scrape,
                "lastScrapeDuration": health.last_duration_seconds,
                "health": health.health,
                "scrapeInterval": format!("{}s", target.interval.as_secs()),
                "scrapeTimeout": format!("{}s", target.timeout.as_secs()),
            })
        })
        .collect();
    Json(json!({"status": "success", "data": {"activeTargets": active, "droppedTargets": []}}))
}
