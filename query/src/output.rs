//! Result encodings of the SQL API.
//!
//! JSON is `{"columns": [...], "rows": [[...]]}`: integers stay JSON integers, floats are
//! numbers except NaN and ±Inf (strings "NaN", "+Inf", "-Inf", as Prometheus writes them),
//! timestamps are RFC 3339 strings in UTC, dictionaries are their values, lists are arrays,
//! structs and maps are objects. CSV has a header row; nested values are JSON text in a cell.
//! Arrow IPC is the stream format.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{
    DataType, Field, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, Schema,
    SchemaRef, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
pub use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Number, Value};

use crate::QueryResult;

/// The JSON document of a result.
pub fn to_json(result: &QueryResult) -> Result<Value, ArrowError> {
    let columns: Vec<Value> = result.schema.fields().iter().map(|f| Value::String(f.name().clone())).collect();
    let mut rows = Vec::with_capacity(result.batches.iter().map(|b| b.num_rows()).sum());
    for batch in &result.batches {
        for row in 0..batch.num_rows() {
            let mut cells = Vec::with_capacity(batch.num_columns());
            for column in batch.columns() {
                cells.push(cell(column.as_ref(), row)?);
            }
            rows.push(Value::Array(cells));
        }
    }
    let mut document = Map::new();
    document.insert("columns".into(), Value::Array(columns));
    document.insert("rows".into(), Value::Array(rows));
    Ok(Value::Object(document))
}

/// One value as JSON.
pub fn cell(array: &dyn Array, row: usize) -> Result<Value, ArrowError> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float16 => float(array.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => float(array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::Dictionary(..) => {
            let dictionary = array.as_any_dictionary();
            let key = dictionary.normalized_keys()[row];
            cell(dictionary.values().as_ref(), key)?
        }
        DataType::List(_) => list(array.as_list::<i32>().value(row))?,
        DataType::LargeList(_) => list(array.as_list::<i64>().value(row))?,
        DataType::FixedSizeList(..) => list(array.as_fixed_size_list().value(row))?,
        DataType::Struct(fields) => {
            let strukt = array.as_struct();
            let mut object = Map::new();
            for (field, column) in fields.iter().zip(strukt.columns()) {
                object.insert(field.name().clone(), cell(column.as_ref(), row)?);
            }
            Value::Object(object)
        }
        DataType::Map(..) => {
            let entries = array.as_map().value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut object = Map::new();
            for i in 0..entries.len() {
                let key = match cell(keys.as_ref(), i)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                object.insert(key, cell(values.as_ref(), i)?);
            }
            Value::Object(object)
        }
        DataType::Timestamp(_, zone) => {
            let utc = zone.as_deref().is_none_or(|z| matches!(z, "UTC" | "+00:00" | "Z"));
            let options = if utc {
                rfc3339_utc()
            } else {
                FormatOptions::default().with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%S%.f%:z"))
            };
            Value::String(format_one(array, row, &options)?)
        }
        _ => Value::String(format_one(array, row, &FormatOptions::default())?),
    })
}

fn list(values: ArrayRef) -> Result<Value, ArrowError> {
    (0..values.len()).map(|i| cell(values.as_ref(), i)).collect::<Result<Vec<_>, _>>().map(Value::Array)
}

fn float(value: f64) -> Value {
    match Number::from_f64(value) {
        Some(number) => Value::Number(number),
        None if value.is_nan() => Value::String("NaN".into()),
        None if value > 0.0 => Value::String("+Inf".into()),
        None => Value::String("-Inf".into()),
    }
}

/// Zone-less timestamps are UTC by Vigil's convention, so both forms end in `Z`.
fn rfc3339_utc() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%S%.fZ"))
        .with_timestamp_format(Some("%Y-%m-%dT%H:%M:%S%.fZ"))
}

fn format_one(array: &dyn Array, row: usize, options: &FormatOptions) -> Result<String, ArrowError> {
    Ok(ArrayFormatter::try_new(array, options)?.value(row).to_string())
}

/// CSV with a header row.
pub fn to_csv(result: &QueryResult) -> Result<Vec<u8>, ArrowError> {
    let flat = flatten_for_csv(result)?;
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.fZ".to_string())
            .build(&mut out);
        if flat.batches.is_empty() {
            writer.write(&RecordBatch::new_empty(flat.schema.clone()))?;
        }
        for batch in &flat.batches {
            writer.write(batch)?;
        }
    }
    Ok(out)
}

/// The CSV writer takes flat columns: dictionaries become their values, nested values JSON.
fn flatten_for_csv(result: &QueryResult) -> Result<QueryResult, ArrowError> {
    let convert = |field: &Field| -> Option<DataType> {
        match field.data_type() {
            DataType::Dictionary(_, value) if value.is_primitive() || **value == DataType::Utf8 => {
                Some((**value).clone())
            }
            DataType::Dictionary(..)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..) => Some(DataType::Utf8),
            _ => None,
        }
    };
    let fields: Vec<Field> = result
        .schema
        .fields()
        .iter()
        .map(|f| match convert(f) {
            Some(data_type) => Field::new(f.name(), data_type, true),
            None => f.as_ref().clone(),
        })
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let mut batches = Vec::with_capacity(result.batches.len());
    for batch in &result.batches {
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (column, field) in batch.columns().iter().zip(schema.fields()) {
            if column.data_type() == field.data_type() {
                columns.push(column.clone());
            } else if *field.data_type() == DataType::Utf8
                && !matches!(column.data_type(), DataType::Dictionary(_, v) if **v == DataType::Utf8)
            {
                let texts: Vec<Option<String>> = (0..column.len())
                    .map(|i| {
                        if column.is_null(i) { Ok(None) } else { cell(column.as_ref(), i).map(|v| Some(v.to_string())) }
                    })
                    .collect::<Result<_, _>>()?;
                columns.push(Arc::new(StringArray::from(texts)) as ArrayRef);
            } else {
                columns.push(datafusion::arrow::compute::cast(column, field.data_type())?);
            }
        }
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(QueryResult { schema, batches })
}

/// Arrow IPC stream format.
pub fn to_arrow_ipc(result: &QueryResult) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut out, &result.schema)?;
        for batch in &result.batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{DictionaryArray, Float64Array, Int64Array, TimestampNanosecondArray};

    fn result() -> QueryResult {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("job", DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)), true),
            Field::new(
                "t",
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(9_007_199_254_740_993), None, Some(-1)])),
            Arc::new(Float64Array::from(vec![f64::NAN, f64::INFINITY, 0.5])),
            Arc::new(vec![Some("api"), None, Some("db")].into_iter().collect::<DictionaryArray<Int32Type>>()),
            Arc::new(TimestampNanosecondArray::from(vec![1_700_000_000_123_000_000, 0, 1]).with_timezone("UTC")),
        ];
        QueryResult { schema: schema.clone(), batches: vec![RecordBatch::try_new(schema, columns).unwrap()] }
    }

    #[test]
    fn json_keeps_integers_exact_and_names_non_finite_floats() {
        let json = to_json(&result()).unwrap();
        assert_eq!(
            json.to_string(),
            r#"{"columns":["n","x","job","t"],"rows":[[9007199254740993,"NaN","api","2023-11-14T22:13:20.123Z"],[null,"+Inf",null,"1970-01-01T00:00:00Z"],[-1,0.5,"db","1970-01-01T00:00:00.000000001Z"]]}"#
        );
    }

    #[test]
    fn csv_has_a_header_and_flat_values() {
        let csv = String::from_utf8(to_csv(&result()).unwrap()).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "n,x,job,t");
        assert_eq!(lines[1], "9007199254740993,NaN,api,2023-11-14T22:13:20.123Z");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn arrow_ipc_round_trips() {
        let bytes = to_arrow_ipc(&result()).unwrap();
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches, result().batches);
    }
}
