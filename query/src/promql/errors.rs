//! PromQL errors, in the kinds of the Prometheus HTTP API, and parsing with positions.

use lrpar::{Lexeme, Lexer};
use promql_parser::parser::Expr;

#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The query is wrong (`errorType: bad_data`, 400).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed (`errorType: execution`, 422).
    #[error("{0}")]
    Execution(String),
    #[error("query timed out in expression evaluation after {0:?}")]
    Timeout(std::time::Duration),
    #[error("query needs more memory than allowed: {0}")]
    ResourcesExhausted(String),
    /// Stored data could not be read (a damaged or missing segment).
    #[error("stored data could not be read: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl PromError {
    /// The Prometheus API's `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            PromError::BadData(_) => "bad_data",
            PromError::Execution(_) | PromError::ResourcesExhausted(_) => "execution",
            PromError::Timeout(_) => "timeout",
            PromError::Internal(_) | PromError::Storage(_) => "internal",
        }
    }
}

impl From<crate::QueryError> for PromError {
    fn from(error: crate::QueryError) -> Self {
        use crate::QueryError as Q;
        match error {
            Q::Invalid { .. } | Q::NotAllowed(_) | Q::Shape(_) => PromError::BadData(error.to_string()),
            Q::ResultTooLarge { .. } => PromError::ResourcesExhausted(error.to_string()),
            Q::Timeout(limit) => PromError::Timeout(limit),
            Q::ResourcesExhausted(message) => PromError::ResourcesExhausted(message),
            Q::Execution(message) => PromError::Execution(message),
            Q::Storage(message) => PromError::Storage(message),
            Q::Internal(message) => PromError::Internal(message),
        }
    }
}

impl From<datafusion::error::DataFusionError> for PromError {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        let message = error.strip_backtrace();
        match error.find_root() {
            datafusion::error::DataFusionError::ResourcesExhausted(_) => PromError::ResourcesExhausted(message),
            datafusion::error::DataFusionError::Execution(_) | datafusion::error::DataFusionError::ArrowError(..) => {
                PromError::Execution(message)
            }
            _ if crate::engine::is_read_failure(&error) => PromError::Storage(message),
            _ => PromError::Internal(message),
        }
    }
}

/// Which characters of a query are inside its string literals (`"..."`, `'...'`, `` `...` ``).
#[derive(Default)]
struct Literals {
    quote: Option<char>,
    escaped: bool,
}

impl Literals {
    /// Takes the next character: whether it belongs to a string literal, quotes included.
    fn inside(&mut self, c: char) -> bool {
        match self.quote {
            Some(q) => {
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' && q != '`' {
                    self.escaped = true;
                } else if c == q {
                    self.quote = None;
                }
                true
            }
            None if matches!(c, '"' | '\'' | '`') => {
                self.quote = Some(c);
                true
            }
            None => false,
        }
    }
}

/// `holt_winters(` outside string literals renamed to `double_exponential_smoothing(`: the
/// parser knows the function by its later name only, and Prometheus 2.42 by this one.
fn with_current_names(text: &str) -> std::borrow::Cow<'_, str> {
    const OLD: &str = "holt_winters";
    const NEW: &str = "double_exponential_smoothing";
    if !text.contains(OLD) {
        return std::borrow::Cow::Borrowed(text);
    }
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = String::with_capacity(text.len() + 16);
    let mut literals = Literals::default();
    let mut rest = text;
    let mut previous: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        if !literals.inside(c)
            && rest.starts_with(OLD)
            && !previous.is_some_and(is_word)
            && !rest[OLD.len()..].starts_with(is_word)
            && rest[OLD.len()..].trim_start().starts_with('(')
        {
            out.push_str(NEW);
            rest = &rest[OLD.len()..];
            previous = Some('s');
            continue;
        }
        out.push(c);
        previous = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    std::borrow::Cow::Owned(out)
}

/// Parses a query; errors read `line:column: parse error: message`, as Prometheus writes them.
pub fn parse(text: &str) -> Result<Expr, PromError> {
    let renamed = with_current_names(text);
    let text = renamed.as_ref();
    promql_parser::parser::parse(text).map_err(|message| {
        let offset = error_offset(text, &message);
        let (line, column) = line_column(text, offset);
        PromError::BadData(format!("{line}:{column}: parse error: {message}"))
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Byte spans of the tokens of `text`, when it lexes.
fn token_spans(text: &str) -> Option<Vec<(usize, usize)>> {
    let lexer = promql_parser::parser::lexer(text).ok()?;
    Some(lexer.iter().filter_map(|l| l.ok()).map(|l| (l.span().start(), l.span().end())).collect())
}

/// Most tokens whose prefixes are re-parsed to place an error.
const MAX_TOKENS_TO_LOCATE: usize = 512;

/// Where the parser's (position-less) error is: an unclosed bracket's opener, a stray
/// closer, a named function or regex, else the token after the longest valid prefix.
fn error_offset(text: &str, message: &str) -> usize {
    let Some(spans) = token_spans(text) else { return lexer_error_offset(text) };
    let mut open: Vec<usize> = Vec::new();
    for &(start, end) in &spans {
        match &text[start..end] {
            "(" | "{" | "[" => open.push(start),
            ")" | "}" | "]" if open.pop().is_none() => {
                return start;
            }
            _ => {}
        }
    }
    if message.contains("unclosed")
        && let Some(&start) = open.last()
    {
        return start;
    }
    for quoted in [message.split('\'').nth(1), message.strip_prefix("illegal regex for ")] {
        if let Some(fragment) = quoted.filter(|f| !f.is_empty())
            && let Some(at) = text.find(fragment)
        {
            return at;
        }
    }
    // Re-parsing every prefix costs O(tokens²): long queries get the end as position.
    if spans.len() > MAX_TOKENS_TO_LOCATE {
        return text.len();
    }
    let mut valid_until = None;
    for (index, &(_, end)) in spans.iter().enumerate() {
        if promql_parser::parser::parse(&text[..end]).is_ok() {
            valid_until = Some(index);
        }
    }
    match valid_until {
        Some(index) if index + 1 < spans.len() => spans[index + 1].0,
        Some(_) => text.len(),
        None => spans.first().map_or(0, |s| s.0),
    }
}

/// The lexer failed: an unclosed bracket (outside string literals), or else the first
/// character that is no part of a PromQL token.
fn lexer_error_offset(text: &str) -> usize {
    let mut open: Vec<usize> = Vec::new();
    let mut literals = Literals::default();
    for (at, c) in text.char_indices() {
        if literals.inside(c) {
            continue;
        }
        match c {
            '(' | '{' | '[' => open.push(at),
            ')' | '}' | ']' if open.pop().is_none() => {
                return at;
            }
            '#' => break,
            _ => {}
        }
    }
    if let Some(&at) = open.last() {
        return at;
    }
    first_unlexable(text)
}

fn first_unlexable(text: &str) -> usize {
    // Same quadratic cost as above: bounded.
    if text.len() > 16 * MAX_TOKENS_TO_LOCATE {
        return 0;
    }
    (1..=text.len())
        .filter(|&end| text.is_char_boundary(end))
        .find(|&end| promql_parser::parser::lexer(&text[..end]).is_err())
        .map_or(0, |end| text[..end].char_indices().last().map_or(0, |(i, _)| i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holt_winters_is_read_by_its_later_name_outside_strings() {
        assert_eq!(
            with_current_names(
                r#"holt_winters (x[5m], 0.5, 0.1) + on() label_replace(y, "a", "holt_winters(", "", "")"#
            ),
            r#"double_exponential_smoothing (x[5m], 0.5, 0.1) + on() label_replace(y, "a", "holt_winters(", "", "")"#
        );
        assert_eq!(with_current_names("my_holt_winters(x)"), "my_holt_winters(x)");
        assert_eq!(with_current_names("holt_winters_total"), "holt_winters_total");
        assert!(parse("holt_winters(x[5m], 0.5, 0.5)").is_ok());
    }

    fn position(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parse_errors_say_where() {
        assert_eq!(position("sum(rate(x[5m])) by (job"), "1:21: parse error: unclosed left parenthesis");
        assert!(position("1 +").starts_with("1:3: parse error"), "{}", position("1 +"));
        assert!(position("foo @ bar").starts_with("1:5: "), "{}", position("foo @ bar"));
        assert!(position("rate(foo)").starts_with("1:1: "), "{}", position("rate(foo)"));
        assert!(position("up{a=~\"(\"}").starts_with("1:8: "), "{}", position("up{a=~\"(\"}"));
        assert!(position("up)").starts_with("1:3: "), "{}", position("up)"));
        assert!(position("up\n  + ` ").contains("parse error"));
    }
}
