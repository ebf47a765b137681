//! DataFusion scalar UDFs that carry PromQL's kernels into plans.
//!
//! Range functions and the instant lookup are not among them: the step sweep
//! ([`super::sweep`]) evaluates those over a selector's samples as they stream in.

// A UDF's `new()` builds the `ScalarUDF` that wraps it, as DataFusion's own functions do.
#![allow(clippy::new_ret_no_self)]

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampNanosecondType};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use regex::Regex;

use super::kernels::{self, BinaryOp};

/// Evaluation steps of a query, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Steps {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Steps {
    pub fn iter(self) -> impl Iterator<Item = i64> {
        let step = self.step.max(1);
        (0..).map(move |i| self.start + i * step).take_while(move |t| *t <= self.end)
    }

    pub fn count(self) -> usize {
        if self.end < self.start { 0 } else { ((self.end - self.start) / self.step.max(1) + 1) as usize }
    }
}

/// Samples one query may still load and produce (Prometheus's `query.max-samples`), shared
/// by every step evaluation of the query.
#[derive(Debug, Clone)]
pub struct SampleBudget {
    remaining: Arc<std::sync::atomic::AtomicI64>,
    limit: usize,
}

impl SampleBudget {
    pub fn new(limit: usize) -> Self {
        SampleBudget {
            remaining: Arc::new(std::sync::atomic::AtomicI64::new(i64::try_from(limit).unwrap_or(i64::MAX))),
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `samples` from the budget; an error once it is spent.
    pub fn take(&self, samples: usize) -> DfResult<()> {
        let samples = i64::try_from(samples).unwrap_or(i64::MAX);
        if self.remaining.fetch_sub(samples, std::sync::atomic::Ordering::Relaxed) < samples {
            return Err(datafusion::error::DataFusionError::ResourcesExhausted(format!(
                "query processing would load too many samples into memory in query execution (more than {}, query.max_samples)",
                self.limit
            )));
        }
        Ok(())
    }

    /// Counts `samples` that exist only for a moment (points folded as they are made) against
    /// the budget: an error where holding them would have been one, and nothing kept.
    pub fn pass(&self, samples: usize) -> DfResult<()> {
        self.take(samples)?;
        self.give_back(samples);
        Ok(())
    }

    /// Returns samples taken: those a query no longer holds.
    pub fn give_back(&self, samples: usize) {
        let samples = i64::try_from(samples).unwrap_or(i64::MAX);
        self.remaining.fetch_add(samples, std::sync::atomic::Ordering::Relaxed);
    }
}

// One budget is one query's: equal only to itself, so plans of different queries never merge.
impl PartialEq for SampleBudget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.remaining, &other.remaining)
    }
}

impl Eq for SampleBudget {}

impl Hash for SampleBudget {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.remaining), state);
    }
}

/// A number no other call site of a PromQL function has: DataFusion's projection merging
/// drops a projection that equals the one below it (`merge_consecutive_projections`' fast
/// path), which is right for plain columns but not for `(x * 2) * 2` or `---x`, whose two
/// levels are written alike. Each call of [`BinaryUdf::new`] and [`MathUdf::new`] is a
/// distinct function to the optimizer, so stacked operations are never taken for one.
fn call_site() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Element-wise binary operator with Go float semantics; comparisons give 1/0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinaryUdf {
    op: BinaryOp,
    signature: Signature,
    site: u64,
}

impl BinaryUdf {
    pub fn new(op: BinaryOp) -> ScalarUDF {
        ScalarUDF::new_from_impl(BinaryUdf {
            op,
            signature: Signature::exact(vec![DataType::Float64, DataType::Float64], Volatility::Immutable),
            site: call_site(),
        })
    }
}

impl ScalarUDFImpl for BinaryUdf {
    fn name(&self) -> &str {
        "promql_binary"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let l = args.args[0].to_array(args.number_rows)?;
        let r = args.args[1].to_array(args.number_rows)?;
        let (l, r) = (l.as_primitive::<Float64Type>(), r.as_primitive::<Float64Type>());
        let out: Float64Array = l.iter().zip(r.iter()).map(|(a, b)| Some(self.op.apply(a?, b?))).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Element-wise functions of `(value, params...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MathFunction {
    Abs,
    Ceil,
    Floor,
    Exp,
    Ln,
    Log2,
    Log10,
    Sqrt,
    Sgn,
    /// `round(v, to_nearest)`
    Round,
    /// `clamp(v, min, max)`
    Clamp,
    ClampMin,
    ClampMax,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Asinh,
    Acosh,
    Atanh,
    Deg,
    Rad,
    Minute,
    Hour,
    DayOfMonth,
    DayOfWeek,
    DayOfYear,
    DaysInMonth,
    Month,
    Year,
}

impl MathFunction {
    pub fn from_name(name: &str) -> Option<MathFunction> {
        use MathFunction::*;
        Some(match name {
            "abs" => Abs,
            "ceil" => Ceil,
            "floor" => Floor,
            "exp" => Exp,
            "ln" => Ln,
            "log2" => Log2,
            "log10" => Log10,
            "sqrt" => Sqrt,
            "sgn" => Sgn,
            "round" => Round,
            "clamp" => Clamp,
            "clamp_min" => ClampMin,
            "clamp_max" => ClampMax,
            "sin" => Sin,
            "cos" => Cos,
            "tan" => Tan,
            "asin" => Asin,
            "acos" => Acos,
            "atan" => Atan,
            "sinh" => Sinh,
            "cosh" => Cosh,
            "tanh" => Tanh,
            "asinh" => Asinh,
            "acosh" => Acosh,
            "atanh" => Atanh,
            "deg" => Deg,
            "rad" => Rad,
            "minute" => Minute,
            "hour" => Hour,
            "day_of_month" => DayOfMonth,
            "day_of_week" => DayOfWeek,
            "day_of_year" => DayOfYear,
            "days_in_month" => DaysInMonth,
            "month" => Month,
            "year" => Year,
            _ => return None,
        })
    }

    pub fn is_date(self) -> bool {
        use MathFunction::*;
        matches!(self, Minute | Hour | DayOfMonth | DayOfWeek | DayOfYear | DaysInMonth | Month | Year)
    }

    fn apply(self, v: f64, a: f64, b: f64) -> f64 {
        use MathFunction::*;
        match self {
            Abs => v.abs(),
            Ceil => v.ceil(),
            Floor => v.floor(),
            Exp => v.exp(),
            Ln => v.ln(),
            Log2 => v.log2(),
            Log10 => v.log10(),
            Sqrt => v.sqrt(),
            Sgn => {
                if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    v
                }
            }
            // Prometheus: floor(v / to_nearest + 0.5) * to_nearest, with the inverse first.
            Round => {
                let inverse = 1.0 / a;
                (v * inverse + 0.5).floor() / inverse
            }
            Clamp => go_max(a, go_min(b, v)),
            ClampMin => go_max(a, v),
            ClampMax => go_min(a, v),
            Sin => v.sin(),
            Cos => v.cos(),
            Tan => v.tan(),
            Asin => v.asin(),
            Acos => v.acos(),
            Atan => v.atan(),
            Sinh => v.sinh(),
            Cosh => v.cosh(),
            Tanh => v.tanh(),
            Asinh => v.asinh(),
            Acosh => v.acosh(),
            Atanh => v.atanh(),
            Deg => v * 180.0 / std::f64::consts::PI,
            Rad => v * std::f64::consts::PI / 180.0,
            Minute | Hour | DayOfMonth | DayOfWeek | DayOfYear | DaysInMonth | Month | Year => date_part(self, v),
        }
    }
}

/// Go's `math.Max`: NaN wins, +0 beats -0.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { b } else { a }
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { a } else { b }
    } else {
        a.min(b)
    }
}

fn date_part(function: MathFunction, seconds: f64) -> f64 {
    use chrono::{Datelike, Timelike};
    if !seconds.is_finite() {
        return f64::NAN;
    }
    let Some(time) = chrono::DateTime::from_timestamp(seconds as i64, 0) else { return f64::NAN };
    match function {
        MathFunction::Minute => time.minute() as f64,
        MathFunction::Hour => time.hour() as f64,
        MathFunction::DayOfMonth => time.day() as f64,
        MathFunction::DayOfWeek => time.weekday().num_days_from_sunday() as f64,
        MathFunction::DayOfYear => time.ordinal() as f64,
        MathFunction::Month => time.month() as f64,
        MathFunction::Year => time.year() as f64,
        _ => {
            let (year, month) = (time.year(), time.month());
            let next = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
            let first = chrono::NaiveDate::from_ymd_opt(year, month, 1);
            let following = chrono::NaiveDate::from_ymd_opt(next.0, next.1, 1);
            match (first, following) {
                (Some(a), Some(b)) => (b - a).num_days() as f64,
                _ => f64::NAN,
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MathUdf {
    function: MathFunction,
    signature: Signature,
    /// See [`call_site`].
    site: u64,
}

impl MathUdf {
    pub fn new(function: MathFunction) -> ScalarUDF {
        ScalarUDF::new_from_impl(MathUdf {
            function,
            signature: Signature::variadic(vec![DataType::Float64], Volatility::Immutable),
            site: call_site(),
        })
    }
}

impl ScalarUDFImpl for MathUdf {
    fn name(&self) -> &str {
        "promql_math"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays: Vec<ArrayRef> = args.args.iter().map(|a| a.to_array(args.number_rows)).collect::<DfResult<_>>()?;
        let columns: Vec<&Float64Array> = arrays.iter().map(|a| a.as_primitive::<Float64Type>()).collect();
        let param = |i: usize, row: usize| columns.get(i).map_or(f64::NAN, |c| c.value(row));
        let values = columns[0];
        let out: Float64Array = (0..args.number_rows)
            .map(|row| {
                (!values.is_null(row)).then(|| self.function.apply(values.value(row), param(1, row), param(2, row)))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `quantile(φ, values)` over a list column (the aggregation's gathered values).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuantileUdf {
    signature: Signature,
}

impl QuantileUdf {
    pub fn new() -> ScalarUDF {
        ScalarUDF::new_from_impl(QuantileUdf { signature: Signature::any(2, Volatility::Immutable) })
    }
}

impl ScalarUDFImpl for QuantileUdf {
    fn name(&self) -> &str {
        "promql_quantile"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let q = args.args[0].to_array(args.number_rows)?;
        let lists = args.args[1].to_array(args.number_rows)?;
        let (q, lists) = (q.as_primitive::<Float64Type>(), lists.as_list::<i32>());
        let out: Float64Array = (0..args.number_rows)
            .map(|row| {
                let values = lists.value(row);
                let mut values: Vec<f64> = values.as_primitive::<Float64Type>().iter().flatten().collect();
                Some(kernels::quantile(q.value(row), &mut values))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `histogram_quantile(φ, les, counts)` over gathered buckets; null where no answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HistogramQuantileUdf {
    signature: Signature,
}

impl HistogramQuantileUdf {
    pub fn new() -> ScalarUDF {
        ScalarUDF::new_from_impl(HistogramQuantileUdf { signature: Signature::any(3, Volatility::Immutable) })
    }
}

impl ScalarUDFImpl for HistogramQuantileUdf {
    fn name(&self) -> &str {
        "promql_histogram_quantile"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let q = args.args[0].to_array(rows)?;
        let les = args.args[1].to_array(rows)?;
        let counts = args.args[2].to_array(rows)?;
        let (q, les, counts) = (q.as_primitive::<Float64Type>(), les.as_list::<i32>(), counts.as_list::<i32>());
        let out: Float64Array = (0..rows)
            .map(|row| {
                let bounds = les.value(row);
                let bounds = bounds.as_string::<i32>();
                let values = counts.value(row);
                let values = values.as_primitive::<Float64Type>();
                let mut buckets: Vec<(f64, f64)> = (0..bounds.len())
                    .filter(|&i| !bounds.is_null(i) && !values.is_null(i))
                    .filter_map(|i| parse_bound(bounds.value(i)).map(|b| (b, values.value(i))))
                    .collect();
                Some(kernels::bucket_quantile(q.value(row), &mut buckets))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// An `le` value as Go's `strconv.ParseFloat` reads it.
pub fn parse_bound(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse::<f64>().ok(),
    }
}

/// A time in nanoseconds as milliseconds, truncating: how every PromQL reading converts the
/// tables' timestamps. The divisor is a constant, which compiles to a multiplication (a
/// division by a variable, an `idiv` per sample, was a third of the sweep's `ingest`).
#[inline]
pub(crate) fn nanos_to_ms(t: i64) -> i64 {
    t / 1_000_000
}

/// A sample's time in ms, from the tables' nanosecond timestamps ([`nanos_to_ms`]).
/// `cast / 1_000_000` ran Arrow's checked division on every sample a selector reads (4 % of a
/// 24 h query); this is one unchecked pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MillisecondsUdf {
    signature: Signature,
}

impl MillisecondsUdf {
    pub fn new() -> ScalarUDF {
        let nanoseconds = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        ScalarUDF::new_from_impl(MillisecondsUdf {
            signature: Signature::exact(vec![nanoseconds], Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for MillisecondsUdf {
    fn name(&self) -> &str {
        "promql_milliseconds"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let times = args.args[0].to_array(args.number_rows)?;
        let out: Int64Array = times.as_primitive::<TimestampNanosecondType>().unary(nanos_to_ms);
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// A value as text for `count_values`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FormatValueUdf {
    signature: Signature,
}

impl FormatValueUdf {
    pub fn new() -> ScalarUDF {
        ScalarUDF::new_from_impl(FormatValueUdf {
            signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for FormatValueUdf {
    fn name(&self) -> &str {
        "promql_format_value"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let values = args.args[0].to_array(args.number_rows)?;
        let out: StringArray =
            values.as_primitive::<Float64Type>().iter().map(|v| v.map(kernels::format_value)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The value, given (samples of its label set at its step, value): an error when another
/// sample shares both (see [`super::labelsets`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelsetCheckUdf {
    signature: Signature,
}

impl LabelsetCheckUdf {
    pub fn new() -> ScalarUDF {
        ScalarUDF::new_from_impl(LabelsetCheckUdf {
            signature: Signature::exact(vec![DataType::Int64, DataType::Float64], Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for LabelsetCheckUdf {
    fn name(&self) -> &str {
        "promql_labelset_check"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let samples = args.args[0].to_array(args.number_rows)?;
        if samples.as_primitive::<datafusion::arrow::datatypes::Int64Type>().iter().any(|n| n.is_some_and(|n| n > 1)) {
            return datafusion::common::exec_err!("vector cannot contain metrics with the same labelset");
        }
        Ok(args.args[1].clone())
    }
}

/// A compiled regex that UDFs compare and hash by its source (DataFusion tells UDFs apart
/// by equality; `Regex` has none).
#[derive(Debug, Clone)]
struct Pattern(Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

impl Hash for Pattern {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

/// `label_replace`: the new value of the destination label, given (destination, source).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelReplaceUdf {
    regex: Pattern,
    replacement: String,
    signature: Signature,
}

impl LabelReplaceUdf {
    /// `regex` is anchored at both ends, as Prometheus does.
    pub fn new(regex: &str, replacement: &str) -> Result<ScalarUDF, regex::Error> {
        let regex = Pattern(Regex::new(&format!("^(?s:{regex})$"))?);
        Ok(ScalarUDF::new_from_impl(LabelReplaceUdf {
            regex,
            replacement: replacement.to_string(),
            signature: Signature::exact(vec![DataType::Utf8, DataType::Utf8], Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for LabelReplaceUdf {
    fn name(&self) -> &str {
        "promql_label_replace"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let destination = args.args[0].to_array(args.number_rows)?;
        let source = args.args[1].to_array(args.number_rows)?;
        let (destination, source) = (destination.as_string::<i32>(), source.as_string::<i32>());
        let out: StringArray = (0..args.number_rows)
            .map(|row| {
                let current = (!destination.is_null(row)).then(|| destination.value(row).to_string());
                let text = if source.is_null(row) { "" } else { source.value(row) };
                match self.regex.0.captures(text) {
                    Some(captures) => {
                        let mut value = String::new();
                        captures.expand(&self.replacement, &mut value);
                        (!value.is_empty()).then_some(value)
                    }
                    None => current,
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// A label regex matcher (`=~`, `!~`) on a label column: the regex runs once per distinct
/// value of a dictionary column and rows take their key's answer; an absent label (null)
/// matches as the empty string, as in Prometheus.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelRegexUdf {
    regex: Pattern,
    negated: bool,
    signature: Signature,
}

impl LabelRegexUdf {
    /// `regex` as given: a matcher's, compiled and anchored by the parser.
    pub fn new(regex: Regex, negated: bool) -> ScalarUDF {
        ScalarUDF::new_from_impl(LabelRegexUdf {
            regex: Pattern(regex),
            negated,
            signature: Signature::any(1, Volatility::Immutable),
        })
    }

    fn matches(&self, text: Option<&str>) -> bool {
        self.regex.0.is_match(text.unwrap_or("")) != self.negated
    }
}

impl ScalarUDFImpl for LabelRegexUdf {
    fn name(&self) -> &str {
        "promql_label_regex"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let column = args.args[0].to_array(args.number_rows)?;
        let out: BooleanArray = match column.as_any_dictionary_opt() {
            Some(dictionary) => {
                let values = cast(dictionary.values(), &DataType::Utf8)?;
                let values = values.as_string::<i32>();
                let per_value: Vec<bool> = values.iter().map(|v| self.matches(v)).collect();
                let absent = self.matches(None);
                let keys = dictionary.keys();
                let normalized = dictionary.normalized_keys();
                BooleanArray::new(
                    BooleanBuffer::collect_bool(normalized.len(), |row| {
                        if keys.is_null(row) {
                            absent
                        } else {
                            per_value.get(normalized[row]).copied().unwrap_or(absent)
                        }
                    }),
                    None,
                )
            }
            None => {
                let text = cast(&column, &DataType::Utf8)?;
                text.as_string::<i32>().iter().map(|v| Some(self.matches(v))).collect()
            }
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Keeps rows whose comparison holds; a Boolean column for filters with Go semantics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompareUdf {
    op: BinaryOp,
    signature: Signature,
}

impl CompareUdf {
    pub fn new(op: BinaryOp) -> ScalarUDF {
        ScalarUDF::new_from_impl(CompareUdf {
            op,
            signature: Signature::exact(vec![DataType::Float64, DataType::Float64], Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for CompareUdf {
    fn name(&self) -> &str {
        "promql_compare"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let l = args.args[0].to_array(args.number_rows)?;
        let r = args.args[1].to_array(args.number_rows)?;
        let (l, r) = (l.as_primitive::<Float64Type>(), r.as_primitive::<Float64Type>());
        let out: BooleanArray = l.iter().zip(r.iter()).map(|(a, b)| Some(self.op.apply(a?, b?) == 1.0)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_budget_is_shared_and_refuses_once_spent() {
        let budget = SampleBudget::new(10);
        let shared = budget.clone();
        assert!(budget.take(6).is_ok());
        assert!(shared.take(4).is_ok(), "exactly the limit");
        let error = shared.take(1).unwrap_err().to_string();
        assert!(error.contains("too many samples") && error.contains("query.max_samples"), "{error}");
        budget.give_back(5);
        assert!(budget.take(4).is_ok(), "samples given back may be taken again (one was over)");
        assert!(budget.take(1).is_err());
        assert_ne!(SampleBudget::new(10), SampleBudget::new(10));
        assert_eq!(budget, shared);
    }

    #[test]
    fn steps_cover_start_to_end() {
        let steps = Steps { start: 0, end: 30, step: 15 };
        assert_eq!(steps.iter().collect::<Vec<_>>(), vec![0, 15, 30]);
        assert_eq!(steps.count(), 3);
    }

    #[test]
    fn label_replace_anchors_and_expands() {
        let udf = LabelReplaceUdf {
            regex: Pattern(Regex::new("^(?s:(.*):.*)$").unwrap()),
            replacement: "$1".into(),
            signature: Signature::any(2, Volatility::Immutable),
        };
        assert_eq!(
            udf.regex.0.captures("host:9100").map(|c| {
                let mut s = String::new();
                c.expand(&udf.replacement, &mut s);
                s
            }),
            Some("host".into())
        );
        assert_eq!(date_part(MathFunction::DaysInMonth, 1_709_251_200.0), 31.0, "2024-03-01");
        assert_eq!(date_part(MathFunction::DayOfWeek, 0.0), 4.0, "1970-01-01 was a Thursday");
        assert_eq!(MathFunction::Round.apply(2.5, 1.0, 0.0), 3.0);
        assert_eq!(MathFunction::Round.apply(-2.5, 1.0, 0.0), -2.0);
        assert!(MathFunction::Clamp.apply(f64::NAN, 0.0, 1.0).is_nan());
    }

    fn label_regex(udf: &ScalarUDF, column: ArrayRef) -> Vec<Option<bool>> {
        let rows = column.len();
        let args = ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(column.clone())],
            arg_fields: vec![Arc::new(datafusion::arrow::datatypes::Field::new("l", column.data_type().clone(), true))],
            number_rows: rows,
            return_field: Arc::new(datafusion::arrow::datatypes::Field::new("m", DataType::Boolean, false)),
            config_options: Arc::new(datafusion::config::ConfigOptions::default()),
        };
        let out = udf.invoke_with_args(args).unwrap().to_array(rows).unwrap();
        out.as_boolean().iter().collect()
    }

    #[test]
    fn label_regex_answers_per_dictionary_value_and_absent_labels_match_empty() {
        use datafusion::arrow::array::DictionaryArray;
        use datafusion::arrow::datatypes::Int32Type;
        // Keys repeat, one key is null (absent label), one value is never used.
        let dictionary: DictionaryArray<Int32Type> =
            vec![Some("500"), None, Some("200"), Some("500"), Some("503")].into_iter().collect();
        let column: ArrayRef = Arc::new(dictionary);
        let five = LabelRegexUdf::new(Regex::new("^(?:5..)$").unwrap(), false);
        assert_eq!(label_regex(&five, column.clone()), [true, false, false, true, true].map(Some));
        let not_five = LabelRegexUdf::new(Regex::new("^(?:5..)$").unwrap(), true);
        assert_eq!(label_regex(&not_five, column.clone()), [false, true, true, false, false].map(Some));
        let maybe_empty = LabelRegexUdf::new(Regex::new("^(?:200|)$").unwrap(), false);
        assert_eq!(label_regex(&maybe_empty, column), [false, true, true, false, false].map(Some));
        // A plain string column (no dictionary) answers the same.
        let strings: ArrayRef = Arc::new(StringArray::from(vec![Some("503"), None, Some("2000")]));
        assert_eq!(label_regex(&five, strings.clone()), [true, false, false].map(Some));
        assert_eq!(label_regex(&maybe_empty, strings), [false, true, false].map(Some));
    }
}
