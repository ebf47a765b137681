//! Label matchers as Alertmanager writes them: `name="value"`, `name!=value`, `name=~"re"`,
//! `name!~"re"`. Regular expressions are anchored at both ends.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::labels::{Labels, is_valid_label_name};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    #[serde(rename = "=~")]
    Regex,
    #[serde(rename = "!~")]
    NotRegex,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// Why a matcher was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("invalid label name {0:?}")]
    LabelName(String),
    #[error("invalid regular expression {value:?}: {reason}")]
    Regex { value: String, reason: String },
    #[error("{0:?} is not a matcher: write name=\"value\" (or !=, =~, !~)")]
    NoOperator(String),
    #[error("{0:?} is not a matcher: the operator must be =, !=, =~ or !~")]
    BadOperator(String),
    #[error("bad quoted value in matcher {0:?}")]
    BadQuote(String),
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Matcher {
    pub fn new(name: impl Into<String>, op: MatchOp, value: impl Into<String>) -> Result<Self, MatcherError> {
        let name = name.into();
        let value = value.into();
        if !is_valid_label_name(&name) {
            return Err(MatcherError::LabelName(name));
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| MatcherError::Regex { value: value.clone(), reason: e.to_string() })?,
            ),
            _ => None,
        };
        Ok(Matcher { name, op, value, regex })
    }

    /// `name="value"` or `name!="value"` for a label name the code writes itself (no regex to
    /// compile, nothing to refuse).
    pub(crate) fn literal(name: &str, negated: bool, value: &str) -> Matcher {
        let op = if negated { MatchOp::NotEqual } else { MatchOp::Equal };
        Matcher { name: name.into(), op, value: value.into(), regex: None }
    }

    /// Parses `name op value`; the value may be double-quoted (with Go escapes) or bare.
    pub fn parse(text: &str) -> Result<Self, MatcherError> {
        let text = text.trim();
        let op_at = text.find(['=', '!']).ok_or_else(|| MatcherError::NoOperator(text.to_string()))?;
        let name = text[..op_at].trim();
        let rest = &text[op_at..];
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Regex, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Equal, v)
        } else {
            return Err(MatcherError::BadOperator(text.to_string()));
        };
        let value = value.trim();
        let value = if value.starts_with('"') {
            serde_json::from_str::<String>(value).map_err(|_| MatcherError::BadQuote(text.to_string()))?
        } else {
            value.to_string()
        };
        Matcher::new(name, op, value)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.name).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            _ => false,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// True when every matcher matches.
pub fn all_match(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_the_alertmanager_forms() {
        let m = Matcher::parse(r#"severity="ticket""#).unwrap();
        assert_eq!((m.name.as_str(), m.op, m.value.as_str()), ("severity", MatchOp::Equal, "ticket"));
        assert_eq!(Matcher::parse("team != payments").unwrap().op, MatchOp::NotEqual);
        assert!(Matcher::parse(r#"service=~"check.*""#).unwrap().matches(&labels(&[("service", "checkout")])));
        assert!(
            !Matcher::parse(r#"service=~"check""#).unwrap().matches(&labels(&[("service", "checkout")])),
            "anchored"
        );
        assert!(Matcher::parse(r#"x!~"a|b""#).unwrap().matches(&labels(&[])));
        assert!(Matcher::parse(r#"msg="say \"hi\"""#).unwrap().matches(&labels(&[("msg", "say \"hi\"")])));
        assert!(Matcher::parse("nothing").is_err());
        assert!(Matcher::parse("1a=b").is_err());
        assert!(Matcher::parse("a=~(").is_err());
    }

    #[test]
    fn missing_labels_are_empty() {
        assert!(Matcher::parse(r#"env="""#).unwrap().matches(&labels(&[])));
        assert!(!Matcher::parse("env=prod").unwrap().matches(&labels(&[])));
    }
}
