//! YAML for SLO files: multi-document splitting that keeps line numbers, errors at
//! `file:line:col` with a hint (the closest field for a typo), and helpers for values read
//! with their positions.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_saphyr::Spanned;

/// An error in a definition file, with where it is and what would fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// One YAML document of a file and the line it starts on (0-based offset).
pub struct Document<'a> {
    pub text: &'a str,
    pub line_offset: u64,
}

/// Splits a file at `---` lines, keeping each document's first line.
pub fn documents(text: &str) -> Vec<Document<'_>> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0u64;
    let mut offset = 0usize;
    for (line_number, line) in (0u64..).zip(text.split_inclusive('\n')) {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "---" || bare.starts_with("--- ") {
            out.push(Document { text: &text[start..offset], line_offset: start_line });
            start = offset + line.len();
            start_line = line_number + 1;
        }
        offset += line.len();
    }
    out.push(Document { text: &text[start..], line_offset: start_line });
    out.retain(|d| d.text.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    out
}

/// Positions of one document within its file.
#[derive(Clone, Copy)]
pub struct Place<'a> {
    pub file: &'a str,
    pub line_offset: u64,
}

impl<'a> Place<'a> {
    pub fn error(
        &self,
        location: serde_saphyr::Location,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> LoadError {
        LoadError {
            file: self.file.to_string(),
            line: location.line().max(1) + self.line_offset,
            column: location.column().max(1),
            message: message.into(),
            hint,
        }
    }

    pub fn at<T>(&self, value: &Spanned<T>, message: impl Into<String>, hint: Option<String>) -> LoadError {
        self.error(value.referenced, message, hint)
    }

    /// The document's first line, for errors about a whole document.
    pub fn start(&self, message: impl Into<String>, hint: Option<String>) -> LoadError {
        LoadError { file: self.file.to_string(), line: self.line_offset + 1, column: 1, message: message.into(), hint }
    }

    pub fn parse<T: DeserializeOwned>(&self, text: &str) -> Result<T, LoadError> {
        serde_saphyr::from_str(text).map_err(|e| self.serde_error(&e))
    }

    fn serde_error(&self, error: &serde_saphyr::Error) -> LoadError {
        let (line, column) = error.location().map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
        let text = error.without_snippet().to_string();
        let suffix = format!(" at line {line}, column {column}");
        let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
        let hint = hint_for(&message);
        LoadError { file: self.file.to_string(), line: line + self.line_offset, column, message, hint }
    }
}

/// The candidate nearest to `given` (case-insensitive first, then exact), if any is within
/// `max` edits.
pub fn closest<'a, S: AsRef<str> + 'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a S>,
    max: usize,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            let c = c.as_ref();
            (
                (
                    strsim::damerau_levenshtein(&given.to_lowercase(), &c.to_lowercase()),
                    strsim::damerau_levenshtein(given, c),
                ),
                c,
            )
        })
        .min_by_key(|(distance, _)| *distance)
        .filter(|((distance, _), _)| *distance <= max)
        .map(|(_, c)| c)
}

/// "did you mean" for unknown fields and variants, "add it" for missing fields.
fn hint_for(message: &str) -> Option<String> {
    let quoted = |s: &str| s.trim().trim_matches('`').to_string();
    if let Some(rest) = message.strip_prefix("unknown field ").or_else(|| message.strip_prefix("unknown variant ")) {
        let (given, expected) = rest.split_once(", expected ")?;
        let given = quoted(given);
        let candidates: Vec<String> =
            expected.trim_start_matches("one of ").split(',').map(quoted).filter(|c| !c.is_empty()).collect();
        return Some(match closest(&given, &candidates, 3) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("expected one of {}", candidates.join(", ")),
        });
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return Some(format!("add {field}"));
    }
    if message.starts_with("invalid floating point")
        || message.starts_with("invalid integer")
        || message.starts_with("invalid u")
        || message.starts_with("invalid i")
    {
        return Some("write a number here, e.g. 99.9".into());
    }
    None
}

/// A Prometheus duration (`30s`, `5m`, `28d`, `1w`) read with its position.
pub fn duration(place: &Place, value: &Spanned<String>) -> Result<Duration, LoadError> {
    promql_parser::util::duration::parse_duration(value.value.trim()).map_err(|_| {
        place.at(
            value,
            format!("invalid duration {:?}", value.value),
            Some("use a number and a unit (ms, s, m, h, d, w, y), e.g. 30d or 5m".into()),
        )
    })
}

/// A PromQL series selector (no range, no function).
pub fn selector(place: &Place, value: &Spanned<String>) -> Result<String, LoadError> {
    match promql_parser::parser::parse(&value.value) {
        Ok(promql_parser::parser::Expr::VectorSelector(_)) => Ok(value.value.clone()),
        Ok(_) => Err(place.at(
            value,
            format!("{:?} is not a series selector", value.value),
            Some("write a metric and label matchers, e.g. http_requests_total{job=\"api\", code=~\"5..\"}".into()),
        )),
        Err(e) => Err(place.at(value, format!("invalid series selector {:?}: {e}", value.value), None)),
    }
}

/// A PromQL expression (`{{.window}}` allowed) that can be an SLI: evaluated at every
/// minute end to an instant vector.
pub fn promql(place: &Place, value: &Spanned<String>) -> Result<String, LoadError> {
    let probe = super::model::with_minute_window(&value.value);
    let expr = promql_parser::parser::parse(&probe)
        .map_err(|e| place.at(value, format!("invalid PromQL {:?}: {e}", value.value), None))?;
    match unusable_as_sli(&expr) {
        Some((problem, hint)) => {
            Err(place.at(value, format!("{:?} cannot be an SLI: {problem}", value.value), Some(hint.into())))
        }
        None => Ok(value.value.clone()),
    }
}

/// What stops an expression from giving per-minute events, when it can be known without data.
fn unusable_as_sli(expr: &promql_parser::parser::Expr) -> Option<(String, &'static str)> {
    use promql_parser::parser::Expr;
    use promql_parser::parser::value::ValueType;
    use promql_parser::util::{ExprVisitor, walk_expr};
    match expr.value_type() {
        ValueType::Matrix => {
            return Some((
                "it is a range vector".into(),
                "take rate(), increase() or another function of the range, e.g. sum(rate(x[5m]))",
            ));
        }
        ValueType::String => return Some(("it is a string".into(), "write an expression giving a vector")),
        _ => {}
    }
    /// A pinned evaluation time: every minute would read the same point.
    struct Pinned(bool);
    impl ExprVisitor for Pinned {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
            let at = match expr {
                Expr::VectorSelector(selector) => selector.at.is_some(),
                Expr::MatrixSelector(matrix) => matrix.vs.at.is_some(),
                Expr::Subquery(subquery) => subquery.at.is_some(),
                _ => false,
            };
            self.0 |= at;
            Ok(!self.0)
        }
    }
    let mut pinned = Pinned(false);
    let _ = walk_expr(&mut pinned, expr);
    pinned.0.then(|| {
        (
            "an `@` modifier pins it to one time, while an SLI is evaluated at every minute".into(),
            "remove the `@` modifier",
        )
    })
}

/// The first of `labels` that an expression's outermost aggregations drop, if any: a
/// grouped SLO needs its grouping labels in the query's result.
pub fn dropped_label<'a>(expr: &promql_parser::parser::Expr, labels: &'a [String]) -> Option<&'a String> {
    use promql_parser::parser::{Expr, LabelModifier};
    match expr {
        Expr::Paren(paren) => dropped_label(&paren.expr, labels),
        Expr::Unary(unary) => dropped_label(&unary.expr, labels),
        Expr::Binary(binary) => dropped_label(&binary.lhs, labels).or_else(|| dropped_label(&binary.rhs, labels)),
        Expr::Aggregate(aggregate) => match &aggregate.modifier {
            Some(LabelModifier::Include(by)) => labels.iter().find(|l| !by.labels.contains(l)),
            Some(LabelModifier::Exclude(without)) => labels.iter().find(|l| without.labels.contains(l)),
            None => labels.first(),
        },
        _ => None,
    }
}

/// Checks that a grouped SLO's PromQL keeps its grouping labels.
pub fn promql_keeps(place: &Place, value: &Spanned<String>, group_by: &[String]) -> Result<(), LoadError> {
    let probe = super::model::with_minute_window(&value.value);
    let Ok(expr) = promql_parser::parser::parse(&probe) else { return Ok(()) };
    match dropped_label(&expr, group_by) {
        Some(label) => Err(place.at(
            value,
            format!("the query's aggregation drops {label:?}, which the SLO is grouped by: every group would read the same series"),
            Some(format!("aggregate by ({}) or leave the label out of group_by", group_by.join(", "))),
        )),
        None => Ok(()),
    }
}

/// A SQL query.
pub fn sql(place: &Place, value: &Spanned<String>) -> Result<String, LoadError> {
    datafusion::sql::parser::DFParser::parse_sql(&value.value).map(|_| value.value.clone()).map_err(|e| {
        place.at(value, format!("invalid SQL: {e}"), Some("one query returning a timestamp column per event".into()))
    })
}

/// An objective in percent, strictly between 0 and 100, as a fraction.
pub fn percent(place: &Place, value: &Spanned<f64>) -> Result<f64, LoadError> {
    if value.value > 0.0 && value.value < 100.0 {
        // 99.9 / 100 is 0.9990000000000001 in binary; keep the number that was written.
        Ok((value.value / 100.0 * 1e12).round() / 1e12)
    } else {
        Err(place.at(
            value,
            format!("objective {} is out of range", value.value),
            Some("a percentage strictly between 0 and 100, e.g. 99.9".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_first_line() {
        let text = "# comment\na: 1\n---\nb: 2\n---\n# only a comment\n---\nc: 3\n";
        let docs = documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!((docs[0].line_offset, docs[1].line_offset, docs[2].line_offset), (0, 3, 7));
        assert_eq!(docs[2].text, "c: 3\n");
    }

    #[test]
    fn typos_get_the_closest_field() {
        assert_eq!(
            hint_for("unknown field `objectiv`, expected one of `description`, `objective`, `window`").as_deref(),
            Some("did you mean `objective`?")
        );
        assert_eq!(
            hint_for("unknown variant `hourly`, expected one of `month`, `week`").as_deref(),
            Some("expected one of month, week")
        );
        assert_eq!(hint_for("missing field `total`").as_deref(), Some("add `total`"));
    }
}
