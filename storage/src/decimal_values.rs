//! Sample values stored as scaled integers. Most values senders send are decimals with few
//! places (counters are whole numbers, gauges like `57.34`); as doubles their low mantissa
//! bits differ even between neighbours and compress poorly, as a Parquet DECIMAL (INT64,
//! delta-encoded) they take a fraction of the bytes. VictoriaMetrics stores every value as a
//! decimal mantissa and exponent for the same reason.
//!
//! A segment's value column is stored so only when every value reads back bit for bit; one
//! that does not (NaN, a stale marker, ±Inf, -0.0, more digits than a double holds) keeps the
//! column as doubles. Reading is arrow's cast to Float64, the same one a DataFusion scan
//! applies to a file column whose type differs from the table's, so [`decode`] and every
//! scan agree to the bit: [`exact_mantissa`] checks each value against that cast's formula,
//! and [`doubles`] (what [`decode`] and the indexed scan use) computes the cast's very bits.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal64Array, Float64Array};
use datafusion::arrow::compute;
use datafusion::arrow::datatypes::{DataType, Decimal64Type, Field, Float64Type, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use crate::schema::VALUE_COLUMN;

/// Most decimal places a stored value has: the precision of a Parquet INT64 decimal.
const MAX_SCALE: i8 = 18;

/// Largest mantissa whose every integer a double holds exactly (2^53).
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0;

/// The decimal type a value column with `scale` places is stored as.
fn decimal_type(scale: i8) -> DataType {
    DataType::Decimal64(MAX_SCALE as u8, scale)
}

/// `value` as a mantissa `m` with `value == m / 10^scale` bit for bit, where `power` is
/// `10^scale` as arrow's cast computes it.
fn exact_mantissa(value: f64, power: f64) -> Option<i64> {
    let scaled = value * power;
    if !(scaled.abs() <= MAX_MANTISSA) {
        return None;
    }
    let mantissa = scaled.round() as i64;
    ((mantissa as f64) / power).to_bits().eq(&value.to_bits()).then_some(mantissa)
}

/// `10^scale` as arrow's decimal-to-float cast computes it (`10_f64.powi(scale)`).
fn power_of_ten(scale: i8) -> f64 {
    10_f64.powi(i32::from(scale))
}

/// The fewest decimal places at which every value of `batches`' value columns is exact, or
/// `None` when some value is not a decimal a double holds (or there is no Float64 value
/// column).
fn common_scale(batches: &[RecordBatch]) -> Option<i8> {
    let mut scale = 0i8;
    let mut power = power_of_ten(scale);
    for batch in batches {
        let values = batch.column_by_name(VALUE_COLUMN)?.as_primitive_opt::<Float64Type>()?;
        if values.null_count() > 0 {
            return None;
        }
        for &value in values.values() {
            while exact_mantissa(value, power).is_none() {
                scale += 1;
                if scale > MAX_SCALE {
                    return None;
                }
                power = power_of_ten(scale);
            }
        }
    }
    Some(scale)
}

/// Groups of tables whose values share a file cheaply: a file has one scale, and a table
/// stored with `s` more places than its own pays ~3.3 × `s` bits per value (its mantissas
/// gain `s` zeros, and delta encoding does not divide them out), so tables of whole numbers
/// (most counters) never share a file with tables of two places (many gauges), and tables
/// with a value that is no decimal keep their doubles apart. Seven groups at most, so a
/// flush still writes a handful of files per partition.
pub fn split_by_scale(tables: Vec<(String, RecordBatch)>) -> Vec<Vec<(String, RecordBatch)>> {
    let mut groups: std::collections::BTreeMap<u8, Vec<(String, RecordBatch)>> = std::collections::BTreeMap::new();
    for (table, batch) in tables {
        let group = match common_scale(std::slice::from_ref(&batch)) {
            Some(0) => 0,
            Some(1..=2) => 1,
            Some(3..=4) => 2,
            Some(5..=6) => 3,
            Some(7..=9) => 4,
            Some(_) => 5,
            None => 6,
        };
        groups.entry(group).or_default().push((table, batch));
    }
    groups.into_values().collect()
}

/// `batch` with its value column replaced by `values` of `data_type`.
fn with_values(batch: &RecordBatch, values: ArrayRef) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let Some((index, _)) = schema.column_with_name(VALUE_COLUMN) else { return Ok(batch.clone()) };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == index { f.as_ref().clone().with_data_type(values.data_type().clone()) } else { f.as_ref().clone() }
        })
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[index] = values;
    RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), columns)
}

/// `batches` with their value columns as decimals when every value is one (all with the same
/// scale, as one file has one column type); otherwise `batches` as they are.
pub fn encode(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>, ArrowError> {
    let Some(scale) = common_scale(batches) else { return Ok(batches.to_vec()) };
    let power = power_of_ten(scale);
    let mut encoded = Vec::with_capacity(batches.len());
    for batch in batches {
        let values = batch.column_by_name(VALUE_COLUMN).and_then(|c| c.as_primitive_opt::<Float64Type>());
        let Some(values) = values else { return Ok(batches.to_vec()) };
        let mantissas: Option<Vec<i64>> = values.values().iter().map(|&v| exact_mantissa(v, power)).collect();
        // `common_scale` found every value exact at its own scale or fewer places; a value
        // exact at fewer places is exact at more (the mantissa gains zeros), checked anyway.
        let Some(mantissas) = mantissas else { return Ok(batches.to_vec()) };
        let decimals = Decimal64Array::from(mantissas).with_data_type(decimal_type(scale));
        encoded.push(with_values(batch, Arc::new(decimals))?);
    }
    Ok(encoded)
}

/// `batch` with a decimal value column (as [`encode`] writes it) read back as doubles.
pub fn decode(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    match batch.column_by_name(VALUE_COLUMN) {
        Some(values) if matches!(values.data_type(), DataType::Decimal64(..)) => {
            let doubles = doubles(values)?;
            with_values(&batch, doubles)
        }
        _ => Ok(batch),
    }
}

/// A value column as doubles: decimals as arrow's cast computes them (`m as f64 / 10^scale`),
/// bit for bit, without its per-value division where the scale is 0 (`x / 1.0` is `x`):
/// whole numbers, most counters, convert at a fraction of the cost (the cast was 4 % of a 7 d
/// error ratio's CPU). Any other column goes through the cast.
pub fn doubles(values: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let Some(decimals) = values.as_primitive_opt::<Decimal64Type>() else {
        return compute::cast(values, &DataType::Float64);
    };
    let doubles: Float64Array = match decimals.scale() {
        0 => decimals.unary(|mantissa| mantissa as f64),
        scale => {
            let power = power_of_ten(scale);
            decimals.unary(|mantissa| mantissa as f64 / power)
        }
    };
    Ok(Arc::new(doubles))
}

/// A decimal statistic of a stored value column as the double it stands for.
pub fn decimal_to_f64(mantissa: i64, scale: i8) -> f64 {
    (mantissa as f64) / power_of_ten(scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, TimestampNanosecondArray};

    fn batch(values: Vec<f64>) -> RecordBatch {
        let n = values.len();
        let schema = Schema::new(vec![
            Field::new(
                crate::schema::TIMESTAMP_COLUMN,
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new(VALUE_COLUMN, DataType::Float64, false),
        ]);
        let times = TimestampNanosecondArray::from_iter_values(0..n as i64);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(times), Arc::new(Float64Array::from(values))]).unwrap()
    }

    fn roundtrip(values: Vec<f64>) -> (Option<i8>, Vec<f64>) {
        let encoded = encode(&[batch(values)]).unwrap();
        let scale = match encoded[0].column_by_name(VALUE_COLUMN).unwrap().data_type() {
            DataType::Decimal64(_, scale) => Some(*scale),
            _ => None,
        };
        let decoded = decode(encoded[0].clone()).unwrap();
        (scale, decoded.column_by_name(VALUE_COLUMN).unwrap().as_primitive::<Float64Type>().values().to_vec())
    }

    #[test]
    fn doubles_are_arrows_cast_bit_for_bit_at_every_scale() {
        let mut next = crate::xorshift(0x51_7cc1_b727_220a);
        for scale in 0..=MAX_SCALE {
            // Mantissas of every size up to 2^53 and past it, signs, zero and nulls.
            let mantissas: Decimal64Array = (0..2_000)
                .map(|i| {
                    let bits = next() >> (next() % 64);
                    let mantissa = if i % 2 == 0 { bits as i64 } else { -(bits as i64 >> 1) };
                    (i % 97 != 0).then_some(mantissa)
                })
                .collect::<Decimal64Array>()
                .with_precision_and_scale(MAX_SCALE as u8, scale)
                .unwrap();
            let mantissas: ArrayRef = Arc::new(mantissas);
            let ours = doubles(&mantissas).unwrap();
            let arrows = compute::cast(&mantissas, &DataType::Float64).unwrap();
            assert_eq!(ours.to_data().nulls(), arrows.to_data().nulls(), "scale {scale}");
            let (ours, arrows) = (ours.as_primitive::<Float64Type>(), arrows.as_primitive::<Float64Type>());
            for row in 0..ours.len() {
                assert_eq!(ours.value(row).to_bits(), arrows.value(row).to_bits(), "scale {scale}, row {row}");
            }
        }
    }

    #[test]
    fn decimals_are_stored_with_the_fewest_places_and_read_back_bit_for_bit() {
        let cases: Vec<(Vec<f64>, Option<i8>)> = vec![
            (vec![0.0, 1.0, 2.0, 1e15, -7.0], Some(0)),
            (vec![57.34, 57.3, -0.01, 100.0], Some(2)),
            (vec![0.1, 0.25, 0.125], Some(3)),
            (vec![1e-18, 2e-18], Some(18)),
            (vec![9_007_199_254_740_992.0], Some(0)),
            // Not decimals a double holds at one scale: doubles stay.
            (vec![0.1 + 0.2], None),
            (vec![9_007_199_254_740_994.0], None),
            (vec![1e15, 0.5], None),
            (vec![1.0, f64::NAN], None),
            (vec![1.0, f64::from_bits(0x7ff0_0000_0000_0002)], None),
            (vec![f64::INFINITY], None),
            (vec![-0.0], None),
            (vec![1e-19], None),
            // Sixteen digits are still exact; seventeen are not.
            (vec![std::f64::consts::PI], Some(15)),
            (vec![2.0 / 3.0], Some(16)),
            (vec![1.0 + f64::EPSILON], None),
        ];
        for (values, expected) in cases {
            let (scale, decoded) = roundtrip(values.clone());
            assert_eq!(scale, expected, "{values:?}");
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&decoded), bits(&values), "{values:?}");
        }
    }

    #[test]
    fn every_decimal_of_up_to_six_places_reads_back_exactly() {
        // What senders write: the shortest decimal of a double with few places, of any size.
        let mut next = crate::xorshift(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..100_000 {
            let places = (next() % 7) as usize;
            let mantissa = (next() % 1_000_000_000_000) as i64 - 500_000_000_000;
            let text = format!("{}e-{places}", mantissa);
            let value: f64 = text.parse().unwrap();
            let (scale, decoded) = roundtrip(vec![value]);
            assert!(scale.is_some_and(|s| s as usize <= places), "{text}: {scale:?}");
            assert_eq!(decoded[0].to_bits(), value.to_bits(), "{text}");
        }
    }

    #[test]
    fn tables_of_unlike_scales_go_to_separate_files() {
        let tables = vec![
            ("hits".to_string(), batch(vec![1.0, 2.0])),
            ("temp".to_string(), batch(vec![20.5, 21.25])),
            ("load".to_string(), batch(vec![0.5])),
            ("up".to_string(), batch(vec![1.0, f64::NAN])),
            ("bytes".to_string(), batch(vec![4096.0])),
        ];
        let names: Vec<Vec<String>> =
            split_by_scale(tables).iter().map(|g| g.iter().map(|t| t.0.clone()).collect()).collect();
        assert_eq!(names, [vec!["hits", "bytes"], vec!["temp", "load"], vec!["up"]]);
    }

    #[test]
    fn the_power_of_ten_is_exact() {
        // Decoding divides by it: an inexact power would move values by an ulp.
        for scale in 0..=MAX_SCALE {
            let exact: f64 = format!("1e{scale}").parse().unwrap();
            assert_eq!(power_of_ten(scale).to_bits(), exact.to_bits(), "10^{scale}");
        }
    }
}
