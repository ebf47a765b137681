//! Where a query can make two series alike, and the check that refuses it.
//!
//! Prometheus evaluates every function and operator step by step and fails when one step's
//! output holds two samples of one label set ("vector cannot contain metrics with the same
//! labelset"), e.g. `rate({job="api"}[5m])` over two metrics that differ only by name. The
//! answer's own series are checked when the result is shaped ([`super::result`]); an inner
//! expression is checked here, and only where the syntax says a clash is possible — dropping
//! the metric name of a vector that may hold several names, or `label_replace`/`label_join`
//! — so the common query pays nothing.

use datafusion::functions_aggregate::count::count_udaf;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{ExprFunctionExt, WindowFunctionDefinition};
use datafusion::prelude::{Expr, ident, lit};
use promql_parser::parser::token;
use promql_parser::parser::{BinaryExpr, Expr as PromExpr, LabelModifier, VectorMatchCardinality, VectorSelector};

use super::PromError;
use super::compile::{NAME, TS, VALUE, VectorPlan};
use super::kernels::RangeFunction;
use super::udf::{LabelsetCheckUdf, MathFunction};

/// How many metric names the series of an expression's value may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Names {
    /// No `__name__`: a scalar, or a vector whose name was dropped.
    None,
    /// One name at most (a selector naming its metric).
    One,
    /// Possibly several (a selector without a metric name, `or` of two vectors).
    Many,
}

/// The metric name a selector fixes, by name or by an `__name__="..."` matcher.
pub(crate) fn selector_names(selector: &VectorSelector) -> Names {
    if super::metric_name(selector).is_some() { Names::One } else { Names::Many }
}

/// How many metric names `expr`'s series may carry.
pub(crate) fn names(expr: &PromExpr) -> Names {
    match expr {
        PromExpr::NumberLiteral(_) | PromExpr::StringLiteral(_) | PromExpr::Extension(_) => Names::None,
        PromExpr::Paren(paren) => names(&paren.expr),
        PromExpr::Subquery(subquery) => names(&subquery.expr),
        PromExpr::VectorSelector(selector) => selector_names(selector),
        PromExpr::MatrixSelector(selector) => selector_names(&selector.vs),
        // `-v` drops the name.
        PromExpr::Unary(_) => Names::None,
        PromExpr::Aggregate(aggregate) => match aggregate.op.id() {
            token::T_TOPK | token::T_BOTTOMK => names(&aggregate.expr),
            _ => match &aggregate.modifier {
                Some(LabelModifier::Include(by)) if by.labels.iter().any(|l| l == NAME) => names(&aggregate.expr),
                _ => Names::None,
            },
        },
        PromExpr::Binary(binary) => binary_names(binary),
        PromExpr::Call(call) => {
            let first = call.args.args.first().map_or(Names::None, |arg| names(arg));
            match call.func.name {
                "sort" | "sort_desc" => first,
                "label_replace" | "label_join" => {
                    let destination = call.args.args.get(1).map(|arg| arg.as_ref());
                    match destination {
                        Some(PromExpr::StringLiteral(d)) if d.val == NAME => Names::Many,
                        _ => first,
                    }
                }
                name => match RangeFunction::from_name(name) {
                    Some(function) if function.keeps_metric_name() => first,
                    _ => Names::None,
                },
            }
        }
    }
}

fn binary_names(binary: &BinaryExpr) -> Names {
    let (lhs, rhs) = (names(&binary.lhs), names(&binary.rhs));
    let modifier = binary.modifier.as_ref();
    match binary.op.id() {
        token::T_LAND | token::T_LUNLESS => lhs,
        token::T_LOR if lhs == Names::None && rhs == Names::None => Names::None,
        token::T_LOR => Names::Many,
        _ => {
            let Ok(op) = super::compile::binary_op(binary.op) else { return Names::None };
            let filtering = op.is_comparison() && !modifier.is_some_and(|m| m.return_bool);
            if !(filtering || op.keeps_metric_name()) {
                return Names::None;
            }
            // The vector side (or the "many" side) gives the labels.
            let group_right = modifier.is_some_and(|m| matches!(m.card, VectorMatchCardinality::OneToMany(_)));
            if group_right || lhs == Names::None { rhs } else { lhs }
        }
    }
}

/// Whether `expr`'s value may hold two samples of one label set at one step (its operands
/// being free of them).
pub(crate) fn may_repeat(expr: &PromExpr) -> bool {
    let drops_many = |operand: &PromExpr| names(operand) == Names::Many;
    match expr {
        PromExpr::Paren(paren) => may_repeat(&paren.expr),
        PromExpr::Unary(unary) => drops_many(&unary.expr),
        PromExpr::Binary(binary) => {
            if matches!(binary.op.id(), token::T_LAND | token::T_LOR | token::T_LUNLESS) {
                return false;
            }
            // Matching on some labels: a side with two series of one signature meets the
            // other's series twice (Prometheus's "many-to-many" refusal).
            if binary.modifier.as_ref().is_some_and(|m| m.matching.is_some()) {
                return true;
            }
            // Either side counts: the "one" side repeating its match is a clash too.
            let Ok(op) = super::compile::binary_op(binary.op) else { return false };
            let filtering = op.is_comparison() && !binary.modifier.as_ref().is_some_and(|m| m.return_bool);
            !(filtering || op.keeps_metric_name()) && (drops_many(&binary.lhs) || drops_many(&binary.rhs))
        }
        PromExpr::Call(call) => {
            let Some(first) = call.args.args.first() else { return false };
            match call.func.name {
                "label_replace" | "label_join" => true,
                "sort" | "sort_desc" | "absent" | "absent_over_time" | "scalar" | "vector" => false,
                // Its second argument is the vector; buckets group with their name.
                "histogram_quantile" => call.args.args.get(1).is_some_and(|arg| drops_many(arg)),
                "timestamp" => drops_many(first),
                name => match RangeFunction::from_name(name) {
                    Some(function) => {
                        // The range vector is the last argument but for these.
                        let matrix = match function {
                            RangeFunction::QuantileOverTime => call.args.args.last(),
                            _ => Some(first),
                        };
                        !function.keeps_metric_name() && matrix.is_some_and(|m| drops_many(m))
                    }
                    None => MathFunction::from_name(name).is_some() && drops_many(first),
                },
            }
        }
        _ => false,
    }
}

/// `vector` refused at execution when one step holds two samples of one label set.
pub(crate) fn checked(vector: VectorPlan) -> Result<VectorPlan, PromError> {
    let mut partition: Vec<Expr> = vector.labels.iter().map(ident).collect();
    partition.push(ident(TS));
    let count = WindowFunction::new(WindowFunctionDefinition::AggregateUDF(count_udaf()), vec![lit(1i64)]);
    let samples = Expr::from(count).partition_by(partition).build()?.alias("#samples");
    let mut projection: Vec<Expr> = vector.labels.iter().map(ident).collect();
    projection.push(ident(TS));
    projection.push(LabelsetCheckUdf::new().call(vec![ident("#samples"), ident(VALUE)]).alias(VALUE));
    let frame = vector.frame.window(vec![samples])?.select(projection)?;
    Ok(VectorPlan { frame, labels: vector.labels, sweep: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> PromExpr {
        promql_parser::parser::parse(text).expect(text)
    }

    #[test]
    fn clashes_are_possible_only_where_a_name_is_dropped_from_several_or_labels_are_rewritten() {
        for query in [
            "rate({job=\"api\"}[5m])",
            "count_over_time({__name__=~\"node_load.*\"}[1m])",
            "quantile_over_time(0.5, {job=\"api\"}[5m])",
            "abs({job=\"api\"})",
            "-{job=\"api\"}",
            "{job=\"api\"} * 2",
            "2 * ({job=\"api\"})",
            "{job=\"api\"} + on (job) group_left up",
            "up + on (job) group_left {job=\"api\"}",
            "a / on (job) b",
            "a > ignoring (code) b",
            "histogram_quantile(0.9, {__name__=~\".*_bucket\"})",
            "timestamp({job=\"api\"})",
            "label_replace(up, \"job\", \"x\", \"\", \"\")",
            "label_join(up, \"job\", \",\", \"instance\")",
            "rate((a or b)[5m:1m])",
            "abs(topk(1, {job=\"api\"}))",
            "abs(sum by (__name__) ({job=\"api\"}))",
            "abs(last_over_time({job=\"api\"}[5m]))",
            "abs(label_replace(up, \"__name__\", \"x\", \"\", \"\"))",
        ] {
            assert!(may_repeat(&parse(query)), "{query}");
        }
        for query in [
            "rate(http_requests_total[5m])",
            "rate({__name__=\"http_requests_total\", job=\"api\"}[5m])",
            "last_over_time({job=\"api\"}[5m])",
            "abs(up)",
            "{job=\"api\"}",
            "{job=\"api\"} > 2",
            "sum({job=\"api\"})",
            "abs(sum({job=\"api\"}))",
            "abs(rate({job=\"api\"}[5m]))",
            "sort({job=\"api\"})",
            "absent({job=\"api\"})",
            "{job=\"api\"} and up",
            "a / b",
            "a > b",
            "abs(up and {job=\"api\"})",
            "rate((up > 1)[5m:1m])",
            "1 + 2",
        ] {
            assert!(!may_repeat(&parse(query)), "{query}");
        }
    }
}
