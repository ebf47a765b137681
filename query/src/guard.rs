//! What a query must pass before DataFusion plans it: a bounded length and a bounded nesting
//! depth, for SQL and PromQL alike.
//!
//! Parsers, planners and evaluators walk expression trees recursively, so a query nested a
//! few thousand levels deep (`1+1+…`, `((((…))))`) would overflow a stack and abort the
//! process. The text is parsed and measured on a thread of its own whose stack holds any
//! tree a query of `max_length` bytes can make (a tree too deep is dropped there as well);
//! only a query at most `max_depth` deep goes on, and for those the ordinary stacks suffice.

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Query, Visit, Visitor};
use promql_parser::parser::Expr as PromExpr;

/// Stack of the thread that parses and measures a query: reserved, not touched, unless a
/// query is deep. A query of `max_length` bytes makes at most one tree level per two bytes,
/// and dropping a level takes well under a hundred bytes of stack.
const PARSE_STACK_BYTES: usize = 256 << 20;

/// Bounds on a query's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryShape {
    /// Longest query text, bytes.
    pub max_length: usize,
    /// Deepest expression nesting: operators, calls, parentheses, subqueries.
    pub max_depth: usize,
}

impl Default for QueryShape {
    fn default() -> Self {
        QueryShape { max_length: 256 * 1024, max_depth: 128 }
    }
}

/// Why a query's shape was refused; the message names the bound and its setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("the query is {length} bytes long, above the limit of {limit} (query.max_length)")]
    TooLong { length: usize, limit: usize },
    #[error("the query nests deeper than {limit} levels (query.max_depth)")]
    TooDeep { limit: usize },
    #[error("the query has more than {limit} operators (8 × query.max_depth)")]
    TooManyOperators { limit: usize },
    #[error("the query could not be checked: {0}")]
    Internal(String),
}

impl QueryShape {
    fn check_length(&self, text: &str) -> Result<(), ShapeError> {
        if text.len() > self.max_length {
            return Err(ShapeError::TooLong { length: text.len(), limit: self.max_length });
        }
        Ok(())
    }

    /// Checks SQL text. A statement that does not parse passes: DataFusion parses it again
    /// and reports the error with its position.
    pub async fn check_sql(&self, text: &str) -> Result<(), ShapeError> {
        self.check_length(text)?;
        let (text, limit) = (text.to_string(), self.max_depth);
        on_parse_thread(move || {
            let Ok(statements) = DFParserBuilder::new(text.as_str()).build().and_then(|mut p| p.parse_statements())
            else {
                return Ok(());
            };
            let mut meter = DepthMeter { depth: 0, limit };
            for statement in &statements {
                if sql_statement_too_deep(statement, &mut meter) {
                    return Err(ShapeError::TooDeep { limit });
                }
            }
            Ok(())
        })
        .await?
    }

    /// Most operators a query may hold: promql-parser types a chain of them in time
    /// quadratic in its length, so the count is bounded before it parses.
    pub fn max_operators(&self) -> usize {
        self.max_depth.saturating_mul(8)
    }

    /// Parses PromQL text, refusing trees deeper than `max_depth`.
    pub async fn parse_promql(&self, text: &str) -> Result<Result<PromExpr, crate::promql::PromError>, ShapeError> {
        self.check_length(text)?;
        promql_prescan(text, self.max_depth, self.max_operators())?;
        let (text, limit) = (text.to_string(), self.max_depth);
        on_parse_thread(move || {
            let expr = match crate::promql::parse_text(&text) {
                Ok(expr) => expr,
                Err(error) => return Ok(Err(error)),
            };
            if promql_depth(&expr) > limit {
                return Err(ShapeError::TooDeep { limit });
            }
            Ok(Ok(expr))
        })
        .await?
    }
}

/// Bracket nesting and operators, counted on the characters before anything is parsed
/// (strings and comments skipped; label matchers inside `{}` are no operators). It counts
/// generously (a `-` in `1e-3` counts), never less than the parser would see, and holds for
/// text the lexer refuses too: promql-parser builds and types a tree even for unbalanced
/// input, in time quadratic in its depth.
fn promql_prescan(text: &str, max_depth: usize, max_operators: usize) -> Result<(), ShapeError> {
    const WORD_OPERATORS: [&str; 4] = ["and", "or", "unless", "atan2"];
    let bytes = text.as_bytes();
    let (mut depth, mut braces, mut operators) = (0usize, 0usize, 0usize);
    let (mut quote, mut escaped, mut comment) = (None::<u8>, false, false);
    let mut word_start: Option<usize> = None;
    for (at, &byte) in bytes.iter().enumerate() {
        if comment {
            comment = byte != b'\n';
            continue;
        }
        if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if byte == b'\\' && open != b'`' {
                escaped = true;
            } else if byte == open {
                quote = None;
            }
            continue;
        }
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':' {
            word_start.get_or_insert(at);
            continue;
        }
        if let Some(start) = word_start.take()
            && braces == 0
            && WORD_OPERATORS.iter().any(|op| text[start..at].eq_ignore_ascii_case(op))
        {
            operators += 1;
        }
        match byte {
            b'"' | b'\'' | b'`' => quote = Some(byte),
            b'#' => comment = true,
            b'(' | b'[' | b'{' => {
                depth += 1;
                braces += usize::from(byte == b'{');
                if depth > max_depth {
                    return Err(ShapeError::TooDeep { limit: max_depth });
                }
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if byte == b'}' {
                    braces = braces.saturating_sub(1);
                }
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' if braces == 0 => operators += 1,
            b'=' | b'!' if braces == 0 && bytes.get(at + 1) == Some(&b'=') => operators += 1,
            _ => {}
        }
        if operators > max_operators {
            return Err(ShapeError::TooManyOperators { limit: max_operators });
        }
    }
    if let Some(start) = word_start
        && braces == 0
        && WORD_OPERATORS.iter().any(|op| text[start..].eq_ignore_ascii_case(op))
    {
        operators += 1;
    }
    if operators > max_operators {
        return Err(ShapeError::TooManyOperators { limit: max_operators });
    }
    Ok(())
}

/// Runs `work` on a new thread with a stack for deep trees, without blocking the runtime.
async fn on_parse_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ShapeError> {
    let (send, receive) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("vigil-query-parse".into())
        .stack_size(PARSE_STACK_BYTES)
        .spawn(move || {
            let _ = send.send(work());
        })
        .map_err(|e| ShapeError::Internal(e.to_string()))?;
    receive.await.map_err(|_| ShapeError::Internal("the parse thread stopped".into()))
}

/// Counts the nesting of expressions and queries; stops as soon as it passes the limit, so
/// its own recursion stays within it.
struct DepthMeter {
    depth: usize,
    limit: usize,
}

impl DepthMeter {
    fn enter(&mut self) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth > self.limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    }

    fn leave(&mut self) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

impl Visitor for DepthMeter {
    type Break = ();

    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.leave()
    }

    fn pre_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<()> {
        self.leave()
    }
}

fn sql_statement_too_deep(statement: &DfStatement, meter: &mut DepthMeter) -> bool {
    match statement {
        DfStatement::Statement(statement) => {
            meter.depth = 0;
            statement.visit(meter).is_break()
        }
        DfStatement::Explain(explain) => sql_statement_too_deep(&explain.statement, meter),
        // Not queries: the read-only API refuses them anyway.
        _ => false,
    }
}

/// Depth of a PromQL tree, walked without recursion.
pub fn promql_depth(expr: &PromExpr) -> usize {
    let mut deepest = 0;
    let mut pending: Vec<(&PromExpr, usize)> = vec![(expr, 1)];
    while let Some((expr, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        let below = depth + 1;
        match expr {
            PromExpr::Aggregate(aggregate) => {
                pending.push((&aggregate.expr, below));
                if let Some(param) = &aggregate.param {
                    pending.push((param, below));
                }
            }
            PromExpr::Unary(unary) => pending.push((&unary.expr, below)),
            PromExpr::Binary(binary) => {
                pending.push((&binary.lhs, below));
                pending.push((&binary.rhs, below));
            }
            PromExpr::Paren(paren) => pending.push((&paren.expr, below)),
            PromExpr::Subquery(subquery) => pending.push((&subquery.expr, below)),
            PromExpr::Call(call) => pending.extend(call.args.args.iter().map(|arg| (arg.as_ref(), below))),
            PromExpr::NumberLiteral(_)
            | PromExpr::StringLiteral(_)
            | PromExpr::VectorSelector(_)
            | PromExpr::MatrixSelector(_)
            | PromExpr::Extension(_) => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(term: &str, terms: usize) -> String {
        vec![term; terms].join("+")
    }

    fn nested(depth: usize, inner: &str) -> String {
        format!("{}{inner}{}", "(".repeat(depth), ")".repeat(depth))
    }

    #[tokio::test]
    async fn promql_depth_is_bounded_on_both_sides_of_the_limit() {
        let shape = QueryShape { max_length: 1 << 20, max_depth: 50 };
        // `a+b` is two levels; n terms make n levels.
        assert!(shape.parse_promql(&chain("up", 50)).await.unwrap().is_ok());
        assert_eq!(shape.parse_promql(&chain("up", 51)).await.unwrap_err(), ShapeError::TooDeep { limit: 50 });
        assert!(shape.parse_promql(&nested(48, "up")).await.unwrap().is_ok());
        assert!(matches!(shape.parse_promql(&nested(400, "up")).await, Err(ShapeError::TooDeep { .. })));
        // Far past the limit: refused before parsing, not a crash nor minutes of parsing.
        assert_eq!(
            shape.parse_promql(&chain("1", 100_000)).await.unwrap_err(),
            ShapeError::TooManyOperators { limit: 400 }
        );
        assert!(matches!(shape.parse_promql(&chain("canary", 20_000)).await, Err(ShapeError::TooManyOperators { .. })));
        assert!(matches!(shape.parse_promql(&"(".repeat(100_000)).await, Err(ShapeError::TooDeep { .. })));
        assert!(matches!(
            shape.parse_promql(&format!("{} (", chain("1", 5_000))).await,
            Err(ShapeError::TooManyOperators { .. })
        ));
        // Brackets and operators inside strings, comments and matchers do not count.
        let quoted = format!("up{{job=\"{}\", a!=\"-\"}} # {}", "(".repeat(100), "+".repeat(1000));
        assert!(shape.parse_promql(&quoted).await.unwrap().is_ok());
        // Wide and shallow passes: 30 products summed is 59 operators, 32 levels.
        let wide = (0..30).map(|i| format!("(a{i} * b{i} / c{i})")).collect::<Vec<_>>().join(" + ");
        assert!(shape.parse_promql(&wide).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn sql_depth_is_bounded_on_both_sides_of_the_limit() {
        let shape = QueryShape { max_length: 1 << 20, max_depth: 40 };
        // SELECT is a query level; each `+` one expression level.
        assert!(shape.check_sql(&format!("SELECT {}", chain("1", 39))).await.is_ok());
        assert_eq!(
            shape.check_sql(&format!("SELECT {}", chain("1", 40))).await,
            Err(ShapeError::TooDeep { limit: 40 })
        );
        assert!(matches!(
            shape.check_sql(&format!("SELECT {}", chain("1", 200_000))).await,
            Err(ShapeError::TooDeep { .. })
        ));
        assert!(shape.check_sql("SELEC nonsense").await.is_ok(), "parse errors are DataFusion's to report");
    }

    #[tokio::test]
    async fn length_is_bounded() {
        let shape = QueryShape { max_length: 10, max_depth: 10 };
        assert!(shape.check_sql("SELECT 1").await.is_ok());
        assert_eq!(shape.check_sql("SELECT 1234").await, Err(ShapeError::TooLong { length: 11, limit: 10 }));
        assert!(matches!(shape.parse_promql("up{job=\"aaaaa\"}").await, Err(ShapeError::TooLong { .. })));
    }
}
