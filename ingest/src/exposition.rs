//! Prometheus text exposition 0.0.4 and OpenMetrics 1.0, parsed strictly: the first bad
//! line fails the whole body with `line N: message`, so nothing is half-stored.
//!
//! Handled: quoted label values holding `,` `=` `}` `#` and the escapes `\\` `\"` `\n`;
//! `:` in metric names; `NaN`, `+Inf`, `-Inf`; optional timestamps (0.0.4: integer
//! milliseconds; OpenMetrics: seconds, fractions allowed); `# HELP` / `# TYPE` / `# UNIT`;
//! `# EOF` (required last in OpenMetrics); exemplars after ` # ` (validated, counted, not
//! stored). `prometheus-parse` was replaced by this lexer because it mis-reads the quoted
//! cases, drops bad lines silently and has no OpenMetrics (see README).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    Text,
    /// `application/openmetrics-text`
    OpenMetrics,
}

impl Format {
    /// From a `Content-Type`; bodies ending in `# EOF` are OpenMetrics whatever the header.
    pub fn detect(content_type: &str, body: &str) -> Format {
        let declared = content_type.to_ascii_lowercase().contains("openmetrics");
        let eof = body.trim_end().rsplit('\n').next().is_some_and(|l| l.trim_end() == "# EOF");
        if declared || eof { Format::OpenMetrics } else { Format::Text }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSample {
    pub name: String,
    /// In the order written; checked for duplicates.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
    /// OpenMetrics `# {labels} value [timestamp]` after the sample.
    pub exemplar: Option<ParsedExemplar>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParsedExemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Option<String>,
    pub help: Option<String>,
    pub unit: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<ParsedSample>,
    pub families: Vec<Family>,
    pub exemplars: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What is wrong with one line of an exposition (its number is in [`ParseError`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("content after # EOF")]
    AfterEof,
    #[error("empty lines are not allowed in OpenMetrics")]
    EmptyLine,
    #[error("OpenMetrics data must end with # EOF")]
    NoEof,
    #[error("invalid metric name {name:?} in # {keyword}")]
    CommentName { name: String, keyword: String },
    #[error("unknown metric type {0:?}")]
    UnknownType(String),
    #[error("metric type {0:?} is OpenMetrics only")]
    OpenMetricsType(String),
    #[error("expected {wanted:?} at column {column}, found {}", .found.map_or("end of line".to_string(), |c| format!("{c:?}")))]
    Expected { wanted: char, column: usize, found: Option<char> },
    #[error("expected a {what} at column {column}{}", .found.map_or(String::new(), |c| format!(", found {c:?}")))]
    ExpectedName { what: &'static str, column: usize, found: Option<char> },
    #[error("unterminated label value")]
    UnterminatedValue,
    #[error("invalid escape \\{escape} in label value at column {column}")]
    InvalidEscape { escape: char, column: usize },
    #[error("duplicate label {0:?}")]
    DuplicateLabel(String),
    #[error("expected ',' or '}}' after a label at column {column}, found {found:?}")]
    ExpectedLabelEnd { column: usize, found: char },
    #[error("unterminated label set")]
    UnterminatedLabelSet,
    #[error("expected a space and a value after {name:?} at column {column}")]
    NoValueAfter { name: String, column: usize },
    #[error("unexpected '#' at column {0} (exemplars are OpenMetrics only)")]
    TextExemplar(usize),
    #[error("expected a space after '#' before an exemplar")]
    ExemplarSpace,
    #[error("expected an exemplar label set at column {0}")]
    ExemplarLabels(usize),
    #[error("expected a value after the exemplar labels")]
    ExemplarValue,
    #[error("unexpected {found:?} at column {column}")]
    Unexpected { found: char, column: usize },
    #[error("missing value")]
    MissingValue,
    #[error("invalid value {0:?}")]
    InvalidValue(String),
    #[error("invalid timestamp {0:?} (integer milliseconds)")]
    MillisecondTimestamp(String),
    #[error("invalid timestamp {0:?} (seconds)")]
    SecondTimestamp(String),
    #[error("timestamp {0:?} is out of range")]
    TimestampRange(String),
}

const TYPES: &[&str] =
    &["counter", "gauge", "histogram", "summary", "untyped", "unknown", "gaugehistogram", "info", "stateset"];

pub fn parse(text: &str, format: Format) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    let mut seen_eof = false;
    for (index, raw) in text.split('\n').enumerate() {
        let number = index + 1;
        let fail = |error: LineError| ParseError { line: number, message: error.to_string() };
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if seen_eof {
            if line.trim().is_empty() && index + 1 == text.split('\n').count() {
                continue;
            }
            return Err(fail(LineError::AfterEof));
        }
        if line.trim().is_empty() {
            if format == Format::OpenMetrics && index + 1 < text.split('\n').count() {
                return Err(fail(LineError::EmptyLine));
            }
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if format == Format::OpenMetrics && comment == " EOF" {
                seen_eof = true;
                continue;
            }
            parse_comment(comment, format, &mut out).map_err(fail)?;
            continue;
        }
        let mut cursor = Cursor { text: line, pos: 0 };
        let sample = cursor.sample(format, &mut out.exemplars).map_err(fail)?;
        out.samples.push(sample);
    }
    if format == Format::OpenMetrics && !seen_eof {
        return Err(ParseError { line: text.split('\n').count(), message: LineError::NoEof.to_string() });
    }
    Ok(out)
}

/// `# HELP name text`, `# TYPE name type`, `# UNIT name unit`; other comments are ignored.
fn parse_comment(comment: &str, format: Format, out: &mut Exposition) -> Result<(), LineError> {
    let Some(rest) = comment.strip_prefix(' ') else { return Ok(()) };
    let (keyword, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
        return Ok(());
    }
    let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
    if !vigil_storage::write::is_valid_metric_name(name) {
        return Err(LineError::CommentName { name: name.to_string(), keyword: keyword.to_string() });
    }
    let index = match out.families.iter().position(|f| f.name == name) {
        Some(index) => index,
        None => {
            out.families.push(Family { name: name.to_string(), ..Family::default() });
            out.families.len() - 1
        }
    };
    let family = &mut out.families[index];
    match keyword {
        "HELP" => family.help = Some(unescape_help(value)),
        "TYPE" => {
            let kind = value.trim();
            if !TYPES.contains(&kind) {
                return Err(LineError::UnknownType(kind.to_string()));
            }
            if format == Format::Text && matches!(kind, "gaugehistogram" | "info" | "stateset" | "unknown") {
                return Err(LineError::OpenMetricsType(kind.to_string()));
            }
            family.kind = Some(kind.to_string());
        }
        _ => family.unit = Some(value.trim().to_string()),
    }
    Ok(())
}

fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn column(&self) -> usize {
        self.text[..self.pos].chars().count() + 1
    }

    fn skip_blanks(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn expect(&mut self, wanted: char) -> Result<(), LineError> {
        match self.bump() {
            Some(c) if c == wanted => Ok(()),
            Some(c) => Err(LineError::Expected { wanted, column: self.column() - 1, found: Some(c) }),
            None => Err(LineError::Expected { wanted, column: self.column(), found: None }),
        }
    }

    fn name(&mut self, metric: bool) -> Result<&'a str, LineError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let valid = c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':');
            if !valid || (self.pos == start && c.is_ascii_digit()) {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            let what = if metric { "metric name" } else { "label name" };
            return Err(LineError::ExpectedName { what, column: self.column(), found: self.peek() });
        }
        Ok(&self.text[start..self.pos])
    }

    fn quoted(&mut self) -> Result<String, LineError> {
        self.expect('"')?;
        let mut value = String::new();
        loop {
            match self.bump() {
                None => return Err(LineError::UnterminatedValue),
                Some('"') => return Ok(value),
                Some('\\') => match self.bump() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    Some(c) => {
                        return Err(LineError::InvalidEscape { escape: c, column: self.column() - 2 });
                    }
                    None => return Err(LineError::UnterminatedValue),
                },
                Some(c) => value.push(c),
            }
        }
    }

    /// `{a="1",b="2"}` (a trailing comma allowed), or nothing.
    fn labels(&mut self) -> Result<Vec<(String, String)>, LineError> {
        let mut labels: Vec<(String, String)> = Vec::new();
        if self.peek() != Some('{') {
            return Ok(labels);
        }
        self.bump();
        loop {
            self.skip_blanks();
            if self.peek() == Some('}') {
                self.bump();
                return Ok(labels);
            }
            let name = self.name(false)?.to_string();
            self.skip_blanks();
            self.expect('=')?;
            self.skip_blanks();
            let value = self.quoted()?;
            if labels.iter().any(|(n, _)| *n == name) {
                return Err(LineError::DuplicateLabel(name));
            }
            labels.push((name, value));
            self.skip_blanks();
            match self.bump() {
                Some(',') => {}
                Some('}') => return Ok(labels),
                Some(c) => {
                    return Err(LineError::ExpectedLabelEnd { column: self.column() - 1, found: c });
                }
                None => return Err(LineError::UnterminatedLabelSet),
            }
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.text[start..self.pos]
    }

    fn sample(&mut self, format: Format, exemplars: &mut usize) -> Result<ParsedSample, LineError> {
        let name = self.name(true)?.to_string();
        let labels = self.labels()?;
        if self.skip_blanks() == 0 {
            return Err(LineError::NoValueAfter { name, column: self.column() });
        }
        let value = parse_value(self.token())?;
        let mut timestamp_ms = None;
        self.skip_blanks();
        if self.peek().is_some_and(|c| c != '#') {
            let token = self.token();
            timestamp_ms = Some(parse_timestamp(token, format)?);
            self.skip_blanks();
        }
        let mut exemplar = None;
        if self.peek() == Some('#') {
            if format == Format::Text {
                return Err(LineError::TextExemplar(self.column()));
            }
            self.bump();
            if self.skip_blanks() == 0 {
                return Err(LineError::ExemplarSpace);
            }
            if self.peek() != Some('{') {
                return Err(LineError::ExemplarLabels(self.column()));
            }
            let labels = self.labels()?;
            if self.skip_blanks() == 0 {
                return Err(LineError::ExemplarValue);
            }
            let value = parse_value(self.token())?;
            self.skip_blanks();
            let mut timestamp_ms = None;
            if self.peek().is_some() {
                timestamp_ms = Some(parse_timestamp(self.token(), Format::OpenMetrics)?);
                self.skip_blanks();
            }
            *exemplars += 1;
            exemplar = Some(ParsedExemplar { labels, value, timestamp_ms });
        }
        if let Some(c) = self.peek() {
            return Err(LineError::Unexpected { found: c, column: self.column() });
        }
        Ok(ParsedSample { name, labels, value, timestamp_ms, exemplar })
    }
}

fn parse_value(token: &str) -> Result<f64, LineError> {
    match token {
        "NaN" | "nan" => Ok(f64::NAN),
        "+Inf" | "+inf" | "Inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "" => Err(LineError::MissingValue),
        _ if token.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E')) => {
            token.parse::<f64>().map_err(|_| LineError::InvalidValue(token.to_string()))
        }
        _ => Err(LineError::InvalidValue(token.to_string())),
    }
}

fn parse_timestamp(token: &str, format: Format) -> Result<i64, LineError> {
    match format {
        Format::Text => token.parse::<i64>().map_err(|_| LineError::MillisecondTimestamp(token.to_string())),
        Format::OpenMetrics => {
            let seconds = parse_value(token).map_err(|_| LineError::SecondTimestamp(token.to_string()))?;
            if !seconds.is_finite() || seconds.abs() > 9.2e15 {
                return Err(LineError::TimestampRange(token.to_string()));
            }
            Ok((seconds * 1000.0).round() as i64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> ParsedSample {
        parse(line, Format::Text).unwrap().samples.remove(0)
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn quoted_values_may_hold_separators_and_escapes() {
        let sample = one(r#"http_requests_total{path="/a,b=c}d",msg="say \"hi\"\\n\n",code="200"} 3 1700000000000"#);
        assert_eq!(sample.name, "http_requests_total");
        assert_eq!(sample.labels, labels(&[("path", "/a,b=c}d"), ("msg", "say \"hi\"\\n\n"), ("code", "200")]));
        assert_eq!(sample.value, 3.0);
        assert_eq!(sample.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(one(r##"x{a="# not a comment"} 1"##).labels, labels(&[("a", "# not a comment")]));
    }

    #[test]
    fn names_with_colons_special_values_and_optional_parts() {
        assert_eq!(one("job:http_requests:rate5m 0.5").name, "job:http_requests:rate5m");
        assert!(one("x NaN").value.is_nan());
        assert_eq!(one("x +Inf").value, f64::INFINITY);
        assert_eq!(one("x -Inf").value, f64::NEG_INFINITY);
        assert_eq!(one("x{} 1e3").value, 1000.0);
        assert_eq!(one("x{a=\"1\",} 2").labels, labels(&[("a", "1")]));
        assert_eq!(one("x \t 2 \t -5").timestamp_ms, Some(-5));
    }

    #[test]
    fn help_type_and_unit_are_kept() {
        let text = "# HELP x_seconds The \\\\ time\\nspent.\n# TYPE x_seconds histogram\n# random comment\nx_seconds_bucket{le=\"+Inf\"} 1\n";
        let parsed = parse(text, Format::Text).unwrap();
        assert_eq!(parsed.families[0].help.as_deref(), Some("The \\ time\nspent."));
        assert_eq!(parsed.families[0].kind.as_deref(), Some("histogram"));
        let om = "# TYPE x_seconds counter\n# UNIT x_seconds seconds\nx_seconds_total 1.5 1700000000.123 # {trace_id=\"abc\"} 0.5 1700000000\n# EOF\n";
        let parsed = parse(om, Format::OpenMetrics).unwrap();
        assert_eq!(parsed.families[0].unit.as_deref(), Some("seconds"));
        assert_eq!(parsed.samples[0].timestamp_ms, Some(1_700_000_000_123));
        assert_eq!(parsed.exemplars, 1);
        let exemplar = parsed.samples[0].exemplar.as_ref().unwrap();
        assert_eq!(
            (exemplar.labels[0].1.as_str(), exemplar.value, exemplar.timestamp_ms),
            ("abc", 0.5, Some(1_700_000_000_000))
        );
    }

    #[test]
    fn malformed_lines_fail_the_whole_body_with_their_number() {
        let cases = [
            ("ok 1\nbad{a=\"1\" 2\n", 2, "expected ',' or '}'"),
            ("ok 1\n\nx{a=\"unterminated} 1\n", 3, "unterminated label value"),
            ("x{a=\"\\q\"} 1", 1, "invalid escape"),
            ("x{a=\"1\",a=\"2\"} 1", 1, "duplicate label"),
            ("x 1 2 3", 1, "unexpected '3'"),
            ("x one", 1, "invalid value"),
            ("x", 1, "expected a space and a value"),
            ("1x 1", 1, "expected a metric name"),
            ("x 1 1.5", 1, "invalid timestamp"),
            ("# TYPE x sometimes\nx 1", 1, "unknown metric type"),
            ("x 1 # {a=\"b\"} 1", 1, "exemplars are OpenMetrics only"),
            ("x{a-b=\"1\"} 1", 1, "expected '='"),
        ];
        for (text, line, fragment) in cases {
            let error = parse(text, Format::Text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(error.message.contains(fragment), "{text:?}: {error}");
        }
        let error = parse("x 1\n", Format::OpenMetrics).unwrap_err();
        assert!(error.message.contains("# EOF"), "{error}");
        let error = parse("x 1\n# EOF\ny 2\n", Format::OpenMetrics).unwrap_err();
        assert_eq!((error.line, error.message.as_str()), (3, "content after # EOF"));
    }

    #[test]
    fn format_is_detected() {
        assert_eq!(Format::detect("application/openmetrics-text; version=1.0.0", ""), Format::OpenMetrics);
        assert_eq!(Format::detect("", "x 1\n# EOF\n"), Format::OpenMetrics);
        assert_eq!(Format::detect("text/plain; version=0.0.4", "x 1\n"), Format::Text);
    }

    #[test]
    fn line_errors_say_what_and_where() {
        let message = |text: &str| parse(text, Format::Text).unwrap_err().to_string();
        assert_eq!(message("x{a 1"), "line 1: expected '=' at column 5, found '1'");
        assert_eq!(message("x{a"), "line 1: expected '=' at column 4, found end of line");
        assert_eq!(message("x{1=\"a\"} 1"), "line 1: expected a label name at column 3, found '1'");
        assert_eq!(message("x{"), "line 1: expected a label name at column 3");
        assert_eq!(message("x{a=\"1\" b=\"2\"} 1"), "line 1: expected ',' or '}' after a label at column 9, found 'b'");
        assert_eq!(message("x{a=\"\\q\"} 1"), "line 1: invalid escape \\q in label value at column 6");
    }
}
