//! OTLP log records to rows of the `logs` table. A record without a timestamp takes its
//! observed time, and without that the time it was received (as the OTLP spec says).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int32Builder, StringBuilder, StringDictionaryBuilder, TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::Int32Type;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use vigil_storage::schema::{FixedTable, timestamp_type};

use super::attributes::{ServiceIdentity, append_map, hex, map_builder, value_text};

#[derive(Debug)]
pub struct MappedLogs {
    pub batch: Option<RecordBatch>,
    pub accepted: usize,
    pub rejected: usize,
    pub first_error: Option<String>,
}

pub fn map(request: &ExportLogsServiceRequest, received_ns: i64) -> Result<MappedLogs, ArrowError> {
    let timestamps = || TimestampNanosecondBuilder::new().with_data_type(timestamp_type());
    let (mut timestamp, mut observed) = (timestamps(), timestamps());
    let (mut trace_id, mut span_id, mut body) = (StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
    let mut severity_number = Int32Builder::new();
    let mut severity_text = StringDictionaryBuilder::<Int32Type>::new();
    let mut service = StringDictionaryBuilder::<Int32Type>::new();
    let mut scope_name = StringDictionaryBuilder::<Int32Type>::new();
    let (mut attributes, mut resource_attributes) = (map_builder(), map_builder());
    let (mut accepted, mut rejected, mut first_error) = (0usize, 0usize, None);
    for resource_logs in &request.resource_logs {
        let identity = ServiceIdentity::of(resource_logs.resource.as_ref());
        let resource = resource_logs.resource.as_ref().map_or(&[][..], |r| &r.attributes);
        for scope_logs in &resource_logs.scope_logs {
            let scope = scope_logs.scope.as_ref().map(|s| s.name.as_str()).filter(|n| !n.is_empty());
            for record in &scope_logs.log_records {
                let (Ok(time), Ok(observed_time)) =
                    (i64::try_from(record.time_unix_nano), i64::try_from(record.observed_time_unix_nano))
                else {
                    rejected += 1;
                    first_error.get_or_insert_with(|| "log record timestamp out of range".to_string());
                    continue;
                };
                if !(record.trace_id.is_empty() || record.trace_id.len() == 16)
                    || !(record.span_id.is_empty() || record.span_id.len() == 8)
                {
                    rejected += 1;
                    first_error.get_or_insert_with(|| "log record trace_id must be 16 bytes and span_id 8".to_string());
                    continue;
                }
                accepted += 1;
                let when = if time != 0 {
                    time
                } else if observed_time != 0 {
                    observed_time
                } else {
                    received_ns
                };
                timestamp.append_value(when);
                observed.append_option((observed_time != 0).then_some(observed_time));
                trace_id.append_option((!record.trace_id.is_empty()).then(|| hex(&record.trace_id)));
                span_id.append_option((!record.span_id.is_empty()).then(|| hex(&record.span_id)));
                severity_number.append_option((record.severity_number != 0).then_some(record.severity_number));
                severity_text
                    .append_option((!record.severity_text.is_empty()).then_some(record.severity_text.as_str()));
                body.append_option(value_text(record.body.as_ref()));
                service.append_value(&identity.service);
                append_map(&mut attributes, &record.attributes);
                append_map(&mut resource_attributes, resource);
                scope_name.append_option(scope);
            }
        }
    }
    if accepted == 0 {
        return Ok(MappedLogs { batch: None, accepted, rejected, first_error });
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(timestamp.finish()),
        Arc::new(observed.finish()),
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(severity_number.finish()),
        Arc::new(severity_text.finish()),
        Arc::new(body.finish()),
        Arc::new(service.finish()),
        Arc::new(attributes.finish()),
        Arc::new(resource_attributes.finish()),
        Arc::new(scope_name.finish()),
    ];
    let batch = RecordBatch::try_new(FixedTable::Logs.schema(), columns)?;
    Ok(MappedLogs { batch: Some(batch), accepted, rejected, first_error })
}
