//! Both sides of a ratio from one sweep: `sum by (job) (rate(x{code=~"5.."}[5m])) / sum by
//! (job) (rate(x[5m]))` reads `x` once. The two sides aggregate the same function of the same
//! metric and differ only in matchers the narrow side adds; the broad side's selector is
//! swept with each series marked by whether it also passes those matchers, folded by the
//! groups and the mark, and one aggregation gives each group's narrow value (its marked part)
//! and broad value (both parts) side by side. The error-ratio query of every SLO dashboard
//! otherwise scans the metric twice.

use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::{ExprFunctionExt, when};
use datafusion::prelude::{Expr, ident, lit};
use promql_parser::label::Matcher;
use promql_parser::parser::token;
use promql_parser::parser::{AggregateExpr, BinaryExpr, Expr as PromExpr, VectorMatchCardinality, VectorSelector};

use super::{Compiler, NAME, TS, VALUE, Value, VectorPlan, binary_op, kept_in_group, matcher_filter, ms};
use crate::promql::PromError;
use crate::promql::kernels::RangeFunction;
use crate::promql::labelsets::{Names, selector_names};
use crate::promql::sweep::Fold;
use crate::promql::udf::BinaryUdf;

/// The mark of a series that passes the narrow side's extra matchers (no label holds `#`).
const MARK: &str = "#narrow";
const NARROW: &str = "#narrow_value";
const BROAD: &str = "#broad_value";

/// A binary operation whose two sides one sweep can give.
pub(super) struct SharedSweep<'a> {
    fold: Fold,
    aggregate: &'a AggregateExpr,
    function: RangeFunction,
    /// The broad side's selector and window.
    selector: &'a VectorSelector,
    window: Option<std::time::Duration>,
    /// What the narrow side's selector adds.
    extra: Vec<&'a Matcher>,
    narrow_is_left: bool,
}

fn unparen(mut expr: &PromExpr) -> &PromExpr {
    while let PromExpr::Paren(paren) = expr {
        expr = &paren.expr;
    }
    expr
}

/// An aggregation's fold, function and selector (with its range) when it is one the sweep
/// folds: `sum`/`count` of a selector or of a range function of one.
fn folded_side(
    expr: &PromExpr,
) -> Option<(&AggregateExpr, Fold, RangeFunction, &VectorSelector, Option<std::time::Duration>)> {
    let PromExpr::Aggregate(aggregate) = unparen(expr) else { return None };
    // Sum and count re-aggregate exactly from the two parts; the others need more than a sum.
    let fold = match aggregate.op.id() {
        token::T_SUM => Fold::Sum,
        token::T_COUNT => Fold::Count,
        _ => return None,
    };
    if aggregate.param.is_some() {
        return None;
    }
    match unparen(&aggregate.expr) {
        PromExpr::VectorSelector(selector) => Some((aggregate, fold, RangeFunction::Instant, selector, None)),
        PromExpr::Call(call) => {
            let function = RangeFunction::from_name(call.func.name)?;
            if matches!(
                function,
                RangeFunction::QuantileOverTime
                    | RangeFunction::PredictLinear
                    | RangeFunction::DoubleExponentialSmoothing
            ) {
                return None;
            }
            let [argument] = call.args.args.as_slice() else { return None };
            let PromExpr::MatrixSelector(matrix) = argument.as_ref() else { return None };
            Some((aggregate, fold, function, &matrix.vs, Some(matrix.range)))
        }
        _ => None,
    }
}

/// A selector's matchers other than the metric name's, as text (matchers compare by it).
fn label_matchers(selector: &VectorSelector) -> Vec<(String, &Matcher)> {
    selector.matchers.matchers.iter().filter(|m| m.name != NAME).map(|m| (m.to_string(), m)).collect()
}

/// The shared sweep `binary` can be, if any.
pub(super) fn shared_sweep(binary: &BinaryExpr) -> Option<SharedSweep<'_>> {
    let op = binary_op(binary.op).ok()?;
    // Arithmetic, one-to-one on all labels: the answer is one projection of both values.
    if op.is_comparison()
        || binary.modifier.as_ref().is_some_and(|m| {
            m.matching.is_some() || !matches!(m.card, VectorMatchCardinality::OneToOne) || m.return_bool
        })
    {
        return None;
    }
    let (left, right) = (folded_side(&binary.lhs)?, folded_side(&binary.rhs)?);
    let same_shape = left.1 == right.1
        && left.2 == right.2
        && left.4 == right.4
        && left.0.modifier == right.0.modifier
        && left.3.name.is_some()
        && left.3.name == right.3.name
        && selector_names(left.3) == Names::One
        && left.3.offset == right.3.offset
        && left.3.at == right.3.at
        && left.3.matchers.or_matchers.is_empty()
        && right.3.matchers.or_matchers.is_empty();
    if !same_shape {
        return None;
    }
    let (l, r) = (label_matchers(left.3), label_matchers(right.3));
    let within = |small: &[(String, &Matcher)], big: &[(String, &Matcher)]| {
        small.iter().all(|(text, _)| big.iter().any(|(other, _)| other == text))
    };
    let (narrow_is_left, narrow, broad) = if l.len() > r.len() && within(&r, &l) {
        (true, &l, &r)
    } else if r.len() > l.len() && within(&l, &r) {
        (false, &r, &l)
    } else {
        return None;
    };
    let extra: Vec<&Matcher> =
        narrow.iter().filter(|(text, _)| !broad.iter().any(|(b, _)| b == text)).map(|(_, m)| *m).collect();
    let (aggregate, fold, function, selector, window) = if narrow_is_left { right } else { left };
    Some(SharedSweep { fold, aggregate, function, selector, window, extra, narrow_is_left })
}

impl Compiler<'_> {
    /// Both sides of `binary` from one sweep (see the module docs); `None` to plan them apart.
    pub(super) async fn shared_sweep(
        &self,
        binary: &BinaryExpr,
        shared: SharedSweep<'_>,
    ) -> Result<Option<Value>, PromError> {
        let window = shared.window.map_or(self.lookback_ms, |range| ms(&range));
        let mut matrix = self.series_samples(shared.selector, window).await?;
        // A label no table holds leaves the narrow side to the planner's own reading of it.
        if shared.extra.iter().any(|m| !matrix.labels.contains(&m.name)) {
            return Ok(None);
        }
        let mut passes: Option<Expr> = None;
        for matcher in &shared.extra {
            let filter = matcher_filter(matcher, &matcher.name, true)?;
            passes = Some(match passes {
                Some(before) => before.and(filter),
                None => filter,
            });
        }
        let Some(passes) = passes else { return Ok(None) };
        let mark = when(passes, lit("1")).end()?;
        for chunk in &mut matrix.chunks {
            chunk.frame = chunk.frame.clone().with_column(MARK, mark.clone())?;
            if let Some(lead_in) = &chunk.lead_in {
                chunk.lead_in = Some(lead_in.clone().with_column(MARK, mark.clone())?);
            }
        }
        matrix.labels.push(MARK.to_string());
        matrix.labels.sort();
        let keep_name = shared.function.keeps_metric_name() || shared.function == RangeFunction::Instant;
        let labels: Vec<String> = matrix
            .labels
            .iter()
            .filter(|l| *l != MARK && (keep_name || *l != NAME) && kept_in_group(&shared.aggregate.modifier, l))
            .cloned()
            .collect();
        let mut group = labels.clone();
        group.push(MARK.to_string());
        let swept = self.sweep(matrix, shared.function, window, [0.0; 2], group, Some(shared.fold))?;
        let mut keys: Vec<Expr> = labels.iter().map(ident).collect();
        keys.push(ident(TS));
        let narrow = sum(ident(VALUE)).filter(ident(MARK).is_not_null()).build()?.alias(NARROW);
        let broad = sum(ident(VALUE)).alias(BROAD);
        let (l, r) = if shared.narrow_is_left { (NARROW, BROAD) } else { (BROAD, NARROW) };
        let mut projection: Vec<Expr> = labels.iter().map(ident).collect();
        projection.push(ident(TS));
        projection.push(BinaryUdf::new(binary_op(binary.op)?).call(vec![ident(l), ident(r)]).alias(VALUE));
        let frame = swept
            .frame
            .aggregate(keys, vec![narrow, broad])?
            // A group with no narrow part at a step has no sample on that side: no answer.
            .filter(ident(NARROW).is_not_null())?
            .select(projection)?;
        metrics::counter!("vigil_query_shared_sweeps_total").increment(1);
        Ok(Some(Value::Vector(VectorPlan::of(frame, labels))))
    }
}
