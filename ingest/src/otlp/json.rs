//! OTLP/JSON: what the protobuf-JSON mapping allows beyond the generated serde code.
//! Enum fields may be sent as names (`"SPAN_KIND_SERVER"`) or as numbers in strings; they
//! are turned into numbers before deserialising. Unknown fields are ignored by the serde
//! code itself; hex ids and int64-as-string are handled there too.

use serde_json::Value;

/// Enum-valued fields of the OTLP messages and the prefix of their value names.
const ENUM_FIELDS: &[(&str, &str, &[&str])] = &[
    ("kind", "SPAN_KIND_", &["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]),
    ("code", "STATUS_CODE_", &["UNSET", "OK", "ERROR"]),
    ("aggregationTemporality", "AGGREGATION_TEMPORALITY_", &["UNSPECIFIED", "DELTA", "CUMULATIVE"]),
    (
        "severityNumber",
        "SEVERITY_NUMBER_",
        &[
            "UNSPECIFIED",
            "TRACE",
            "TRACE2",
            "TRACE3",
            "TRACE4",
            "DEBUG",
            "DEBUG2",
            "DEBUG3",
            "DEBUG4",
            "INFO",
            "INFO2",
            "INFO3",
            "INFO4",
            "WARN",
            "WARN2",
            "WARN3",
            "WARN4",
            "ERROR",
            "ERROR2",
            "ERROR3",
            "ERROR4",
            "FATAL",
            "FATAL2",
            "FATAL3",
            "FATAL4",
        ],
    ),
];

/// Rewrites enum names and numeric strings in enum fields to numbers, in place.
/// An enum field whose value is neither a known name nor a number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: unknown enum value {value:?}")]
pub struct UnknownEnumValue {
    pub field: String,
    pub value: String,
}

pub fn normalize_enums(value: &mut Value) -> Result<(), UnknownEnumValue> {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if let Some((_, prefix, names)) = ENUM_FIELDS.iter().find(|(k, _, _)| k == key)
                    && let Value::String(text) = field
                {
                    let number = match text.strip_prefix(prefix).and_then(|n| names.iter().position(|x| x == &n)) {
                        Some(index) => index as i64,
                        None => text
                            .parse::<i64>()
                            .map_err(|_| UnknownEnumValue { field: key.clone(), value: text.clone() })?,
                    };
                    *field = Value::from(number);
                    continue;
                }
                normalize_enums(field)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                normalize_enums(item)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_and_numeric_strings_become_numbers() {
        let mut value = serde_json::json!({"spans": [{"kind": "SPAN_KIND_SERVER", "status": {"code": "STATUS_CODE_ERROR"}}],
            "sum": {"aggregationTemporality": "2"}, "severityNumber": "SEVERITY_NUMBER_WARN", "name": "kind"});
        normalize_enums(&mut value).unwrap();
        assert_eq!(value["spans"][0]["kind"], 2);
        assert_eq!(value["spans"][0]["status"]["code"], 2);
        assert_eq!(value["sum"]["aggregationTemporality"], 2);
        assert_eq!(value["severityNumber"], 13);
        assert_eq!(value["name"], "kind");
        let mut bad = serde_json::json!({"kind": "SPAN_KIND_NOPE"});
        assert!(normalize_enums(&mut bad).is_err());
    }
}
