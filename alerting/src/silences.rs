//! Silences as Alertmanager keeps them: matchers and a time span; an alert every matcher of
//! an active silence matches is muted. Expiring a silence ends it now (a pending one never
//! starts). The whole set is saved on every change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::labels::Labels;
use crate::matchers::{MatchOp, Matcher, MatcherError, all_match};

/// A matcher in Alertmanager's API shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiMatcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl ApiMatcher {
    fn compile(&self) -> Result<Matcher, MatcherError> {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::Regex,
            (true, false) => MatchOp::NotRegex,
        };
        Matcher::new(self.name.clone(), op, self.value.clone())
    }
}

/// A matcher as the API accepts it: Alertmanager's object or a string like `service="x"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum MatcherInput {
    Object(ApiMatcher),
    Text(String),
}

/// `POST /api/v1/silences`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SilenceRequest {
    /// Updating an existing silence replaces it.
    #[serde(default)]
    pub id: Option<String>,
    pub matchers: Vec<MatcherInput>,
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: DateTime<Utc>,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<ApiMatcher>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl Silence {
    pub fn state(&self, now: DateTime<Utc>) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    fn compiled(&self) -> Vec<Matcher> {
        self.matchers.iter().filter_map(|m| m.compile().ok()).collect()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SilenceError {
    #[error("invalid silence: {0}")]
    Invalid(String),
    #[error("no silence with id {0:?}")]
    NotFound(String),
    #[error("silence {0:?} has already expired")]
    AlreadyExpired(String),
}

/// Expired silences are kept this long for the record (Alertmanager: 120 h).
const EXPIRED_RETENTION: chrono::Duration = chrono::Duration::hours(120);

#[derive(Default, Debug, Clone)]
pub struct Silences {
    silences: Vec<Silence>,
}

impl Silences {
    pub fn restore(silences: Vec<Silence>) -> Self {
        Silences { silences }
    }

    pub fn all(&self) -> &[Silence] {
        &self.silences
    }

    /// Creates (or, with an id, replaces) a silence; returns its id.
    pub fn upsert(&mut self, request: SilenceRequest, now: DateTime<Utc>) -> Result<String, SilenceError> {
        if request.matchers.is_empty() {
            return Err(SilenceError::Invalid("at least one matcher is needed".into()));
        }
        let mut matchers = Vec::new();
        for input in request.matchers {
            let matcher = match input {
                MatcherInput::Object(m) => {
                    m.compile().map_err(|e| SilenceError::Invalid(e.to_string()))?;
                    m
                }
                MatcherInput::Text(text) => {
                    let m = Matcher::parse(&text).map_err(|e| SilenceError::Invalid(e.to_string()))?;
                    ApiMatcher {
                        name: m.name,
                        value: m.value,
                        is_regex: matches!(m.op, MatchOp::Regex | MatchOp::NotRegex),
                        is_equal: matches!(m.op, MatchOp::Equal | MatchOp::Regex),
                    }
                }
            };
            matchers.push(matcher);
        }
        if matchers.iter().filter_map(|m| m.compile().ok()).all(|m| m.matches(&Labels::new())) {
            return Err(SilenceError::Invalid(
                "the matchers match every alert (each matches an empty label); add one that needs a value".into(),
            ));
        }
        let starts_at = request.starts_at.unwrap_or(now).max(now);
        if request.ends_at <= starts_at {
            return Err(SilenceError::Invalid("endsAt must be after startsAt and in the future".into()));
        }
        let id = match &request.id {
            Some(id) => {
                let existing =
                    self.silences.iter().find(|s| &s.id == id).ok_or_else(|| SilenceError::NotFound(id.clone()))?;
                if existing.state(now) == SilenceState::Expired {
                    // As Alertmanager: an expired silence stays in the record; posting it
                    // again (amtool's `silence import`, say) makes a new one.
                    uuid::Uuid::new_v4().to_string()
                } else {
                    self.silences.retain(|s| &s.id != id);
                    id.clone()
                }
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        self.silences.push(Silence {
            id: id.clone(),
            matchers,
            starts_at,
            ends_at: request.ends_at,
            updated_at: now,
            created_by: request.created_by,
            comment: request.comment,
        });
        Ok(id)
    }

    pub fn expire(&mut self, id: &str, now: DateTime<Utc>) -> Result<(), SilenceError> {
        let silence =
            self.silences.iter_mut().find(|s| s.id == id).ok_or_else(|| SilenceError::NotFound(id.to_string()))?;
        match silence.state(now) {
            SilenceState::Expired => return Err(SilenceError::AlreadyExpired(id.to_string())),
            SilenceState::Pending => silence.starts_at = now,
            SilenceState::Active => {}
        }
        silence.ends_at = now;
        silence.updated_at = now;
        Ok(())
    }

    /// Ids of the active silences that mute `labels`.
    pub fn silencing(&self, labels: &Labels, now: DateTime<Utc>) -> Vec<String> {
        self.silences
            .iter()
            .filter(|s| s.state(now) == SilenceState::Active && all_match(&s.compiled(), labels))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Forgets silences that expired long ago.
    pub fn gc(&mut self, now: DateTime<Utc>) {
        self.silences.retain(|s| s.ends_at + EXPIRED_RETENTION > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn request(matchers: &str, ends: i64) -> SilenceRequest {
        serde_json::from_str(&format!(
            r#"{{"matchers": {matchers}, "endsAt": "{}", "createdBy": "ann", "comment": "deploy"}}"#,
            at(ends).to_rfc3339()
        ))
        .unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn active_silences_mute_matching_alerts_until_they_end() {
        let mut silences = Silences::default();
        let id = silences
            .upsert(request(r#"[{"name": "service", "value": "checkout"}, "severity=~\"page|ticket\""]"#, 3600), at(0))
            .unwrap();
        let checkout = labels(&[("service", "checkout"), ("severity", "page")]);
        assert_eq!(silences.silencing(&checkout, at(10)), vec![id.clone()]);
        assert!(silences.silencing(&labels(&[("service", "search"), ("severity", "page")]), at(10)).is_empty());
        assert!(silences.silencing(&checkout, at(3600)).is_empty(), "ended");
        silences.expire(&id, at(20)).unwrap();
        assert!(silences.silencing(&checkout, at(30)).is_empty(), "expired early");
        assert_eq!(silences.expire(&id, at(40)), Err(SilenceError::AlreadyExpired(id.clone())));
        // Posted again with its id, an expired silence comes back as a new one beside it.
        let mut again = request(r#"["service=\"checkout\""]"#, 7200);
        again.id = Some(id.clone());
        let new_id = silences.upsert(again, at(50)).unwrap();
        assert_ne!(new_id, id);
        assert_eq!(silences.silencing(&checkout, at(60)), vec![new_id]);
        assert_eq!(silences.all().len(), 2, "the expired one stays in the record");
        let mut unknown = request(r#"["a=b"]"#, 7200);
        unknown.id = Some("nope".into());
        assert_eq!(silences.upsert(unknown, at(60)), Err(SilenceError::NotFound("nope".into())));
    }

    #[test]
    fn bad_silences_are_refused() {
        let mut silences = Silences::default();
        assert!(matches!(silences.upsert(request("[]", 10), at(0)), Err(SilenceError::Invalid(_))));
        assert!(matches!(silences.upsert(request(r#"["a=~\".*\""]"#, 10), at(0)), Err(SilenceError::Invalid(_))));
        assert!(matches!(silences.upsert(request(r#"["a=b"]"#, -10), at(0)), Err(SilenceError::Invalid(_))));
        assert!(matches!(silences.upsert(request(r#"["a=~\"(\""]"#, 10), at(0)), Err(SilenceError::Invalid(_))));
        assert!(matches!(silences.expire("nope", at(0)), Err(SilenceError::NotFound(_))));
    }

    #[test]
    fn pending_silences_start_later() {
        let mut silences = Silences::default();
        let mut req = request(r#"["a=b"]"#, 200);
        req.starts_at = Some(at(100));
        silences.upsert(req, at(0)).unwrap();
        assert_eq!(silences.all()[0].state(at(50)), SilenceState::Pending);
        assert!(silences.silencing(&labels(&[("a", "b")]), at(50)).is_empty());
        assert_eq!(silences.silencing(&labels(&[("a", "b")]), at(150)).len(), 1);
    }
}
