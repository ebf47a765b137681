//! The JSON bodies of the drift endpoints, and their validation: every refusal names the
//! field (and index) at fault, and nothing of a refused body is stored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::DriftError;
use crate::model::FeatureKey;

/// `POST /api/v1/drift/reference`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceRequest {
    pub model: String,
    #[serde(default)]
    pub version: String,
    pub feature: String,
    #[serde(rename = "type")]
    pub kind: Option<FeatureKind>,
    pub values: Option<Vec<Value>>,
    pub edges: Option<Vec<f64>>,
    pub categories: Option<Vec<String>>,
    pub counts: Option<Vec<u64>>,
    /// A pinned window of stored current data: `from` and `to`, RFC 3339 or Unix seconds.
    pub from: Option<Value>,
    pub to: Option<Value>,
}

/// `POST /api/v1/drift`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftRequest {
    pub model: String,
    #[serde(default)]
    pub version: String,
    pub feature: String,
    pub values: Option<Vec<Value>>,
    pub counts: Option<Vec<u64>>,
    /// The reference `counts` were binned against; the current one when absent.
    pub reference_id: Option<String>,
    pub scores: Option<BTreeMap<String, f64>>,
    /// When the data was observed: RFC 3339 or Unix seconds; now when absent.
    pub timestamp: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKind {
    Numeric,
    Categorical,
}

/// Raw values of one feature, checked.
#[derive(Clone, Debug, PartialEq)]
pub enum RawValues {
    Numeric(Vec<f64>),
    Categorical(Vec<String>),
}

impl RawValues {
    pub fn len(&self) -> usize {
        match self {
            RawValues::Numeric(v) => v.len(),
            RawValues::Categorical(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> DriftError {
    DriftError::Invalid { message: message.into(), hint: hint.into() }
}

/// Parses a JSON body, explaining the usual mistake (NaN or Infinity, which JSON lacks).
pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, DriftError> {
    serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(body);
        let hint = if ["NaN", "Infinity"].iter().any(|token| bare_token(&text, token)) {
            "JSON has no NaN or Infinity: drop or impute missing values before posting them".to_string()
        } else {
            format!("the body must be a JSON object as documented for {what} in the README")
        };
        invalid(format!("{what}: {e}"), hint)
    })
}

/// True when `token` occurs outside string literals.
fn bare_token(text: &str, token: &str) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if text[i..].starts_with(token) {
            return true;
        }
    }
    false
}

/// model, version and feature, checked.
pub fn feature_key(model: &str, version: &str, feature: &str) -> Result<FeatureKey, DriftError> {
    for (name, value) in [("model", model), ("feature", feature)] {
        if value.trim().is_empty() {
            return Err(invalid(format!("{name} is empty"), "name the model and feature the values belong to"));
        }
    }
    for (name, value) in [("model", model), ("version", version), ("feature", feature)] {
        if value.len() > 256 || value.chars().any(char::is_control) {
            return Err(invalid(
                format!("{name} {value:?} is not a usable name"),
                "names are at most 256 characters without control characters",
            ));
        }
    }
    Ok(FeatureKey { model: model.to_string(), version: version.to_string(), feature: feature.to_string() })
}

/// Checks raw values against a kind (inferred from the first value when unknown): numbers
/// must be finite; categories are strings, integers or booleans.
pub fn raw_values(values: &[Value], kind: Option<FeatureKind>, limit: usize) -> Result<RawValues, DriftError> {
    if values.is_empty() {
        return Err(invalid("values is empty", "post at least one value"));
    }
    if values.len() > limit {
        return Err(invalid(
            format!("{} values are above the limit of {limit} per request", values.len()),
            "split the values over several requests",
        ));
    }
    let kind = kind.unwrap_or(if values[0].is_string() || values[0].is_boolean() {
        FeatureKind::Categorical
    } else {
        FeatureKind::Numeric
    });
    match kind {
        FeatureKind::Numeric => {
            let mut out = Vec::with_capacity(values.len());
            for (i, value) in values.iter().enumerate() {
                out.push(numeric_value(i, value)?);
            }
            Ok(RawValues::Numeric(out))
        }
        FeatureKind::Categorical => {
            let mut out = Vec::with_capacity(values.len());
            for (i, value) in values.iter().enumerate() {
                out.push(category_value(i, value)?);
            }
            Ok(RawValues::Categorical(out))
        }
    }
}

fn numeric_value(index: usize, value: &Value) -> Result<f64, DriftError> {
    let hint = "a numeric feature takes finite numbers; drop or impute missing values before posting";
    match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| invalid(format!("values[{index}] = {n} is not a finite number"), hint)),
        Value::Null => Err(invalid(format!("values[{index}] is null (a missing value)"), hint)),
        Value::String(s)
            if matches!(s.to_ascii_lowercase().trim_start_matches(['+', '-']), "nan" | "inf" | "infinity") =>
        {
            Err(invalid(format!("values[{index}] is {s}: not a finite number"), hint))
        }
        other => Err(invalid(
            format!("values[{index}] = {other} is not a number"),
            format!("{hint}; the feature's reference is numeric"),
        )),
    }
}

fn category_value(index: usize, value: &Value) -> Result<String, DriftError> {
    let hint = "a categorical feature takes strings (or integers or booleans standing for categories)";
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Value::Null => Err(invalid(format!("values[{index}] is null (a missing value)"), hint)),
        other => Err(invalid(format!("values[{index}] = {other} is not a category"), hint)),
    }
}

/// Edges must be finite and ascending (equal neighbours are allowed: they make empty bins).
pub fn check_edges(edges: &[f64]) -> Result<(), DriftError> {
    if edges.is_empty() {
        return Err(invalid(
            "edges is empty",
            "give the inner bin edges, ascending; the outer edges are -inf and +inf",
        ));
    }
    for (i, edge) in edges.iter().enumerate() {
        if !edge.is_finite() {
            return Err(invalid(
                format!("edges[{i}] is not finite"),
                "give only the inner edges; -inf and +inf are implied",
            ));
        }
        if i > 0 && *edge < edges[i - 1] {
            return Err(invalid(
                format!("edges[{i}] = {edge} is below edges[{}] = {}", i - 1, edges[i - 1]),
                "edges must be ascending",
            ));
        }
    }
    Ok(())
}

/// A time as RFC 3339 text or Unix seconds, in nanoseconds.
pub fn time_ns(value: &Value, field: &str) -> Result<i64, DriftError> {
    let hint = "an RFC 3339 time (2026-01-02T15:04:05Z) or Unix seconds";
    let ns = match value {
        Value::Number(n) => n.as_f64().filter(|s| s.is_finite() && s.abs() < 9.2e9).map(|s| (s * 1e9).round() as i64),
        Value::String(s) => {
            chrono::DateTime::parse_from_rfc3339(s).ok().and_then(|t| t.timestamp_nanos_opt()).or_else(|| {
                s.parse::<f64>().ok().filter(|v| v.is_finite() && v.abs() < 9.2e9).map(|v| (v * 1e9).round() as i64)
            })
        }
        _ => None,
    };
    ns.ok_or_else(|| invalid(format!("{field} = {value} is not a time"), hint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nan_and_missing_values_are_refused_by_index() {
        let err = raw_values(&[json!(1.0), json!("NaN")], Some(FeatureKind::Numeric), 10).unwrap_err();
        assert!(err.to_string().contains("values[1]"), "{err}");
        let err = raw_values(&[json!(null)], Some(FeatureKind::Numeric), 10).unwrap_err();
        assert!(err.to_string().contains("null"), "{err}");
    }

    #[test]
    fn bare_nan_in_the_body_gets_a_hint() {
        let body = br#"{"model":"m","feature":"f","values":[1, NaN]}"#;
        let DriftError::Invalid { hint, .. } = parse::<DriftRequest>(body, "a drift body").unwrap_err() else {
            panic!()
        };
        assert!(hint.contains("NaN"), "{hint}");
        let body = br#"{"model":"NaN","feature":"f","values":[1, }"#;
        let DriftError::Invalid { hint, .. } = parse::<DriftRequest>(body, "a drift body").unwrap_err() else {
            panic!()
        };
        assert!(!hint.contains("NaN"), "{hint}");
    }

    #[test]
    fn kinds_are_inferred_from_values() {
        assert_eq!(
            raw_values(&[json!("a"), json!(3)], None, 10).unwrap(),
            RawValues::Categorical(vec!["a".into(), "3".into()])
        );
        assert_eq!(raw_values(&[json!(1), json!(2.5)], None, 10).unwrap(), RawValues::Numeric(vec![1.0, 2.5]));
        assert!(raw_values(&[json!(1), json!("a")], None, 10).is_err());
    }

    #[test]
    fn times_parse_both_ways() {
        assert_eq!(time_ns(&json!(1.5), "t").unwrap(), 1_500_000_000);
        assert_eq!(time_ns(&json!("1970-01-01T00:00:02Z"), "t").unwrap(), 2_000_000_000);
        assert!(time_ns(&json!("yesterday"), "t").is_err());
    }
}
