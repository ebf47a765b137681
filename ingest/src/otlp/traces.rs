//! OTLP spans to rows of the `spans` table, every field kept. A span whose trace or span id
//! has the wrong length is rejected alone (OTLP partial success).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Builder, ListBuilder, MapBuilder, StringBuilder, StringDictionaryBuilder, StructBuilder,
    TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Int32Type};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use vigil_storage::schema::{FixedTable, timestamp_type};

use super::attributes::{ServiceIdentity, append_map, hex, map_builder};

#[derive(Debug)]
pub struct MappedSpans {
    pub batch: Option<RecordBatch>,
    pub accepted: usize,
    pub rejected: usize,
    pub first_error: Option<String>,
}

pub fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

pub fn status_code(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

fn timestamps() -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::new().with_data_type(timestamp_type())
}

type Map = MapBuilder<StringBuilder, StringBuilder>;

fn struct_fields(list_column: &str) -> Fields {
    match FixedTable::Spans.schema().field_with_name(list_column).map(|f| f.data_type().clone()) {
        Ok(DataType::List(item)) => match item.data_type() {
            DataType::Struct(fields) => fields.clone(),
            _ => Fields::empty(),
        },
        _ => Fields::empty(),
    }
}

struct Columns {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    service: StringDictionaryBuilder<Int32Type>,
    name: StringDictionaryBuilder<Int32Type>,
    kind: StringDictionaryBuilder<Int32Type>,
    start: TimestampNanosecondBuilder,
    end: TimestampNanosecondBuilder,
    duration: Int64Builder,
    status: StringDictionaryBuilder<Int32Type>,
    status_message: StringBuilder,
    attributes: Map,
    events: ListBuilder<StructBuilder>,
    links: ListBuilder<StructBuilder>,
    resource_attributes: Map,
    scope_name: StringDictionaryBuilder<Int32Type>,
    scope_version: StringDictionaryBuilder<Int32Type>,
}

impl Columns {
    fn new() -> Self {
        let item = |column: &str| {
            FixedTable::Spans
                .schema()
                .field_with_name(column)
                .ok()
                .and_then(|f| match f.data_type() {
                    DataType::List(item) => Some(item.as_ref().clone()),
                    _ => None,
                })
                .unwrap_or_else(|| Field::new("item", DataType::Null, true))
        };
        let events = StructBuilder::new(
            struct_fields("events"),
            vec![Box::new(timestamps()), Box::new(StringBuilder::new()), Box::new(map_builder())],
        );
        let links = StructBuilder::new(
            struct_fields("links"),
            vec![Box::new(StringBuilder::new()), Box::new(StringBuilder::new()), Box::new(map_builder())],
        );
        Columns {
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent_span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            service: StringDictionaryBuilder::new(),
            name: StringDictionaryBuilder::new(),
            kind: StringDictionaryBuilder::new(),
            start: timestamps(),
            end: timestamps(),
            duration: Int64Builder::new(),
            status: StringDictionaryBuilder::new(),
            status_message: StringBuilder::new(),
            attributes: map_builder(),
            events: ListBuilder::new(events).with_field(Arc::new(item("events"))),
            links: ListBuilder::new(links).with_field(Arc::new(item("links"))),
            resource_attributes: map_builder(),
            scope_name: StringDictionaryBuilder::new(),
            scope_version: StringDictionaryBuilder::new(),
        }
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.end.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.events.finish()),
            Arc::new(self.links.finish()),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
        ];
        RecordBatch::try_new(FixedTable::Spans.schema(), columns)
    }
}

fn optional(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| hex(bytes))
}

fn nonempty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// Why a span is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("span {0:?}: trace_id must be 16 bytes, not all zero")]
    TraceId(String),
    #[error("span {0:?}: span_id must be 8 bytes, not all zero")]
    SpanId(String),
    #[error("span {0:?}: parent_span_id must be empty or 8 bytes")]
    ParentSpanId(String),
    #[error("span {0:?}: timestamp out of range")]
    Timestamp(String),
}

fn check(span: &Span) -> Result<(), SpanError> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err(SpanError::TraceId(span.name.clone()));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(SpanError::SpanId(span.name.clone()));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err(SpanError::ParentSpanId(span.name.clone()));
    }
    if i64::try_from(span.start_time_unix_nano).is_err() || i64::try_from(span.end_time_unix_nano).is_err() {
        return Err(SpanError::Timestamp(span.name.clone()));
    }
    Ok(())
}

pub fn map(request: &ExportTraceServiceRequest) -> Result<MappedSpans, ArrowError> {
    let mut columns = Columns::new();
    let (mut accepted, mut rejected, mut first_error) = (0, 0, None);
    for resource_spans in &request.resource_spans {
        let identity = ServiceIdentity::of(resource_spans.resource.as_ref());
        let resource_attributes = resource_spans.resource.as_ref().map_or(&[][..], |r| &r.attributes);
        for scope_spans in &resource_spans.scope_spans {
            let scope = scope_spans.scope.as_ref();
            for span in &scope_spans.spans {
                if let Err(reason) = check(span) {
                    rejected += 1;
                    first_error.get_or_insert(reason.to_string());
                    continue;
                }
                accepted += 1;
                let start = span.start_time_unix_nano as i64;
                let end = span.end_time_unix_nano as i64;
                columns.trace_id.append_value(hex(&span.trace_id));
                columns.span_id.append_value(hex(&span.span_id));
                columns.parent_span_id.append_option(optional(&span.parent_span_id));
                columns.trace_state.append_option(nonempty(&span.trace_state));
                columns.service.append_value(&identity.service);
                columns.name.append_value(&span.name);
                columns.kind.append_value(span_kind(span.kind));
                columns.start.append_value(start);
                columns.end.append_value(end);
                columns.duration.append_value(end.saturating_sub(start).max(0));
                let status = span.status.as_ref();
                columns.status.append_value(status_code(status.map_or(0, |s| s.code)));
                columns.status_message.append_option(status.and_then(|s| nonempty(&s.message)));
                append_map(&mut columns.attributes, &span.attributes);
                for event in &span.events {
                    let entry = columns.events.values();
                    append_struct(entry, |fields| {
                        if let Some(b) = fields.field_builder::<TimestampNanosecondBuilder>(0) {
                            b.append_value(event.time_unix_nano as i64)
                        }
                        if let Some(b) = fields.field_builder::<StringBuilder>(1) {
                            b.append_value(&event.name)
                        }
                        if let Some(b) = fields.field_builder::<Map>(2) {
                            append_map(b, &event.attributes)
                        }
                    });
                }
                columns.events.append(true);
                for link in &span.links {
                    let entry = columns.links.values();
                    append_struct(entry, |fields| {
                        if let Some(b) = fields.field_builder::<StringBuilder>(0) {
                            b.append_value(hex(&link.trace_id))
                        }
                        if let Some(b) = fields.field_builder::<StringBuilder>(1) {
                            b.append_value(hex(&link.span_id))
                        }
                        if let Some(b) = fields.field_builder::<Map>(2) {
                            append_map(b, &link.attributes)
                        }
                    });
                }
                columns.links.append(true);
                append_map(&mut columns.resource_attributes, resource_attributes);
                columns.scope_name.append_option(scope.and_then(|s| nonempty(&s.name)));
                columns.scope_version.append_option(scope.and_then(|s| nonempty(&s.version)));
            }
        }
    }
    let batch = if accepted > 0 { Some(columns.finish()?) } else { None };
    Ok(MappedSpans { batch, accepted, rejected, first_error })
}

fn append_struct(builder: &mut StructBuilder, fill: impl FnOnce(&mut StructBuilder)) {
    fill(builder);
    builder.append(true);
}
