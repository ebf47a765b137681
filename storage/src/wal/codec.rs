//! Binary encoding of a [`WriteBatch`] as one WAL record payload.
//!
//! ```text
//! payload  := version:u8 metric_series_count:varint series* row_table_count:varint rows*
//! series   := metric:str label_count:varint (name:str value:str)* sample_count:varint
//!             (timestamp_delta:zigzag-varint value_bits:u64le)*
//! rows     := table:str arrow_ipc_stream:bytes
//! str      := len:varint utf8 ; bytes := len:varint raw
//! ```
//! Values travel as raw bits so the Prometheus stale marker survives exactly. Decoding checks
//! every length against the remaining input: a damaged payload is an error, never a panic.

use std::io::Cursor;

use crate::schema::FixedTable;
use crate::write::{LabelSet, MetricName, MetricSeries, Sample, TableRows, WriteBatch};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("payload ends early")]
    Truncated,
    #[error("unknown payload version {0}")]
    Version(u8),
    #[error("invalid UTF-8 string")]
    Utf8,
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    #[error("invalid label set: {0}")]
    Labels(#[from] crate::write::LabelError),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

pub fn encode(batch: &WriteBatch) -> Result<Vec<u8>, CodecError> {
    // Sized for what it will hold (samples, then names and labels), so it is never regrown.
    let label_bytes: usize = batch.metrics.iter().map(|s| s.metric.len() + s.labels.heap_bytes() + 8).sum();
    let mut out = Vec::with_capacity(64 + batch.sample_count() * 12 + label_bytes);
    out.push(VERSION);
    put_varint(&mut out, batch.metrics.len() as u64);
    for series in &batch.metrics {
        put_str(&mut out, &series.metric);
        put_varint(&mut out, series.labels.len() as u64);
        for (name, value) in series.labels.iter() {
            put_str(&mut out, name);
            put_str(&mut out, value);
        }
        put_varint(&mut out, series.samples.len() as u64);
        let mut previous = 0i64;
        for sample in &series.samples {
            put_varint(&mut out, zigzag(sample.timestamp_ns.wrapping_sub(previous)));
            previous = sample.timestamp_ns;
            out.extend_from_slice(&sample.value.to_bits().to_le_bytes());
        }
    }
    put_varint(&mut out, batch.rows.len() as u64);
    for rows in &batch.rows {
        put_str(&mut out, rows.table.name());
        let mut ipc = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut ipc, &rows.batch.schema())?;
            writer.write(&rows.batch)?;
            writer.finish()?;
        }
        put_varint(&mut out, ipc.len() as u64);
        out.extend_from_slice(&ipc);
    }
    Ok(out)
}

pub fn decode(payload: &[u8]) -> Result<WriteBatch, CodecError> {
    let mut input = Reader { data: payload, pos: 0 };
    let version = input.byte()?;
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let series_count = input.count(2)?;
    let mut metrics: Vec<MetricSeries> = Vec::with_capacity(series_count);
    for _ in 0..series_count {
        let metric = MetricName::after(metrics.last().map(|previous| &previous.metric), &input.string()?);
        let label_count = input.count(2)?;
        let mut pairs = Vec::with_capacity(label_count);
        for _ in 0..label_count {
            pairs.push((input.string()?, input.string()?));
        }
        let sample_count = input.count(9)?;
        let mut samples = Vec::with_capacity(sample_count);
        let mut timestamp = 0i64;
        for _ in 0..sample_count {
            timestamp = timestamp.wrapping_add(unzigzag(input.varint()?));
            let bits = u64::from_le_bytes(input.take(8)?.try_into().map_err(|_| CodecError::Truncated)?);
            samples.push(Sample { timestamp_ns: timestamp, value: f64::from_bits(bits) });
        }
        metrics.push(MetricSeries { metric, labels: LabelSet::new(pairs)?, samples });
    }
    let table_count = input.count(2)?;
    let mut rows = Vec::with_capacity(table_count);
    for _ in 0..table_count {
        let name = input.string()?;
        let table = FixedTable::from_name(&name).ok_or(CodecError::UnknownTable(name))?;
        let len = input.count(1)?;
        let ipc = input.take(len)?;
        for batch in StreamReader::try_new(Cursor::new(ipc), None)? {
            rows.push(TableRows { table, batch: batch? });
        }
    }
    Ok(WriteBatch { metrics, rows })
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.data.get(self.pos).ok_or(CodecError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        if len > self.remaining() {
            return Err(CodecError::Truncated);
        }
        let slice = &self.data[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Truncated)
    }

    /// A count of items each taking at least `min_item_bytes`: refuses counts the remaining
    /// input cannot hold, so a damaged count cannot trigger a huge allocation.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, CodecError> {
        let n = self.varint()?;
        if n > (self.remaining() / min_item_bytes.max(1)) as u64 {
            return Err(CodecError::Truncated);
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let len = self.count(1)?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, DictionaryArray, Float64Array, TimestampNanosecondArray, UInt64Array};
    use datafusion::arrow::datatypes::Int32Type;
    use datafusion::arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    pub(crate) fn sample_batch() -> WriteBatch {
        let labels = LabelSet::new(vec![("job".into(), "api".into()), ("code".into(), "500".into())]).unwrap();
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let schema = FixedTable::DriftScores.schema();
        let dict = |v: &str| -> ArrayRef { Arc::new(vec![v].into_iter().collect::<DictionaryArray<Int32Type>>()) };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from(vec![5]).with_timezone("UTC")),
            Arc::new(TimestampNanosecondArray::from(vec![10]).with_timezone("UTC")),
            dict("fraud"),
            dict("v1"),
            dict("amount"),
            dict("psi"),
            Arc::new(Float64Array::from(vec![0.25])),
            Arc::new(UInt64Array::from(vec![100])),
            Arc::new(UInt64Array::from(vec![50])),
            Arc::new(datafusion::arrow::array::StringArray::from(vec![Some("ref-1")])),
        ];
        WriteBatch {
            metrics: vec![MetricSeries {
                metric: "http_requests_total".into(),
                labels,
                samples: vec![
                    Sample { timestamp_ns: 1_700_000_000_000_000_000, value: 1.5 },
                    Sample { timestamp_ns: 1_699_999_999_000_000_000, value: stale },
                    Sample { timestamp_ns: -5, value: f64::INFINITY },
                ],
            }],
            rows: vec![TableRows {
                table: FixedTable::DriftScores,
                batch: RecordBatch::try_new(schema, columns).unwrap(),
            }],
        }
    }

    #[test]
    fn round_trip_keeps_values_bit_exact() {
        let batch = sample_batch();
        let decoded = decode(&encode(&batch).unwrap()).unwrap();
        assert_eq!(decoded.metrics[0].labels, batch.metrics[0].labels);
        let bits = |b: &WriteBatch| -> Vec<(i64, u64)> {
            b.metrics[0].samples.iter().map(|s| (s.timestamp_ns, s.value.to_bits())).collect()
        };
        assert_eq!(bits(&decoded), bits(&batch));
        assert_eq!(decoded.rows, batch.rows);
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        let payload = encode(&sample_batch()).unwrap();
        for cut in 0..payload.len() {
            assert!(decode(&payload[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
        let mut huge_count = vec![VERSION];
        put_varint(&mut huge_count, u64::MAX / 2);
        assert!(matches!(decode(&huge_count), Err(CodecError::Truncated)));
    }
}
