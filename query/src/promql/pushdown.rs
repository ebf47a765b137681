//! Label filters from one side of a binary operation pushed into the other, at run time.
//!
//! `a / b` (and every arithmetic or comparison operator, and `and`) keeps only the series of
//! `b` whose matching labels equal some series of `a`'s. Once `a` is computed, its values of
//! those labels become matchers on `b`'s selectors, so `b` reads only the series that can
//! match. An SLO's error ratio, `sum by (job) (rate(x{code=~"5.."}[5m])) / sum by (job)
//! (rate(x[5m]))`, then reads the total of only the jobs that have errors. VictoriaMetrics
//! does the same (its "common label filters" of the first side's result).
//!
//! A matcher is pushed only where it provably keeps the same answer: through selectors,
//! functions that keep their argument's labels, aggregations that keep the label, negation,
//! subqueries and parentheses; anything else (`label_replace`, a nested binary operation,
//! `or`) stops it.

use std::collections::BTreeSet;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::token;
use promql_parser::parser::{Expr as PromExpr, LabelModifier};

/// Most values of one label pushed as one matcher: more make a regex longer than the scan it
/// saves.
const MAX_VALUES: usize = 64;

/// Most bytes of the first side held in memory to read its label values from: the pushdown
/// pays where that side is small (a few series of errors), and beyond this it is planned as
/// before.
pub const MAX_FIRST_BYTES: usize = 32 << 20;

/// Whether the binary operator `op` drops every series of its right side that matches none
/// of its left side's.
pub fn narrows_right(op: token::TokenId) -> bool {
    !matches!(op, token::T_LOR | token::T_LUNLESS)
}

/// The labels a series of the right side must share with a series of the left side, given
/// the left side's labels and the operation's matching.
pub fn matching_labels(left_labels: &[String], matching: Option<&LabelModifier>, name: &str) -> Vec<String> {
    left_labels
        .iter()
        .filter(|l| *l != name)
        .filter(|l| match matching {
            Some(LabelModifier::Include(on)) => on.labels.contains(l),
            Some(LabelModifier::Exclude(ignoring)) => !ignoring.labels.contains(l),
            None => true,
        })
        .cloned()
        .collect()
}

/// One matcher per label of `labels` with at most [`MAX_VALUES`] values in `batches`: the
/// values it takes there (an absent label matches as the empty value, as Prometheus's
/// matchers do).
pub fn matchers_from(batches: &[RecordBatch], labels: &[String]) -> Vec<Matcher> {
    let mut matchers = Vec::new();
    'labels: for label in labels {
        let mut values: BTreeSet<String> = BTreeSet::new();
        for batch in batches {
            let Some(column) = batch.column_by_name(label) else {
                values.insert(String::new());
                continue;
            };
            let Ok(column) = datafusion::arrow::compute::cast(column, &DataType::Utf8) else { continue 'labels };
            let column = column.as_string::<i32>();
            for row in 0..column.len() {
                values.insert(if column.is_valid(row) { column.value(row).to_string() } else { String::new() });
                if values.len() > MAX_VALUES {
                    continue 'labels;
                }
            }
        }
        let pattern = values.iter().map(|v| regex::escape(v)).collect::<Vec<_>>().join("|");
        let Ok(regex) = regex::Regex::new(&format!("^(?:{pattern})$")) else { continue };
        matchers.push(Matcher::new(MatchOp::Re(regex), label, &pattern));
    }
    matchers
}

/// `expr` with `matchers` added to every selector it reads, when that provably selects
/// the same output series minus those the matchers exclude; `None` where it might not.
pub fn with_matchers(expr: &PromExpr, matchers: &[Matcher]) -> Option<PromExpr> {
    let labels: Vec<&str> = matchers.iter().map(|m| m.name.as_str()).collect();
    Some(match expr {
        PromExpr::VectorSelector(vs) => {
            if !vs.matchers.or_matchers.is_empty() {
                return None;
            }
            let mut vs = vs.clone();
            vs.matchers.matchers.extend(matchers.iter().cloned());
            PromExpr::VectorSelector(vs)
        }
        PromExpr::MatrixSelector(ms) => {
            let PromExpr::VectorSelector(vs) = with_matchers(&PromExpr::VectorSelector(ms.vs.clone()), matchers)?
            else {
                return None;
            };
            let mut ms = ms.clone();
            ms.vs = vs;
            PromExpr::MatrixSelector(ms)
        }
        PromExpr::Paren(p) => PromExpr::Paren(with_inner(p, |p| &mut p.expr, matchers)?),
        PromExpr::Unary(u) => PromExpr::Unary(with_inner(u, |u| &mut u.expr, matchers)?),
        PromExpr::Subquery(s) => PromExpr::Subquery(with_inner(s, |s| &mut s.expr, matchers)?),
        PromExpr::Aggregate(a) => {
            // The output keeps a label only when the grouping does; a group is computed from
            // its own series, so dropping other groups' series changes no group.
            let kept = match &a.modifier {
                Some(LabelModifier::Include(by)) => labels.iter().all(|l| by.labels.iter().any(|b| b == l)),
                Some(LabelModifier::Exclude(without)) => labels.iter().all(|l| !without.labels.iter().any(|w| w == l)),
                None => false,
            };
            // count_values writes a label of its own; the others keep their input's.
            if !kept || a.op.id() == token::T_COUNT_VALUES {
                return None;
            }
            PromExpr::Aggregate(with_inner(a, |a| &mut a.expr, matchers)?)
        }
        PromExpr::Call(call) => {
            // histogram_quantile reads every `le` of a group: its output has none to match.
            if !keeps_labels(call.func.name) || (call.func.name == "histogram_quantile" && labels.contains(&"le")) {
                return None;
            }
            let mut call = call.clone();
            let mut pushed = false;
            for arg in call.args.args.iter_mut() {
                if matches!(**arg, PromExpr::NumberLiteral(_) | PromExpr::StringLiteral(_)) {
                    continue;
                }
                **arg = with_matchers(arg, matchers)?;
                pushed = true;
            }
            if !pushed {
                return None;
            }
            PromExpr::Call(call)
        }
        PromExpr::NumberLiteral(_) | PromExpr::StringLiteral(_) | PromExpr::Binary(_) | PromExpr::Extension(_) => {
            return None;
        }
    })
}

/// `node` with its one inner expression (`inner`) given `matchers`.
fn with_inner<T: Clone>(node: &T, inner: impl Fn(&mut T) -> &mut Box<PromExpr>, matchers: &[Matcher]) -> Option<T> {
    let mut node = node.clone();
    let expr = inner(&mut node);
    **expr = with_matchers(expr, matchers)?;
    Some(node)
}

/// Functions whose output series are their one vector argument's series, each keeping its
/// labels (the metric name aside): selecting fewer input series selects fewer output series
/// and changes no other. `histogram_quantile` groups by every label but `le`, which a matcher
/// on its output cannot name.
fn keeps_labels(function: &str) -> bool {
    matches!(
        function,
        "rate"
            | "irate"
            | "increase"
            | "delta"
            | "idelta"
            | "deriv"
            | "predict_linear"
            | "holt_winters"
            | "resets"
            | "changes"
            | "avg_over_time"
            | "min_over_time"
            | "max_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "quantile_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "last_over_time"
            | "present_over_time"
            | "abs"
            | "ceil"
            | "floor"
            | "round"
            | "exp"
            | "ln"
            | "log2"
            | "log10"
            | "sqrt"
            | "sgn"
            | "clamp"
            | "clamp_min"
            | "clamp_max"
            | "timestamp"
            | "histogram_quantile"
            | "sort"
            | "sort_desc"
            | "acos"
            | "acosh"
            | "asin"
            | "asinh"
            | "atan"
            | "atanh"
            | "cos"
            | "cosh"
            | "sin"
            | "sinh"
            | "tan"
            | "tanh"
            | "deg"
            | "rad"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(query: &str) -> Option<String> {
        let expr = promql_parser::parser::parse(query).unwrap();
        let regex = regex::Regex::new("^(?:a|b)$").unwrap();
        let matcher = Matcher::new(MatchOp::Re(regex), "job", "a|b");
        with_matchers(&expr, &[matcher]).map(|e| e.to_string())
    }

    #[test]
    fn matchers_go_where_they_keep_the_answer_and_nowhere_else() {
        assert_eq!(pushed("x").as_deref(), Some(r#"x{job=~"a|b"}"#));
        assert_eq!(
            pushed("sum by (job) (rate(x{code=\"500\"}[5m]))").as_deref(),
            Some(r#"sum by (job) (rate(x{code="500",job=~"a|b"}[5m]))"#)
        );
        assert_eq!(pushed("sum without (code) (x)").as_deref(), Some(r#"sum without (code) (x{job=~"a|b"})"#));
        assert_eq!(pushed("topk by (job) (3, x)").as_deref(), Some(r#"topk by (job) (3, x{job=~"a|b"})"#));
        assert_eq!(pushed("-max_over_time(x[5m:1m])").as_deref(), Some(r#"-max_over_time(x{job=~"a|b"}[5m:1m])"#));
        assert!(pushed("histogram_quantile(0.9, sum by (job, le) (rate(x[5m])))").is_some());
        // Would change or lose the answer.
        for query in [
            "sum(x)",
            "sum by (instance) (x)",
            "sum without (job) (x)",
            "count_values by (job) (\"job\", x)",
            "label_replace(x, \"job\", \"a\", \"\", \"\")",
            "absent(x)",
            "vector(1)",
            "x + y",
            "x{job=\"c\" or job=\"d\"}",
        ] {
            assert_eq!(pushed(query), None, "{query}");
        }
    }

    #[test]
    fn label_values_become_one_anchored_matcher_each() {
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![
            Field::new("job", DataType::Utf8, true),
            Field::new("code", DataType::Utf8, true),
        ]));
        let job = StringArray::from(vec![Some("a.b"), None, Some("a.b")]);
        let code: StringArray = (0..3).map(|i| Some(i.to_string())).collect();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(job), Arc::new(code)]).unwrap();
        let matchers = matchers_from(std::slice::from_ref(&batch), &["job".into(), "code".into(), "missing".into()]);
        let shown: Vec<String> = matchers.iter().map(|m| m.to_string()).collect();
        assert_eq!(shown, [r#"job=~"|a\\.b""#, r#"code=~"0|1|2""#, r#"missing=~"""#]);
        let MatchOp::Re(regex) = &matchers[0].op else { panic!() };
        assert!(regex.is_match("a.b") && regex.is_match("") && !regex.is_match("axb"));
        // Too many values: no matcher for that label.
        let many: StringArray = (0..=MAX_VALUES).map(|i| Some(i.to_string())).collect();
        let schema = Arc::new(Schema::new(vec![Field::new("code", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(many)]).unwrap();
        assert!(matchers_from(&[batch], &["code".into()]).is_empty());
    }
}
