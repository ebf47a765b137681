//! OTLP attributes: values as text, the resource's service identity, and the Arrow map
//! columns spans and logs keep them in.

use datafusion::arrow::array::{MapBuilder, StringBuilder};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// An attribute value as text: strings as they are, scalars in their usual form, arrays and
/// key-value lists as JSON, bytes as hex.
pub fn value_text(value: Option<&AnyValue>) -> Option<String> {
    Some(match value?.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BytesValue(bytes) => hex(bytes),
        other => to_json(other).to_string(),
    })
}

fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::StringValue(s) => s.clone().into(),
        Value::BoolValue(b) => (*b).into(),
        Value::IntValue(i) => (*i).into(),
        Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or_else(|| d.to_string().into(), Into::into),
        Value::BytesValue(bytes) => hex(bytes).into(),
        Value::ArrayValue(array) => array
            .values
            .iter()
            .map(|v| v.value.as_ref().map_or(serde_json::Value::Null, to_json))
            .collect::<Vec<_>>()
            .into(),
        Value::KvlistValue(list) => list
            .values
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().and_then(|v| v.value.as_ref()).map_or(serde_json::Value::Null, to_json),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        #[allow(unreachable_patterns)]
        _ => serde_json::Value::Null,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

pub fn find(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| value_text(kv.value.as_ref())).filter(|v| !v.is_empty())
}

/// Who sent the data, from resource attributes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceIdentity {
    /// `service.name`, or `unknown_service` as the SDKs default.
    pub service: String,
    /// Prometheus `job`: `service.namespace/service.name`, or `service.name`.
    pub job: Option<String>,
    /// Prometheus `instance`: `service.instance.id`.
    pub instance: Option<String>,
}

impl ServiceIdentity {
    pub fn of(resource: Option<&Resource>) -> Self {
        let attributes = resource.map_or(&[][..], |r| r.attributes.as_slice());
        let name = find(attributes, "service.name");
        let job = match (find(attributes, "service.namespace"), &name) {
            (Some(namespace), Some(name)) => Some(format!("{namespace}/{name}")),
            (_, name) => name.clone(),
        };
        ServiceIdentity {
            service: name.unwrap_or_else(|| "unknown_service".into()),
            job,
            instance: find(attributes, "service.instance.id"),
        }
    }
}

pub use vigil_storage::schema::string_map_builder as map_builder;

pub fn append_map(builder: &mut MapBuilder<StringBuilder, StringBuilder>, attributes: &[KeyValue]) {
    for kv in attributes {
        builder.keys().append_value(&kv.key);
        builder.values().append_option(value_text(kv.value.as_ref()));
    }
    // Appending a map entry cannot fail when keys and values were appended in pairs.
    let _ = builder.append(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    #[test]
    fn values_become_text() {
        assert_eq!(value_text(Some(&AnyValue { value: Some(Value::IntValue(-3)) })).unwrap(), "-3");
        assert_eq!(value_text(Some(&AnyValue { value: Some(Value::DoubleValue(0.5)) })).unwrap(), "0.5");
        let array = Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue { value: Some(Value::StringValue("a".into())) },
                AnyValue { value: Some(Value::BoolValue(true)) },
            ],
        });
        assert_eq!(value_text(Some(&AnyValue { value: Some(array) })).unwrap(), r#"["a",true]"#);
        let list = Value::KvlistValue(KeyValueList { values: vec![kv("k", Value::IntValue(1))] });
        assert_eq!(value_text(Some(&AnyValue { value: Some(list) })).unwrap(), r#"{"k":1}"#);
        assert_eq!(value_text(Some(&AnyValue { value: Some(Value::BytesValue(vec![0xab, 1])) })).unwrap(), "ab01");
        assert_eq!(value_text(None), None);
    }

    #[test]
    fn job_and_instance_come_from_the_resource() {
        let resource = Resource {
            attributes: vec![
                kv("service.name", Value::StringValue("api".into())),
                kv("service.namespace", Value::StringValue("shop".into())),
                kv("service.instance.id", Value::StringValue("pod-1".into())),
            ],
            ..Default::default()
        };
        let identity = ServiceIdentity::of(Some(&resource));
        assert_eq!(identity.job.as_deref(), Some("shop/api"));
        assert_eq!(identity.instance.as_deref(), Some("pod-1"));
        assert_eq!(identity.service, "api");
        assert_eq!(ServiceIdentity::of(None).service, "unknown_service");
    }
}
