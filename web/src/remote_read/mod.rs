//! Prometheus remote read (`POST /api/v1/read`): a snappy block around a protobuf
//! `prometheus.ReadRequest`; each query's matchers and time range answered with the raw
//! samples Vigil holds, as the first response type the reader accepts that Vigil serves:
//! `SAMPLES` (a snappy `ReadResponse`, what Prometheus's own remote-read client asks for) or
//! `STREAMED_XOR_CHUNKS` (frames of XOR chunks, see [`chunks`]; Thanos and Cortex ask for it).
//! A Prometheus with `remote_read` pointed here queries data only Vigil holds: Vigil as
//! long-term storage behind an existing Prometheus. Hints are optional in the protocol and
//! not used.

mod chunks;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use vigil_ingest::remote_write::{Label, PromSample};

use crate::AppState;
use crate::error::ApiError;

/// Most queries one request may carry.
pub const MAX_QUERIES: usize = 64;

/// `prometheus.ReadRequest` (prompb/remote.proto).
#[derive(Clone, PartialEq, Message)]
pub struct ReadRequest {
    #[prost(message, repeated, tag = "1")]
    pub queries: Vec<Query>,
    /// `SAMPLES` = 0, `STREAMED_XOR_CHUNKS` = 1; empty means `SAMPLES`.
    #[prost(enumeration = "ResponseType", repeated, tag = "2")]
    pub accepted_response_types: Vec<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ResponseType {
    Samples = 0,
    StreamedXorChunks = 1,
}

#[derive(Clone, PartialEq, Message)]
pub struct Query {
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    #[prost(message, repeated, tag = "3")]
    pub matchers: Vec<LabelMatcher>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LabelMatcher {
    /// `EQ` = 0, `NEQ` = 1, `RE` = 2, `NRE` = 3.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ReadResponse {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<QueryResult>,
}

#[derive(Clone, PartialEq, Message)]
pub struct QueryResult {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<ReadSeries>,
}

/// `prometheus.TimeSeries` as a read answers it: labels and samples.
#[derive(Clone, PartialEq, Message)]
pub struct ReadSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<PromSample>,
}

/// The first response type the reader accepts that is served (Prometheus's negotiation);
/// none named means `SAMPLES`.
fn negotiate(accepted: &[i32]) -> Option<ResponseType> {
    if accepted.is_empty() {
        return Some(ResponseType::Samples);
    }
    accepted.iter().find_map(|&kind| ResponseType::try_from(kind).ok())
}

fn labels(labels: vigil_query::promql::Labels) -> Vec<Label> {
    labels.into_iter().map(|(name, value)| Label { name, value }).collect()
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message, "send a snappy-compressed prometheus.ReadRequest, as Prometheus's remote_read does")
}

/// The PromQL matchers of a query.
fn matchers(query: &Query) -> Result<promql_parser::label::Matchers, ApiError> {
    use promql_parser::parser::token::{T_EQL, T_EQL_REGEX, T_NEQ, T_NEQ_REGEX};
    let mut out = Vec::with_capacity(query.matchers.len());
    for m in &query.matchers {
        let id = match m.r#type {
            0 => T_EQL,
            1 => T_NEQ,
            2 => T_EQL_REGEX,
            3 => T_NEQ_REGEX,
            other => return Err(bad(format!("unknown matcher type {other}"))),
        };
        let matcher = promql_parser::label::Matcher::new_matcher(id, m.name.clone(), m.value.clone())
            .map_err(|e| bad(format!("matcher {}: {e}", m.name)))?;
        out.push(matcher);
    }
    Ok(promql_parser::label::Matchers::new(out))
}

/// A PromQL error as this API answers it.
fn refusal(error: vigil_query::promql::PromError) -> ApiError {
    use vigil_query::promql::PromError as P;
    let (status, hint) = match &error {
        P::BadData(_) => (StatusCode::BAD_REQUEST, "fix the matchers"),
        P::Execution(_) | P::ResourcesExhausted(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "read a shorter range or fewer series per query")
        }
        P::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "read a shorter range, or raise query.timeout"),
        P::Storage(_) | P::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "see Vigil's log"),
    };
    ApiError::new(status, error.to_string(), hint)
}

pub async fn read(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let raw = vigil_ingest::remote_write::unsnappy(&body, app.ingestor.limits()).map_err(|e| match e {
        vigil_ingest::IngestError::TooLarge { .. } => ApiError::from(e),
        other => bad(other.to_string()),
    })?;
    let request = ReadRequest::decode(raw.as_slice()).map_err(|e| bad(format!("not a ReadRequest: {e}")))?;
    if request.queries.len() > MAX_QUERIES {
        return Err(bad(format!("{} queries in one request; at most {MAX_QUERIES}", request.queries.len())));
    }
    let Some(response_type) = negotiate(&request.accepted_response_types) else {
        return Err(ApiError::bad_request(
            "none of the accepted response types is served",
            "accept SAMPLES or STREAMED_XOR_CHUNKS",
        ));
    };
    let mut queries = Vec::with_capacity(request.queries.len());
    for query in &request.queries {
        if query.end_timestamp_ms < query.start_timestamp_ms {
            return Err(bad("a query ends before it starts"));
        }
        queries.push((matchers(query)?, query.start_timestamp_ms, query.end_timestamp_ms));
    }
    if response_type == ResponseType::StreamedXorChunks {
        return streamed(app.engine.clone(), queries).await;
    }
    let mut answers = Vec::with_capacity(queries.len());
    for query in queries {
        answers.push(read_query(&app.engine, query).await.map_err(refusal)?);
    }
    let results = answers
        .into_iter()
        .map(|series| QueryResult {
            timeseries: series
                .into_iter()
                .map(|(labels, points)| ReadSeries {
                    labels,
                    samples: points.into_iter().map(|(timestamp, value)| PromSample { value, timestamp }).collect(),
                })
                .collect(),
        })
        .collect();
    let encoded = ReadResponse { results }.encode_to_vec();
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&encoded)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), "this is a bug in Vigil"))?;
    Ok(([(header::CONTENT_TYPE, "application/x-protobuf"), (header::CONTENT_ENCODING, "snappy")], compressed)
        .into_response())
}

/// One query's matchers and time range.
type ReadQuery = (promql_parser::label::Matchers, i64, i64);

/// One query's series: labels and samples.
async fn read_query(
    engine: &vigil_query::QueryEngine,
    (matchers, start, end): ReadQuery,
) -> Result<Vec<(Vec<Label>, Vec<(i64, f64)>)>, vigil_query::promql::PromError> {
    let series = engine.raw_series(matchers, start, end).await?;
    Ok(series.into_iter().map(|s| (labels(s.labels), s.points)).collect())
}

/// The streamed answer: each query read and sent as its frames before the next is read, so
/// one query's series are held at a time. The first query's failure is an error status (as
/// Prometheus answers while it has written nothing); a later one ends the stream with an
/// error, so the reader never takes a cut answer for a whole one.
async fn streamed(engine: vigil_query::QueryEngine, queries: Vec<ReadQuery>) -> Result<Response, ApiError> {
    let mut queries = queries.into_iter().enumerate();
    let mut first = Vec::new();
    if let Some((index, query)) = queries.next() {
        let series = read_query(&engine, query).await.map_err(refusal)?;
        chunks::frames(&mut first, index as i64, series, chunks::MAX_BYTES_IN_FRAME);
    }
    let rest = futures::stream::unfold((queries, engine), |(mut queries, engine)| async move {
        let (index, query) = queries.next()?;
        let frames = match read_query(&engine, query).await {
            Ok(series) => {
                let mut frames = Vec::new();
                chunks::frames(&mut frames, index as i64, series, chunks::MAX_BYTES_IN_FRAME);
                Ok(Bytes::from(frames))
            }
            Err(error) => {
                tracing::warn!(query = index, %error, "remote read: a streamed answer ended early");
                queries.by_ref().for_each(drop);
                Err(std::io::Error::other(error.to_string()))
            }
        };
        Some((frames, (queries, engine)))
    });
    let body = futures::StreamExt::chain(futures::stream::once(async move { Ok(Bytes::from(first)) }), rest);
    Ok(([(header::CONTENT_TYPE, chunks::CONTENT_TYPE)], axum::body::Body::from_stream(body)).into_response())
}
