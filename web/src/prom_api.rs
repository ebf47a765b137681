//! The Prometheus HTTP API (`/api/v1/query`, `query_range`, `series`, `labels`,
//! `label/{name}/values`, `metadata`, `status/buildinfo`), GET or form POST, with
//! Prometheus's response shapes: `{"status", "data"}`, sample values as strings, timestamps
//! as seconds, errors as `{"status": "error", "errorType", "error"}`. Grafana's Prometheus
//! data source works against it unchanged.

use std::collections::BTreeMap;
use std::ops::Range;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vigil_query::promql::{EvalRange, Labels, PromError, PromResult};

use crate::AppState;

/// Parameters from the query string and, for form POSTs, the body; repeatable keys kept.
struct Params(Vec<(String, String)>);

impl Params {
    fn read(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Params {
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if form {
            pairs.extend(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())));
        }
        Params(pairs)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }
}

/// An API error in Prometheus's shape.
struct ApiFailure {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl ApiFailure {
    fn bad_data(message: impl Into<String>) -> Self {
        ApiFailure { status: StatusCode::BAD_REQUEST, error_type: "bad_data", message: message.into() }
    }
}

/// The HTTP status of a PromQL failure, as Prometheus's API answers it.
pub(crate) fn status_of(error: &PromError) -> StatusCode {
    match error {
        PromError::BadData(_) => StatusCode::BAD_REQUEST,
        PromError::Execution(_) | PromError::ResourcesExhausted(_) => StatusCode::UNPROCESSABLE_ENTITY,
        PromError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        PromError::Internal(_) | PromError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<PromError> for ApiFailure {
    fn from(error: PromError) -> Self {
        ApiFailure { status: status_of(&error), error_type: error.error_type(), message: error.to_string() }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.error_type, "error": self.message});
        (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

/// Prometheus's success envelope, its keys in the order a `json!` map writes them.
#[derive(serde::Serialize)]
struct Success<T> {
    data: T,
    status: &'static str,
}

/// `data` in the success envelope, serialised as it is (turned into a `Value` first, a list
/// of 4,000 series' labels was copied once more, a seventh of `/api/v1/series`'s time).
fn success(data: impl serde::Serialize) -> Response {
    match serde_json::to_vec(&Success { data, status: "success" }) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => ApiFailure::from(PromError::Internal(error.to_string())).into_response(),
    }
}

/// A time as Prometheus accepts it: Unix seconds (fractions allowed) or RFC 3339.
fn parse_time(text: &str, name: &str) -> Result<i64, ApiFailure> {
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
    {
        return Ok((seconds * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|_| {
        ApiFailure::bad_data(format!("invalid parameter \"{name}\": cannot parse {text:?} to a valid timestamp"))
    })
}

/// A step or timeout: seconds (fractions allowed) or a Prometheus duration.
fn parse_duration_ms(text: &str, name: &str) -> Result<i64, ApiFailure> {
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
    {
        return Ok((seconds * 1000.0).round() as i64);
    }
    promql_duration(text).ok_or_else(|| {
        ApiFailure::bad_data(format!("invalid parameter \"{name}\": cannot parse {text:?} to a valid duration"))
    })
}

fn promql_duration(text: &str) -> Option<i64> {
    vigil_query::promql::parse_duration(text).map(|d| d.as_millis() as i64)
}

/// `ts` as Prometheus writes it: seconds, with the milliseconds as a 3-digit fraction.
fn write_timestamp(out: &mut Vec<u8>, ms: i64) {
    if ms < 0 {
        out.push(b'-');
    }
    let ms = ms.unsigned_abs();
    out.extend_from_slice(itoa::Buffer::new().format(ms / 1000).as_bytes());
    let millis = ms % 1000;
    if millis != 0 {
        out.extend_from_slice(&[
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
        ]);
    }
}

/// Room for a time's text: a sign, 19 digits, a point and 3 more.
const TIME_TEXT: usize = 24;

/// Slots for times' text, a prime: the steps of a range answer (multiples of any step not
/// itself a multiple of 1,021 ms) fall in different slots, 1,021 steps in a row.
const TIME_SLOTS: usize = 1_021;

/// Writes the `[ts,"value"]` points of one answer. A range answer's series share their
/// steps, so each time's text is written once and copied to the other series' points
/// (kept in a slot the time picks; another time in the slot writes its own); and it is
/// copied as a block of fixed size, then cut, because a copy whose size is known only at
/// run time is a call to `memcpy`, and an answer has hundreds of thousands of them.
struct PointWriter {
    times: Vec<(i64, [u8; TIME_TEXT], u8)>,
}

/// Room for a value's text copied from a series' previous point as a block of fixed size;
/// a longer one is copied as it is.
const VALUE_TEXT: usize = 16;

impl PointWriter {
    fn new() -> Self {
        PointWriter { times: Vec::new() }
    }

    /// Writes a point; `same` is where in `out` the text of a value with the same bits is
    /// (a series' previous point's: consecutive points often hold the same value, a sample
    /// seen by several steps, a flat gauge, an `_over_time` extreme, and copying its text is
    /// cheaper than writing it). Answers where this value's text is.
    fn write(&mut self, out: &mut Vec<u8>, ms: i64, value: f64, same: Option<Range<usize>>) -> Range<usize> {
        out.push(b'[');
        self.write_time(out, ms);
        out.extend_from_slice(b",\"");
        let start = out.len();
        match same {
            // The point between them is longer than the block, so the block is all in `out`.
            Some(text) if text.len() <= VALUE_TEXT && text.start + VALUE_TEXT <= start => {
                out.extend_from_within(text.start..text.start + VALUE_TEXT);
                out.truncate(start + text.len());
            }
            Some(text) => out.extend_from_within(text),
            None => vigil_query::promql::kernels::write_value(out, value),
        }
        let text = start..out.len();
        out.extend_from_slice(b"\"]");
        text
    }

    fn write_time(&mut self, out: &mut Vec<u8>, ms: i64) {
        if self.times.is_empty() {
            self.times = vec![(i64::MIN, [0; TIME_TEXT], 0); TIME_SLOTS];
        }
        let slot = &mut self.times[ms.rem_euclid(TIME_SLOTS as i64) as usize];
        // A slot never written holds no text (a time's text is never empty), whatever its time.
        if slot.0 == ms && slot.2 > 0 {
            out.extend_from_slice(&slot.1);
            out.truncate(out.len() - (TIME_TEXT - slot.2 as usize));
            return;
        }
        let start = out.len();
        write_timestamp(out, ms);
        let text = &out[start..];
        slot.1[..text.len()].copy_from_slice(text);
        (slot.0, slot.2) = (ms, text.len() as u8);
    }
}

fn write_string_point(out: &mut Vec<u8>, ms: i64, text: &str) {
    out.push(b'[');
    write_timestamp(out, ms);
    out.push(b',');
    out.extend_from_slice(Value::String(text.to_string()).to_string().as_bytes());
    out.push(b']');
}

fn write_labels(out: &mut Vec<u8>, labels: &Labels) {
    if serde_json::to_writer(&mut *out, labels).is_err() {
        out.extend_from_slice(b"{}");
    }
}

fn format_value(value: f64) -> String {
    vigil_query::promql::kernels::format_value(value)
}

/// The `data` object of a query result, as raw JSON, appended to `out`.
fn write_result(out: &mut Vec<u8>, result: &PromResult) {
    let mut points = PointWriter::new();
    match result {
        PromResult::Vector(samples) => {
            out.extend_from_slice(br#"{"resultType":"vector","result":["#);
            for (i, sample) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"metric":"#);
                write_labels(out, &sample.labels);
                out.extend_from_slice(br#","value":"#);
                points.write(out, sample.timestamp_ms, sample.value, None);
                out.push(b'}');
            }
            out.extend_from_slice(b"]}");
        }
        PromResult::Matrix(series) => {
            out.extend_from_slice(br#"{"resultType":"matrix","result":["#);
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"metric":"#);
                write_labels(out, &s.labels);
                out.extend_from_slice(br#","values":["#);
                let mut previous: Option<(u64, Range<usize>)> = None;
                for (j, (t, v)) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    let same = previous.filter(|(bits, _)| *bits == v.to_bits()).map(|(_, text)| text);
                    previous = Some((v.to_bits(), points.write(out, *t, *v, same)));
                }
                out.extend_from_slice(b"]}");
            }
            out.extend_from_slice(b"]}");
        }
        PromResult::Scalar(t, v) => {
            out.extend_from_slice(br#"{"resultType":"scalar","result":"#);
            points.write(out, *t, *v, None);
            out.push(b'}');
        }
        PromResult::String(t, s) => {
            out.extend_from_slice(br#"{"resultType":"string","result":"#);
            write_string_point(out, *t, s);
            out.push(b'}');
        }
    }
}

fn query_response(result: &PromResult) -> Response {
    // A point is ~30 bytes of text (`[1700000000.123,"0.25"]`): reserve them up front
    // rather than copying a large answer as it grows.
    let points = match result {
        PromResult::Matrix(series) => series.iter().map(|s| s.points.len() + 4).sum(),
        PromResult::Vector(samples) => samples.len() * 4,
        _ => 1,
    };
    let mut body = Vec::with_capacity(64 + points * 32);
    body.extend_from_slice(br#"{"status":"success","data":"#);
    write_result(&mut body, result);
    body.push(b'}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, ApiFailure> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiFailure::bad_data(format!("invalid parameter \"{name}\": missing")))
}

pub async fn query(State(app): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let params = Params::read(raw.as_deref(), &headers, &body);
    let run = async {
        let text = required(&params, "query")?;
        let at = match params.get("time") {
            Some(t) if !t.is_empty() => parse_time(t, "time")?,
            _ => crate::now_ms(),
        };
        Ok::<_, ApiFailure>(app.engine.promql(text, EvalRange::instant(at)).await?)
    };
    match run.await {
        Ok(result) => query_response(&result),
        Err(failure) => failure.into_response(),
    }
}

pub async fn query_range(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::read(raw.as_deref(), &headers, &body);
    let run = async {
        let text = required(&params, "query")?;
        let start = parse_time(required(&params, "start")?, "start")?;
        let end = parse_time(required(&params, "end")?, "end")?;
        let step = parse_duration_ms(required(&params, "step")?, "step")?;
        if end < start {
            return Err(ApiFailure::bad_data("invalid parameter \"end\": end timestamp must not be before start time"));
        }
        if step <= 0 {
            return Err(ApiFailure::bad_data(
                "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        Ok(app.engine.promql(text, EvalRange::range(start, end, step)).await?)
    };
    match run.await {
        Ok(result) => query_response(&result),
        Err(failure) => failure.into_response(),
    }
}

/// `start`/`end` of the metadata endpoints: default to all time.
fn time_bounds(params: &Params) -> Result<(i64, i64), ApiFailure> {
    let start = params
        .get("start")
        .filter(|s| !s.is_empty())
        .map(|s| parse_time(s, "start"))
        .transpose()?
        .unwrap_or(i64::MIN / 2_000_000);
    let end = params
        .get("end")
        .filter(|s| !s.is_empty())
        .map(|s| parse_time(s, "end"))
        .transpose()?
        .unwrap_or(i64::MAX / 2_000_000);
    Ok((start, end))
}

pub async fn series(State(app): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let params = Params::read(raw.as_deref(), &headers, &body);
    let run = async {
        let selectors = params.all("match[]");
        if selectors.is_empty() {
            return Err(ApiFailure::bad_data("no match[] parameter provided"));
        }
        let (start, end) = time_bounds(&params)?;
        Ok(app.engine.series(&selectors, start, end).await?)
    };
    match run.await {
        Ok(series) => success(&series),
        Err(failure) => failure.into_response(),
    }
}

pub async fn labels(State(app): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let params = Params::read(raw.as_deref(), &headers, &body);
    let run = async {
        let (start, end) = time_bounds(&params)?;
        Ok::<_, ApiFailure>(app.engine.label_names(&params.all("match[]"), start, end).await?)
    };
    match run.await {
        Ok(names) => success(&names),
        Err(failure) => failure.into_response(),
    }
}

pub async fn label_values(
    State(app): State<AppState>,
    name: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::read(raw.as_deref(), &headers, &body);
    let run = async {
        // A name that does not decode (say, invalid UTF-8) is bad data, in Prometheus's shape.
        let Path(name) =
            name.map_err(|rejection| ApiFailure::bad_data(format!("invalid label name: {}", rejection.body_text())))?;
        if name != "__name__" && !vigil_storage::write::is_valid_label_name(&name) {
            return Err(ApiFailure::bad_data(format!("invalid label name: {name:?}")));
        }
        let (start, end) = time_bounds(&params)?;
        Ok(app.engine.label_values(&name, &params.all("match[]"), start, end).await?)
    };
    match run.await {
        Ok(values) => success(&values),
        Err(failure) => failure.into_response(),
    }
}

pub async fn metadata(State(app): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::read(raw.as_deref(), &HeaderMap::new(), &[]);
    let limit = params.get("limit").and_then(|l| l.parse::<i64>().ok()).filter(|l| *l >= 0).map(|l| l as usize);
    let metadata = app.ingestor.metadata().get(params.get("metric").filter(|m| !m.is_empty()), limit);
    success(json!(metadata))
}

/// Series looked at, at most, for the label figures of `/api/v1/status/tsdb`.
const TSDB_STATUS_MAX_SERIES: usize = 200_000;

/// `GET /api/v1/status/tsdb`: cardinality in Prometheus's shape (`headStats`, top metric
/// names by active series, top label names by distinct values and bytes, top label pairs by
/// series; `?limit=N`, default 10), plus Vigil's limits and how full each is.
pub async fn tsdb_status(State(app): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::read(raw.as_deref(), &HeaderMap::new(), &[]);
    let limit = match params.get("limit").filter(|l| !l.is_empty()).map(str::parse::<usize>) {
        None => 10,
        Some(Ok(limit)) if limit > 0 => limit.min(10_000),
        Some(_) => {
            return ApiFailure::bad_data("invalid parameter \"limit\": must be a positive integer").into_response();
        }
    };
    let storage = app.engine.storage();
    let cardinality = storage.cardinality(limit);
    let labels = storage.buffered_label_stats(TSDB_STATUS_MAX_SERIES);
    let top = |list: &[(String, usize)]| -> Vec<Value> {
        list.iter().take(limit).map(|(name, value)| json!({"name": name, "value": value})).collect()
    };
    let metrics: Vec<(String, usize)> = cardinality
        .top_metrics
        .iter()
        .map(|(table, n)| (vigil_storage::schema::metric_name_of_table(table).to_string(), *n))
        .collect();
    let usage = |value: usize, limit: usize| json!({"value": value, "limit": limit});
    success(json!({
        "headStats": {"numSeries": cardinality.active_series, "numLabelPairs": labels.label_pairs, "chunkCount": 0, "minTime": 0, "maxTime": 0},
        "seriesCountByMetricName": top(&metrics),
        "labelValueCountByLabelName": top(&labels.values_per_label),
        "memoryInBytesByLabelName": top(&labels.bytes_per_label),
        "seriesCountByLabelValuePair": top(&labels.series_per_pair),
        "vigil": {
            "metricNames": usage(cardinality.metric_names, cardinality.limits.max_metric_names),
            "activeSeries": usage(cardinality.active_series, cardinality.limits.max_series),
            "maxSeriesPerMetric": cardinality.limits.max_series_per_metric,
            "maxNewSeriesPerRequest": cardinality.limits.max_new_series_per_request,
            "labelFiguresFromBufferedSeries": labels.series,
            "labelFiguresTruncated": labels.truncated,
        },
    }))
}

pub async fn buildinfo() -> Response {
    // The Prometheus API version Vigil answers as; Grafana reads features from it.
    success(json!({
        "version": "2.42.0",
        "revision": concat!("vigil-", env!("CARGO_PKG_VERSION")),
        "branch": "vigil",
        "buildUser": "vigil",
        "buildDate": "",
        "goVersion": "none (Vigil is written in Rust)",
    }))
}

/// What the status endpoints show, gathered by the binary at start.
#[derive(Clone, Debug, Default)]
pub struct StatusInfo {
    /// The configuration in force, as YAML (secrets left out).
    pub config_yaml: String,
    /// Vigil's settings by flag name (without `--`), as Prometheus lists its flags.
    pub flags: BTreeMap<String, String>,
    pub started_at: String,
    pub working_dir: String,
    /// `storage.retention`, as Prometheus writes `storageRetention` (e.g. `30d`).
    pub retention: String,
}

/// `/api/v1/status/config`: `{"yaml": ...}`.
pub async fn config_status(State(app): State<AppState>) -> Response {
    success(json!({"yaml": app.status.config_yaml}))
}

/// `/api/v1/status/flags`: every flag with its value, as strings.
pub async fn flags_status(State(app): State<AppState>) -> Response {
    success(json!(app.status.flags))
}

/// `/api/v1/status/runtimeinfo`, with Prometheus's fields (the Go runtime's as Vigil's
/// nearest: threads for goroutines, cores for GOMAXPROCS).
pub async fn runtime_status(State(app): State<AppState>) -> Response {
    let reload = app.reloader.status();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:").and_then(|v| v.trim().parse::<u64>().ok())))
        .unwrap_or(0);
    let last_config = chrono::DateTime::from_timestamp_millis(reload.at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    success(json!({
        "startTime": app.status.started_at,
        "CWD": app.status.working_dir,
        "reloadConfigSuccess": reload.successful,
        "lastConfigTime": last_config,
        "corruptionCount": 0,
        "goroutineCount": threads,
        "GOMAXPROCS": cores,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": app.status.retention,
    }))
}

/// `/api/v1/format_query`: the expression as Prometheus prints it.
pub async fn format_query(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::read(raw.as_deref(), &headers, &body);
    let run = async {
        let query = required(&params, "query")?;
        Ok::<_, ApiFailure>(app.engine.parse_promql(query).await?.prettify())
    };
    match run.await {
        Ok(formatted) => success(Value::String(formatted)),
        Err(failure) => failure.into_response(),
    }
}

/// Exemplars of the selected series (stored from OTLP), in Prometheus's shape.
pub async fn query_exemplars(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::read(raw.as_deref(), &headers, &body);
    let run = async {
        let text = required(&params, "query")?;
        let end = match params.get("end") {
            Some(t) if !t.is_empty() => parse_time(t, "end")?,
            _ => crate::now_ms(),
        };
        let start = match params.get("start") {
            Some(t) if !t.is_empty() => parse_time(t, "start")?,
            _ => end - 3_600_000,
        };
        if end < start {
            return Err(ApiFailure::bad_data("end timestamp must not be before start time"));
        }
        Ok::<_, ApiFailure>(app.engine.exemplars(text, start, end).await?)
    };
    match run.await {
        Ok(found) => {
            let data: Vec<Value> = found
                .into_iter()
                .map(|series| {
                    let exemplars: Vec<Value> = series
                        .exemplars
                        .iter()
                        .map(|e| json!({"labels": e.labels, "value": format_value(e.value), "timestamp": e.timestamp_ms as f64 / 1000.0}))
                        .collect();
                    json!({"seriesLabels": series.series_labels, "exemplars": exemplars})
                })
                .collect();
            success(Value::Array(data))
        }
        Err(failure) => failure.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The success envelope written straight from the data is byte for byte what it was
    /// through a `Value`: keys in order, escapes (quotes, control characters, non-ASCII) alike.
    #[tokio::test]
    async fn a_success_is_written_as_through_a_value() {
        let series: Vec<std::collections::BTreeMap<String, String>> = vec![
            [("job", "a\"pi"), ("__name__", "up"), ("instance", "h\u{1}ost\n\u{e9}")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Default::default(),
        ];
        let names = vec!["__name__".to_string(), "zone\\".to_string()];
        let body = |response: Response| async move {
            axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec()
        };
        for (direct, through_value) in [
            (success(&series), json!({"status": "success", "data": json!(series)}).to_string()),
            (success(&names), json!({"status": "success", "data": json!(names)}).to_string()),
            (success(Vec::<String>::new()), json!({"status": "success", "data": []}).to_string()),
        ] {
            assert_eq!(String::from_utf8(body(direct).await).unwrap(), through_value);
        }
    }

    #[test]
    fn timestamps_and_values_are_written_like_prometheus() {
        let text = |write: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            write(&mut out);
            String::from_utf8(out).unwrap()
        };
        let point = |ms, value| {
            text(&|out| {
                PointWriter::new().write(out, ms, value, None);
            })
        };
        assert_eq!(point(1_435_781_451_781, 1.0), r#"[1435781451.781,"1"]"#);
        assert_eq!(point(1_435_781_451_000, f64::NAN), r#"[1435781451,"NaN"]"#);
        assert_eq!(point(-1_500, -0.25), r#"[-1.500,"-0.25"]"#);
        assert_eq!(text(&|out| write_string_point(out, 0, "a \"quoted\" text")), r#"[0,"a \"quoted\" text"]"#);
        assert_eq!(text(&|out| write_timestamp(out, 1_500)), "1.500");
        assert_eq!(text(&|out| write_timestamp(out, 1_000_042)), "1000.042");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    /// A matrix whose series repeat values (their text copied from the point before) is
    /// written as one whose every point is written alone: runs of a whole value, of one with
    /// places, of one longer than the copied block, NaN, signed zeros (equal, but not the
    /// same text); at times short enough (0 s, 1 s) that a point is shorter than the block.
    #[test]
    fn a_value_repeated_is_written_as_it_is_alone() {
        let long = 0.000_012_345_678_901_234_5;
        let values =
            [7.0, 7.0, 7.0, 0.25, 0.25, long, long, long, f64::NAN, f64::NAN, 0.0, -0.0, -0.0, 0.0, 1e21, 1e21];
        let mut series = Vec::new();
        for (i, times) in
            [[0_i64, 1_000, 2_000], [1_796_451_300_000, 1_796_451_315_000, 1_796_451_330_000]].iter().enumerate()
        {
            let points: Vec<(i64, f64)> =
                values.iter().enumerate().map(|(j, &v)| (times[j % 3] + (j as i64 / 3) * 3_000, v)).collect();
            series
                .push(vigil_query::promql::Series { labels: Labels::from([("i".to_string(), i.to_string())]), points });
        }
        let mut written = Vec::new();
        write_result(&mut written, &PromResult::Matrix(series.clone()));
        let mut alone = br#"{"resultType":"matrix","result":["#.to_vec();
        for (i, s) in series.iter().enumerate() {
            alone.extend_from_slice(
                format!(r#"{}{{"metric":{{"i":"{i}"}},"values":["#, if i > 0 { "," } else { "" }).as_bytes(),
            );
            for (j, &(t, v)) in s.points.iter().enumerate() {
                if j > 0 {
                    alone.push(b',');
                }
                PointWriter::new().write(&mut alone, t, v, None);
            }
            alone.extend_from_slice(b"]}");
        }
        alone.extend_from_slice(b"]}");
        assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(alone).unwrap());
    }

    /// One writer over many points: a time's kept text is its own, also when another time
    /// takes its slot (times 1,021 ms apart) and takes it back, and at the extremes (i64::MIN
    /// was the mark of a slot never written).
    #[test]
    fn kept_times_are_written_as_each_alone() {
        let mut writer = PointWriter::new();
        let times =
            [0, 1_021, 0, 15_000, 1_021_000, 2_042_000, i64::MAX, i64::MIN, i64::MIN + 1, -1_021, 1_764_900_000_123];
        for round in 0..3 {
            for (i, &ms) in times.iter().enumerate() {
                let value = (round * 10 + i) as f64 / 4.0;
                let mut kept = Vec::new();
                writer.write(&mut kept, ms, value, None);
                let mut alone = b"[".to_vec();
                write_timestamp(&mut alone, ms);
                alone.extend_from_slice(format!(",\"{}\"]", format_value(value)).as_bytes());
                assert_eq!(String::from_utf8(kept).unwrap(), String::from_utf8(alone).unwrap(), "{ms}");
            }
        }
    }

    #[test]
    fn times_and_durations_parse_both_ways() {
        assert_eq!(parse_time("1435781451.781", "t").ok(), Some(1_435_781_451_781));
        assert_eq!(parse_time("2015-07-01T20:10:51.781Z", "t").ok(), Some(1_435_781_451_781));
        assert!(parse_time("yesterday", "t").is_err());
        assert_eq!(parse_duration_ms("15", "step").ok(), Some(15_000));
        assert_eq!(parse_duration_ms("1m30s", "step").ok(), Some(90_000));
    }
}
