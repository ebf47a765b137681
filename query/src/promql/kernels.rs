//! PromQL's numeric kernels, written to give Prometheus 2.42's answers bit for bit where
//! possible: range-vector functions over one window of samples, the quantile rules,
//! `histogram_quantile`, and element-wise operators with Go's float semantics.

/// Prometheus's stale marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// Kahan–Babuška compensated summation step, as Prometheus's `kahanSumInc`.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Functions applied to the samples of one range-vector window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RangeFunction {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Resets,
    Changes,
    Deriv,
    /// `predict_linear(v, seconds)`: the parameter is the duration.
    PredictLinear,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    StddevOverTime,
    StdvarOverTime,
    LastOverTime,
    PresentOverTime,
    /// `quantile_over_time(φ, v)`: the parameter is φ.
    QuantileOverTime,
    /// `holt_winters(v, sf, tf)` (2.42's name; later `double_exponential_smoothing`): the
    /// parameters are the smoothing and the trend factor.
    DoubleExponentialSmoothing,
    /// The latest sample at or before the evaluation time, within the lookback.
    Instant,
    /// The sample's own timestamp (for `timestamp(v)`), in seconds.
    InstantTimestamp,
}

impl RangeFunction {
    /// Prometheus 2.x keeps the metric name for `last_over_time` only.
    pub fn keeps_metric_name(self) -> bool {
        self == RangeFunction::LastOverTime
    }

    pub fn from_name(name: &str) -> Option<RangeFunction> {
        use RangeFunction::*;
        Some(match name {
            "rate" => Rate,
            "increase" => Increase,
            "delta" => Delta,
            "irate" => Irate,
            "idelta" => Idelta,
            "resets" => Resets,
            "changes" => Changes,
            "deriv" => Deriv,
            "predict_linear" => PredictLinear,
            "avg_over_time" => AvgOverTime,
            "min_over_time" => MinOverTime,
            "max_over_time" => MaxOverTime,
            "sum_over_time" => SumOverTime,
            "count_over_time" => CountOverTime,
            "stddev_over_time" => StddevOverTime,
            "stdvar_over_time" => StdvarOverTime,
            "last_over_time" => LastOverTime,
            "present_over_time" => PresentOverTime,
            "quantile_over_time" => QuantileOverTime,
            "double_exponential_smoothing" => DoubleExponentialSmoothing,
            _ => return None,
        })
    }
}

/// One window: timestamps (ms, ascending) and values, stale markers already removed, plus
/// where the window is.
pub struct Window<'a> {
    pub timestamps: &'a [i64],
    pub values: &'a [f64],
    /// Start and end of the selected range, in ms (after offset).
    pub range_start: i64,
    pub range_end: i64,
    /// The evaluation time (for `predict_linear`), in ms.
    pub eval_time: i64,
}

/// Evaluates a range function; `None` where Prometheus returns no sample.
#[cfg(test)]
pub fn apply(function: RangeFunction, window: &Window, params: [f64; 2]) -> Option<f64> {
    apply_in_turn(function, window, params, &mut InTurn::default())
}

/// What a series' window leaves for its next: a sweep keeps one per series, its windows
/// moving forward over the same samples, and the next window computes only what the
/// samples it does not share decide. The arithmetic is the same, so are the answers, bit
/// for bit.
#[derive(Clone, Copy, Debug, Default)]
pub struct InTurn {
    extrapolation: Extrapolation,
    rising: Option<Rising>,
    extreme: Option<Extreme>,
}

/// [`apply`] to one of a series' windows in turn, `kept` from its previous window (start
/// each series with its default).
pub fn apply_in_turn(function: RangeFunction, window: &Window, params: [f64; 2], kept: &mut InTurn) -> Option<f64> {
    let param = params[0];
    use RangeFunction::*;
    let values = window.values;
    if values.is_empty() {
        return None;
    }
    match function {
        Rate => extrapolated_rate(window, true, true, kept),
        Increase => extrapolated_rate(window, true, false, kept),
        Delta => extrapolated_rate(window, false, false, kept),
        Irate => instant_value(window, true),
        Idelta => instant_value(window, false),
        Resets => Some(values.windows(2).filter(|w| w[1] < w[0]).count() as f64),
        Changes => {
            Some(values.windows(2).filter(|w| !(w[0] == w[1] || (w[0].is_nan() && w[1].is_nan()))).count() as f64)
        }
        Deriv => {
            if values.len() < 2 {
                return None;
            }
            Some(linear_regression(window.timestamps, values, window.timestamps[0]).0)
        }
        PredictLinear => {
            if values.len() < 2 {
                return None;
            }
            let (slope, intercept) = linear_regression(window.timestamps, values, window.eval_time);
            Some(slope * param + intercept)
        }
        AvgOverTime => Some(avg_over_time(values)),
        MinOverTime => Some(extreme(window, |v, min| v < min, &mut kept.extreme)),
        MaxOverTime => Some(extreme(window, |v, max| v > max, &mut kept.extreme)),
        SumOverTime => {
            let (sum, c) = values.iter().fold((0.0, 0.0), |(sum, c), &v| kahan_inc(v, sum, c));
            Some(if sum.is_infinite() { sum } else { sum + c })
        }
        CountOverTime => Some(values.len() as f64),
        StddevOverTime => Some(variance_over_time(values).sqrt()),
        StdvarOverTime => Some(variance_over_time(values)),
        LastOverTime => values.last().copied(),
        PresentOverTime => Some(1.0),
        QuantileOverTime => Some(quantile(param, &mut values.to_vec())),
        DoubleExponentialSmoothing => double_exponential_smoothing(values, params[0], params[1]),
        Instant => values.last().copied(),
        InstantTimestamp => window.timestamps.last().map(|&t| t as f64 / 1000.0),
    }
}

/// The last window's `max_over_time` or `min_over_time`: its value and the time of the
/// sample that holds it, and the times the window spanned.
#[derive(Clone, Copy, Debug)]
struct Extreme {
    value: f64,
    at: i64,
    from: i64,
    through: i64,
}

/// Prometheus's `max_over_time` (`beats` is `>`) or `min_over_time` (`<`): the samples
/// folded in time order, a sample taking the place of the one held when it beats it or the
/// held one is NaN; so the answer is the first sample that holds the largest (smallest)
/// value, NaN when all are. Every sample before that one is NaN or strictly beaten by it,
/// every one after it does not beat it: while it stays in the window, a window that moved
/// forward folds only its samples after the last window's end, from it (`kept`).
fn extreme(window: &Window, beats: fn(f64, f64) -> bool, kept: &mut Option<Extreme>) -> f64 {
    let (timestamps, values) = (window.timestamps, window.values);
    let (first, last) = (timestamps[0], timestamps[timestamps.len() - 1]);
    let (mut held, mut at, fold_from) = match *kept {
        Some(kept) if kept.from <= first && first <= kept.at && kept.through <= last => {
            let fresh = timestamps.iter().rev().take_while(|&&t| t > kept.through).count();
            (kept.value, kept.at, timestamps.len() - fresh)
        }
        _ => (values[0], first, 1),
    };
    for (&t, &v) in timestamps[fold_from..].iter().zip(&values[fold_from..]) {
        if beats(v, held) || held.is_nan() {
            (held, at) = (v, t);
        }
    }
    *kept = (!held.is_nan()).then_some(Extreme { value: held, at, from: first, through: last });
    held
}

/// What Prometheus's `extrapolatedRate` (2.x) derives from a window's sample times alone: its
/// chain of dependent divisions (the sampled interval, the average interval, the
/// extrapolation factor, the per-second range), the kernel's cost.
#[derive(Clone, Copy, Debug)]
struct WindowTimes {
    /// (first sample - range start, range end - last sample, range, samples), ms and count.
    key: (i64, i64, i64, usize),
    sampled_interval: f64,
    average_between: f64,
    duration_to_start: f64,
    duration_to_end: f64,
    /// [`Self::factor_from`] the first sample: unless a counter's zero comes closer.
    factor: f64,
    range_seconds: f64,
}

impl WindowTimes {
    /// The times of `window` (`n` samples, at least two).
    fn of(window: &Window, n: usize) -> Self {
        let (first_t, last_t) = (window.timestamps[0], window.timestamps[n - 1]);
        let sampled_interval = (last_t - first_t) as f64 / 1000.0;
        let mut times = WindowTimes {
            key: Self::key_of(window, n),
            sampled_interval,
            average_between: sampled_interval / (n - 1) as f64,
            duration_to_start: (first_t - window.range_start) as f64 / 1000.0,
            duration_to_end: (window.range_end - last_t) as f64 / 1000.0,
            factor: 0.0,
            range_seconds: (window.range_end - window.range_start) as f64 / 1000.0,
        };
        times.factor = times.factor_from(times.duration_to_start);
        times
    }

    /// What tells two windows' times apart: where the first and last samples are within the
    /// range, the range, and how many samples.
    fn key_of(window: &Window, n: usize) -> (i64, i64, i64, usize) {
        (
            window.timestamps[0] - window.range_start,
            window.range_end - window.timestamps[n - 1],
            window.range_end - window.range_start,
            n,
        )
    }

    /// How far the sampled interval extrapolates, as a factor, when the series starts
    /// `duration_to_start` seconds into the range: to each edge, or half an average interval
    /// short of an edge more than 1.1 intervals away.
    fn factor_from(&self, duration_to_start: f64) -> f64 {
        let threshold = self.average_between * 1.1;
        let mut extrapolate_to = self.sampled_interval;
        extrapolate_to += if duration_to_start < threshold { duration_to_start } else { self.average_between / 2.0 };
        extrapolate_to +=
            if self.duration_to_end < threshold { self.duration_to_end } else { self.average_between / 2.0 };
        extrapolate_to / self.sampled_interval
    }
}

/// The [`WindowTimes`] of a series' last windows: at a steady scrape interval its windows fall
/// on its samples in a few ways that repeat (four, for steps of 15 s over samples every 60 s;
/// up to eight are kept), so later windows take them as computed. The arithmetic is the
/// same, so are the answers, bit for bit.
#[derive(Clone, Copy, Debug, Default)]
struct Extrapolation {
    /// The oldest replaced first.
    slots: [Option<WindowTimes>; 8],
    oldest: usize,
}

impl Extrapolation {
    /// The times of `window` (`n` samples, at least two).
    fn times(&mut self, window: &Window, n: usize) -> WindowTimes {
        let key = WindowTimes::key_of(window, n);
        if let Some(times) = self.slots.iter().flatten().find(|times| times.key == key) {
            return *times;
        }
        let times = WindowTimes::of(window, n);
        self.slots[self.oldest] = Some(times);
        self.oldest = (self.oldest + 1) % self.slots.len();
        times
    }
}

/// Where a series' samples are known not to fall: each sample timed from `from` through
/// `through` is at least the one before it (or NaN, or after NaN: `<` is false for both).
#[derive(Clone, Copy, Debug)]
struct Rising {
    from: i64,
    through: i64,
}

/// Whether `window` holds a counter reset as [`with_resets`] finds one: a sample below the
/// one before it. (A first sample below zero counts there too, but adds 0 to a difference
/// that cannot be -0.) A series' windows in turn share most of their samples, so the next
/// window compares only the pairs its fresh samples make (`kept`): the reset scan was a
/// chain of dependent additions over every sample of every window, most of the rate
/// kernel's time.
fn falls(window: &Window, kept: &mut Option<Rising>) -> bool {
    let (timestamps, values) = (window.timestamps, window.values);
    let (first, last) = (timestamps[0], timestamps[timestamps.len() - 1]);
    // The first sample compared with the one before it: at least the second, since a kept
    // stretch reaches the window's first sample (never fresh).
    let (mut rising_from, check_from) = match *kept {
        Some(kept) if kept.from <= first && first <= kept.through => {
            let fresh = timestamps.iter().rev().take_while(|&&t| t > kept.through).count();
            (kept.from, timestamps.len() - fresh)
        }
        _ => (first, 1),
    };
    for i in check_from..values.len() {
        if values[i] < values[i - 1] {
            rising_from = timestamps[i];
        }
    }
    *kept = Some(Rising { from: rising_from, through: last });
    rising_from > first
}

/// Prometheus's `extrapolatedRate` (2.x): rate, increase and delta with extrapolation to the
/// window edges and counter-reset correction; what windows share from `kept`.
fn extrapolated_rate(window: &Window, is_counter: bool, is_rate: bool, kept: &mut InTurn) -> Option<f64> {
    let values = window.values;
    let n = values.len();
    if n < 2 {
        return None;
    }
    let times = kept.extrapolation.times(window, n);
    let mut result = values[n - 1] - values[0];
    let mut factor = times.factor;
    if is_counter {
        if falls(window, &mut kept.rising) {
            result = with_resets(result, values);
        }
        if result > 0.0 && values[0] >= 0.0 {
            // A counter does not extrapolate below zero: its zero may cut the start short.
            let duration_to_zero = times.sampled_interval * (values[0] / result);
            if duration_to_zero < times.duration_to_start {
                factor = times.factor_from(duration_to_zero);
            }
        }
    }
    result *= factor;
    if is_rate {
        result /= times.range_seconds;
    }
    Some(result)
}

/// `result` plus what counter resets in `values` took away: the value before each drop,
/// added to it one by one in order, as Prometheus adds them (summed apart first, then added,
/// a window with several resets rounded differently in the last bit).
fn with_resets(mut result: f64, values: &[f64]) -> f64 {
    let mut last = 0.0;
    for &v in values {
        if v < last {
            result += last;
        }
        last = v;
    }
    result
}

/// Prometheus 2.42's `holt_winters`: the last smoothed value, the trend started from the
/// first two samples; `None` for fewer than two.
fn double_exponential_smoothing(values: &[f64], sf: f64, tf: f64) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let (mut s0, mut s1, mut trend) = (0.0, values[0], values[1] - values[0]);
    for (i, &value) in values.iter().enumerate().skip(1) {
        if i > 1 {
            trend = tf * (s1 - s0) + (1.0 - tf) * trend;
        }
        let smoothed = sf * value + (1.0 - sf) * (s1 + trend);
        (s0, s1) = (s1, smoothed);
    }
    Some(s1)
}

/// `irate` / `idelta`: the last two samples.
fn instant_value(window: &Window, is_rate: bool) -> Option<f64> {
    let n = window.values.len();
    if n < 2 {
        return None;
    }
    let (last, previous) = (window.values[n - 1], window.values[n - 2]);
    let interval = window.timestamps[n - 1] - window.timestamps[n - 2];
    if interval == 0 {
        return None;
    }
    let mut result = if is_rate && last < previous { last } else { last - previous };
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least squares over (seconds since `intercept_time`, value), Kahan-summed.
fn linear_regression(timestamps: &[i64], values: &[f64], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = values[0];
    let mut const_y = true;
    for (i, (&t, &v)) in timestamps.iter().zip(values).enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1e3;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

fn avg_over_time(values: &[f64]) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0f64, 0.0f64);
    for &v in values {
        count += 1.0;
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(v / count - mean / count, mean, c);
    }
    if mean.is_infinite() { mean } else { mean + c }
}

fn variance_over_time(values: &[f64]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &v in values {
        count += 1.0;
        let delta = v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Prometheus's order for sorting sample values: NaN before every number (its `Less` says
/// so), numbers ascending. A total order, unlike `partial_cmp`.
pub fn nan_first(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => a.total_cmp(&b),
    }
}

/// The φ-quantile of values, interpolating between neighbours, as Prometheus's `quantile`.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| nan_first(*a, *b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// `histogram_quantile` over cumulative `(upper bound, count)` buckets (Prometheus's
/// `bucketQuantile`).
pub fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| nan_first(a.0, b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound (e.g. "1" and "1.0") are one bucket.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(bound, count) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == bound => last.1 += count,
            _ => merged.push((bound, count)),
        }
    }
    // Counts must not decrease (scrapes are not atomic).
    let mut max = f64::NEG_INFINITY;
    for bucket in merged.iter_mut() {
        if bucket.1 > max {
            max = bucket.1;
        } else if bucket.1 < max {
            bucket.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..merged.len() - 1].partition_point(|bucket| bucket.1 < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let bucket_end = merged[b].0;
    let mut count = merged[b].1;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Binary operators between two floats, with Go's semantics (IEEE comparisons: any
/// comparison with NaN is false).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

impl BinaryOp {
    /// Whether the result keeps the left side's metric name: Prometheus 2.42 drops it for the
    /// arithmetic operators but not for `atan2` (`shouldDropMetricName`).
    pub fn keeps_metric_name(self) -> bool {
        matches!(self, BinaryOp::Atan2)
    }

    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Gt | BinaryOp::Lt | BinaryOp::Ge | BinaryOp::Le)
    }

    /// The arithmetic result, or for comparisons 1.0 / 0.0.
    pub fn apply(self, l: f64, r: f64) -> f64 {
        let truth = |b: bool| if b { 1.0 } else { 0.0 };
        match self {
            BinaryOp::Add => l + r,
            BinaryOp::Sub => l - r,
            BinaryOp::Mul => l * r,
            BinaryOp::Div => l / r,
            BinaryOp::Mod => l % r,
            BinaryOp::Pow => l.powf(r),
            BinaryOp::Atan2 => l.atan2(r),
            BinaryOp::Eq => truth(l == r),
            BinaryOp::Ne => truth(l != r),
            BinaryOp::Gt => truth(l > r),
            BinaryOp::Lt => truth(l < r),
            BinaryOp::Ge => truth(l >= r),
            BinaryOp::Le => truth(l <= r),
        }
    }
}

/// 2^53: every integer below it is a float, and the floats around it are at most 1 apart,
/// so no shorter text reads back to it.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A float as Go's `strconv.FormatFloat(v, 'f', -1, 64)` writes it (for `count_values`).
pub fn format_value(value: f64) -> String {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out.into_iter().map(char::from).collect()
}

/// [`format_value`]'s text (ASCII) appended to `out`: a result of thousands of points
/// formats each one without a string of its own. Ryu finds the shortest digits that read
/// back to the same float, a tie between two last digits going to the even one as in Go
/// (Rust's `Display` picks differently); they are then written without an exponent.
pub fn write_value(out: &mut Vec<u8>, value: f64) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value == f64::INFINITY {
        out.extend_from_slice(b"+Inf");
    } else if value == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Inf");
    } else if value.abs() < MAX_EXACT_INTEGER
        && (value as i64) as f64 == value
        && (value != 0.0 || value.is_sign_positive())
    {
        // A whole number (counters, gauges of counts) below 2^53: its digits are the
        // integer's, and integer text is several times cheaper than float text. (Whole
        // is tested by a round trip through i64: `fract` is a call to libm's `trunc` on
        // x86-64's baseline, ~4 % of writing a large answer.)
        out.extend_from_slice(itoa::Buffer::new().format(value as i64).as_bytes());
    } else {
        let mut buffer = ryu::Buffer::new();
        write_plain_decimal(out, buffer.format_finite(value).as_bytes());
    }
}

/// Ryu's text (`123.0`, `0.001`, `1.5e-7`, `1e21`) in plain decimal notation, as Go's `'f'`
/// format writes it: `123`, `0.001`, `0.00000015`, `1000000000000000000000`.
fn write_plain_decimal(out: &mut Vec<u8>, text: &[u8]) {
    let text = match text.strip_prefix(b"-") {
        Some(rest) => {
            out.push(b'-');
            rest
        }
        None => text,
    };
    let Some(e) = text.iter().position(|&b| b == b'e') else {
        out.extend_from_slice(text.strip_suffix(b".0").unwrap_or(text));
        return;
    };
    let (mantissa, exponent) = (&text[..e], &text[e + 1..]);
    // Ryu's exponent form is `d` or `d.ddd`, then `eN`: N places after the first digit.
    let exponent: i64 = std::str::from_utf8(exponent).ok().and_then(|e| e.parse().ok()).unwrap_or(0);
    let (whole, fraction) = match mantissa.iter().position(|&b| b == b'.') {
        Some(point) => (&mantissa[..point], &mantissa[point + 1..]),
        None => (mantissa, &[][..]),
    };
    let digits = || whole.iter().chain(fraction).copied();
    let count = whole.len() + fraction.len();
    let point = whole.len() as i64 + exponent; // digits before the decimal point
    if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', point.unsigned_abs() as usize));
        out.extend(digits());
    } else if point as usize >= count {
        out.extend(digits());
        out.extend(std::iter::repeat_n(b'0', point as usize - count));
    } else {
        out.extend(digits().take(point as usize));
        out.push(b'.');
        out.extend(digits().skip(point as usize));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window<'a>(timestamps: &'a [i64], values: &'a [f64], start: i64, end: i64) -> Window<'a> {
        Window { timestamps, values, range_start: start, range_end: end, eval_time: end }
    }

    /// A series' windows in turn, the times kept from one to the next, answer bit for bit as
    /// each window computed alone: steady and jittered intervals, a gap, a missed scrape
    /// (edges alike, a sample fewer), resets, a
    /// counter from near zero (its zero cuts the start), a falling gauge, NaN.
    #[test]
    fn rates_in_turn_answer_as_each_window_alone() {
        let mut timestamps = Vec::new();
        let mut values = Vec::new();
        let mut t = 1_000;
        for i in 0..400i64 {
            t += match i {
                100..=140 => 15_000 + (i * 7919) % 1_000, // jitter
                200 => 600_000,                           // a gap
                320 => 30_000,                            // a missed scrape
                _ => 15_000,
            };
            timestamps.push(t);
            values.push(match i {
                0..=50 => 0.5 + i as f64 * 3.0, // from near zero
                51..=250 if i % 60 == 0 => 1.0, // resets
                51..=250 => 100.0 + i as f64 * 2.5,
                251..=300 => 1e6 - i as f64 * 1.5, // falls
                301 => f64::NAN,
                _ => i as f64 * 0.125,
            });
        }
        let rates = [RangeFunction::Rate, RangeFunction::Increase, RangeFunction::Delta];
        let checked = in_turn_against(&rates, &timestamps, &values, |function, w| apply(function, w, [0.0, 0.0]));
        assert!(checked > 5_000, "{checked}");
        // Edges alike, a sample fewer: another average interval, and here another factor.
        let mut kept = InTurn::default();
        for ts in [&[25_000, 30_000, 35_000, 60_000][..], &[25_000, 40_000, 60_000][..]] {
            let vs = (0..ts.len()).map(|i| 10.0 + i as f64).collect::<Vec<_>>();
            let w = window(ts, &vs, 0, 60_000);
            let in_turn = apply_in_turn(RangeFunction::Rate, &w, [0.0, 0.0], &mut kept);
            let alone = apply(RangeFunction::Rate, &w, [0.0, 0.0]);
            assert_eq!(alone.map(f64::to_bits), in_turn.map(f64::to_bits), "{ts:?}");
        }
    }

    /// Prometheus 2.42's `extrapolatedRate` as its Go source writes it, for comparison.
    fn prometheus_extrapolated_rate(w: &Window, is_counter: bool, is_rate: bool) -> Option<f64> {
        let (ts, vs) = (w.timestamps, w.values);
        let n = vs.len();
        if n < 2 {
            return None;
        }
        let mut result = vs[n - 1] - vs[0];
        if is_counter {
            let mut last = 0.0;
            for &v in vs {
                if v < last {
                    result += last;
                }
                last = v;
            }
        }
        let mut duration_to_start = (ts[0] - w.range_start) as f64 / 1000.0;
        let duration_to_end = (w.range_end - ts[n - 1]) as f64 / 1000.0;
        let sampled_interval = (ts[n - 1] - ts[0]) as f64 / 1000.0;
        let average = sampled_interval / (n - 1) as f64;
        if is_counter && result > 0.0 && vs[0] >= 0.0 {
            let duration_to_zero = sampled_interval * (vs[0] / result);
            if duration_to_zero < duration_to_start {
                duration_to_start = duration_to_zero;
            }
        }
        let threshold = average * 1.1;
        let mut extrapolate_to = sampled_interval;
        extrapolate_to += if duration_to_start < threshold { duration_to_start } else { average / 2.0 };
        extrapolate_to += if duration_to_end < threshold { duration_to_end } else { average / 2.0 };
        result *= extrapolate_to / sampled_interval;
        if is_rate {
            result /= (w.range_end - w.range_start) as f64 / 1000.0;
        }
        Some(result)
    }

    /// Rates in turn answer bit for bit as Prometheus's own formula: counters whose first
    /// value is at, under and just over where their zero cuts the start short, from below
    /// zero, -0 and zero, tiny and huge, with one reset and with several in a window (added
    /// one by one; a window in turn looks for them only among its fresh samples).
    #[test]
    fn rates_answer_as_prometheus_computes_them() {
        let mut checked = 0;
        for first in [-3.0, -0.0, 0.0, 1e-300, 5e-324, 0.001, 0.5, 3.0, 6.0, 12.0, 12.000001, 24.0, 1e6, 1e300] {
            for slope in [0.25, 1.0, 3.0, 1e-9, 7e12] {
                let timestamps: Vec<i64> = (0..120).map(|i| 1_000 + i * 15_000 + (i * 7919) % 2_000).collect();
                let values: Vec<f64> = (0..120)
                    .map(|i| match i {
                        70 => first * 0.5,
                        75 | 78 => first * 0.25 + slope * 0.3,
                        _ => first + slope * i as f64,
                    })
                    .collect();
                let functions = [RangeFunction::Rate, RangeFunction::Increase, RangeFunction::Delta];
                checked += in_turn_against(&functions, &timestamps, &values, |function, w| {
                    let is_counter = function != RangeFunction::Delta;
                    prometheus_extrapolated_rate(w, is_counter, function == RangeFunction::Rate)
                });
            }
        }
        assert!(checked > 50_000, "{checked}");
    }

    /// Sweeps `functions` over the series `timestamps`/`values` at several ranges and steps,
    /// each window in turn (what it keeps passed on), and compares bits with `alone`; the
    /// number of windows compared.
    fn in_turn_against(
        functions: &[RangeFunction],
        timestamps: &[i64],
        values: &[f64],
        alone: impl Fn(RangeFunction, &Window) -> Option<f64>,
    ) -> usize {
        let mut checked = 0;
        let last = timestamps[timestamps.len() - 1];
        for &function in functions {
            for (range_ms, step_ms) in [(60_000, 15_000), (300_000, 15_000), (300_000, 60_000), (120_000, 7_000)] {
                let mut kept = InTurn::default();
                let mut end = timestamps[0];
                while end <= last + range_ms {
                    let start = end - range_ms;
                    let from = timestamps.partition_point(|&x| x <= start);
                    let to = timestamps.partition_point(|&x| x <= end);
                    let w = window(&timestamps[from..to], &values[from..to], start, end);
                    if !w.values.is_empty() {
                        let in_turn = apply_in_turn(function, &w, [0.0, 0.0], &mut kept);
                        assert_eq!(
                            alone(function, &w).map(f64::to_bits),
                            in_turn.map(f64::to_bits),
                            "{function:?} at {end}"
                        );
                        checked += 1;
                    }
                    end += step_ms;
                }
            }
        }
        checked
    }

    /// `max_over_time` and `min_over_time` in turn answer as Prometheus's fold over each
    /// window: a counter (the newest sample holds the max), a random gauge (the extreme
    /// leaves the window), ties (the first holds it, +0 and -0 alike but for their sign),
    /// NaN alone and in runs as long as a window, and a gap.
    #[test]
    fn extremes_in_turn_answer_as_a_fold_of_each_window() {
        let mut timestamps = Vec::new();
        let mut values = Vec::new();
        let mut t = 0;
        let mut bits: u64 = 0x2545_F491_4F6C_DD1D;
        for i in 0..600i64 {
            t += if i == 450 { 900_000 } else { 15_000 };
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            timestamps.push(t);
            values.push(match i {
                0..=99 => i as f64 * 2.0,                                      // a counter
                100..=199 => (bits % 1_000) as f64 / 8.0,                      // a random gauge
                200..=299 => [0.0, -0.0, 1.0, 1.0, -1.0][(bits % 5) as usize], // ties
                300..=340 => f64::NAN,                                         // NaN longer than a window
                341..=399 if bits.is_multiple_of(4) => f64::NAN,
                _ => (bits % 7) as f64 - 3.0,
            });
        }
        let fold = |function, w: &Window| {
            let first = w.values[0];
            Some(w.values.iter().skip(1).fold(first, |held, &v| {
                let beats = if function == RangeFunction::MaxOverTime { v > held } else { v < held };
                if beats || held.is_nan() { v } else { held }
            }))
        };
        let extremes = [RangeFunction::MaxOverTime, RangeFunction::MinOverTime];
        assert!(in_turn_against(&extremes, &timestamps, &values, fold) > 3_000);
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // Counter 0,10,20,30,40 every 15 s; window [0, 60s].
        let ts = [0, 15_000, 30_000, 45_000, 60_000];
        let vs = [0.0, 10.0, 20.0, 30.0, 40.0];
        let w = window(&ts, &vs, 0, 60_000);
        assert_eq!(apply(RangeFunction::Increase, &w, [0.0, 0.0]), Some(40.0));
        assert!((apply(RangeFunction::Rate, &w, [0.0, 0.0]).unwrap() - 40.0 / 60.0).abs() < 1e-12);
        // A reset: 30 → 5 adds 30.
        let vs = [10.0, 20.0, 30.0, 5.0, 15.0];
        let w = window(&ts, &vs, 0, 60_000);
        assert_eq!(apply(RangeFunction::Increase, &w, [0.0, 0.0]), Some(35.0));
        assert_eq!(apply(RangeFunction::Resets, &w, [0.0, 0.0]), Some(1.0));
        assert_eq!(apply(RangeFunction::Changes, &w, [0.0, 0.0]), Some(4.0));
        // Samples far from the edges extrapolate by half an interval only.
        let ts = [20_000, 35_000];
        let vs = [1.0, 2.0];
        let w = window(&ts, &vs, 0, 60_000);
        assert_eq!(apply(RangeFunction::Delta, &w, [0.0, 0.0]), Some(2.0));
        // As a counter the zero point (15 s before the first sample) is the nearer start.
        assert!((apply(RangeFunction::Rate, &w, [0.0, 0.0]).unwrap() - 2.5 / 60.0).abs() < 1e-15);
    }

    #[test]
    fn values_are_written_as_go_writes_them() {
        let mut cases = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            123.0,
            1e21,
            1e22,
            1.5e-7,
            1e-5,
            1e-6,
            123456789012345680.0,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            59.98333333333354,
        ];
        // And a spread of bit patterns (xorshift), every exponent from tiny to huge.
        let mut bits: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            cases.push(f64::from_bits(bits));
            // Whole numbers of every size around 2^53, where text switches to ryu's.
            cases.push(((bits >> (bits % 64)) as i64) as f64);
        }
        // Shortest digits that read back exactly, without an exponent: as long as the std
        // formatter's text (the two differ only in which of two equally near last digits
        // they pick).
        for value in cases.into_iter().filter(|v| v.is_finite()) {
            let text = format_value(value);
            assert_eq!(text.parse::<f64>().map(f64::to_bits), Ok(value.to_bits()), "{value:e} as {text}");
            assert_eq!(text.len(), format!("{value}").len(), "{value:e} as {text}");
        }
        // That tie goes to the even digit, as Go's shortest formatting (and so Prometheus
        // 2.42's `1658206780088562.25` query) writes it; `Display` writes ...562.3.
        assert_eq!(format_value(1_658_206_780_088_562.3), "1658206780088562.2");
        assert_eq!(format_value(2.5e-8), "0.000000025");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn over_time_and_regression() {
        let ts = [0, 1000, 2000, 3000];
        let vs = [1.0, 3.0, 5.0, 7.0];
        let w = window(&ts, &vs, 0, 3000);
        assert_eq!(apply(RangeFunction::Deriv, &w, [0.0, 0.0]), Some(2.0));
        assert_eq!(apply(RangeFunction::PredictLinear, &w, [10.0, 0.0]), Some(27.0));
        assert_eq!(apply(RangeFunction::AvgOverTime, &w, [0.0, 0.0]), Some(4.0));
        assert_eq!(apply(RangeFunction::StdvarOverTime, &w, [0.0, 0.0]), Some(5.0));
        assert_eq!(apply(RangeFunction::QuantileOverTime, &w, [0.5, 0.0]), Some(4.0));
        let with_nan = [f64::NAN, 2.0, 1.0];
        let w = window(&ts[..3], &with_nan, 0, 2000);
        assert_eq!(apply(RangeFunction::MaxOverTime, &w, [0.0, 0.0]), Some(2.0));
        assert_eq!(apply(RangeFunction::MinOverTime, &w, [0.0, 0.0]), Some(1.0));
        assert_eq!(apply(RangeFunction::Irate, &window(&ts, &vs, 0, 3000), [0.0; 2]), Some(2.0));
    }

    #[test]
    fn histogram_quantile_matches_bucket_quantile() {
        let mut buckets = vec![(0.1, 10.0), (0.5, 50.0), (1.0, 90.0), (f64::INFINITY, 100.0)];
        assert!((bucket_quantile(0.5, &mut buckets) - 0.5).abs() < 1e-12);
        assert!((bucket_quantile(0.9, &mut buckets) - 1.0).abs() < 1e-12);
        assert_eq!(bucket_quantile(0.99, &mut buckets), 1.0, "beyond the last finite bucket");
        let mut no_inf = vec![(1.0, 1.0)];
        assert!(bucket_quantile(0.5, &mut no_inf).is_nan());
        assert_eq!(bucket_quantile(-1.0, &mut buckets), f64::NEG_INFINITY);
    }

    #[test]
    fn comparisons_follow_ieee_not_arrow() {
        assert_eq!(BinaryOp::Eq.apply(f64::NAN, f64::NAN), 0.0);
        assert_eq!(BinaryOp::Ne.apply(f64::NAN, f64::NAN), 1.0);
        assert_eq!(BinaryOp::Gt.apply(f64::NAN, 1.0), 0.0);
        assert_eq!(BinaryOp::Mod.apply(-7.0, 3.0), -1.0);
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        let mut values = [3.0, f64::NAN, 1.0, f64::NAN, 2.0];
        values.sort_by(|a, b| nan_first(*a, *b));
        assert!(values[0].is_nan() && values[1].is_nan());
        assert_eq!(values[2..], [1.0, 2.0, 3.0]);
        assert_eq!(quantile(1.0, &mut [f64::NAN, 5.0, 1.0]), 5.0);
    }
}
