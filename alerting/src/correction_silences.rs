//! A correction that mutes becomes silences: one per occurrence starting within the next day,
//! over the occurrence's future part, matching the alerts of the SLOs in its scope
//! (`slo=~"a|b"`), made by `correction/<name>` with the correction's reason. A correction
//! removed or rescoped has its silences expired; a silence someone expired by hand is not
//! made again.

use std::sync::Arc;

use vigil_query::slo::{Correction, SloDefinition};

use crate::engine::{Alerting, to_utc};
use crate::silences::{ApiMatcher, MatcherInput, SilenceRequest, SilenceState};

/// How far ahead occurrences get their silence.
const LOOKAHEAD_MS: i64 = 24 * 3_600_000;
pub const CREATED_BY_PREFIX: &str = "correction/";

/// A silence a correction needs.
#[derive(Debug, PartialEq)]
struct Wanted {
    created_by: String,
    pattern: String,
    starts_ms: i64,
    ends_ms: i64,
    comment: String,
}

fn wanted(corrections: &[Arc<Correction>], definitions: &[Arc<SloDefinition>], now_ms: i64) -> Vec<Wanted> {
    let mut out = Vec::new();
    for correction in corrections.iter().filter(|c| c.mute) {
        let mut names: Vec<&str> =
            definitions.iter().filter(|d| correction.scope.covers(d)).map(|d| d.name.as_str()).collect();
        if names.is_empty() {
            continue;
        }
        names.sort_unstable();
        let pattern = names.iter().map(|n| regex::escape(n)).collect::<Vec<_>>().join("|");
        for (start, end) in correction.occurrences(now_ms, now_ms + LOOKAHEAD_MS) {
            out.push(Wanted {
                created_by: format!("{CREATED_BY_PREFIX}{}", correction.name),
                pattern: pattern.clone(),
                starts_ms: start.max(now_ms),
                ends_ms: end,
                comment: format!("{} (correction {})", correction.reason, correction.name),
            });
        }
    }
    out
}

impl Alerting {
    /// Makes and expires the silences of muting corrections (each SLO evaluation cycle).
    pub async fn sync_correction_silences(&self, corrections: &[Arc<Correction>], definitions: &[Arc<SloDefinition>]) {
        let now_ms = self.now_ms();
        let now = to_utc(now_ms);
        let wanted = wanted(corrections, definitions, now_ms);
        let changed = {
            let mut silences = self.inner.silences.lock();
            let ours: Vec<(String, String, String, i64, SilenceState)> = silences
                .all()
                .iter()
                .filter(|s| s.created_by.starts_with(CREATED_BY_PREFIX) && s.matchers.len() == 1)
                .map(|s| {
                    (
                        s.id.clone(),
                        s.created_by.clone(),
                        s.matchers[0].value.clone(),
                        s.ends_at.timestamp_millis(),
                        s.state(now),
                    )
                })
                .collect();
            let same = |w: &Wanted, (_, by, pattern, ends, _): &(String, String, String, i64, SilenceState)| {
                w.created_by == *by && w.pattern == *pattern && w.ends_ms == *ends
            };
            let mut changed = false;
            for silence in &ours {
                if silence.4 != SilenceState::Expired && !wanted.iter().any(|w| same(w, silence)) {
                    changed |= silences.expire(&silence.0, now).is_ok();
                }
            }
            for w in wanted.iter().filter(|w| !ours.iter().any(|s| same(w, s))) {
                let request = SilenceRequest {
                    id: None,
                    matchers: vec![MatcherInput::Object(ApiMatcher {
                        name: "slo".into(),
                        value: w.pattern.clone(),
                        is_regex: true,
                        is_equal: true,
                    })],
                    starts_at: Some(to_utc(w.starts_ms)),
                    ends_at: to_utc(w.ends_ms),
                    created_by: w.created_by.clone(),
                    comment: w.comment.clone(),
                };
                match silences.upsert(request, now) {
                    Ok(_) => changed = true,
                    Err(error) => {
                        tracing::warn!(%error, correction = %w.created_by, "a correction's silence was refused")
                    }
                }
            }
            changed
        };
        if changed {
            self.save_silences().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn correction(text: &str) -> Arc<Correction> {
        let known = ["pay".to_string(), "cart".to_string()].into();
        Arc::new(vigil_query::slo::correction_book::parse_document(text, "t", 0, Some(&known)).unwrap())
    }

    #[test]
    fn a_muting_correction_wants_one_silence_per_coming_occurrence_over_its_future_part() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-28T02:30:00Z").unwrap().timestamp_millis();
        let daily = correction(
            "{apiVersion: vigil/v1, kind: Correction, metadata: {name: nightly}, spec: {reason: backups, every: day, at: '02:00', duration: 1h, scope: {slos: [pay, cart]}}}",
        );
        let exclude_only = correction(
            "{apiVersion: vigil/v1, kind: Correction, metadata: {name: quiet}, spec: {reason: r, every: day, at: '02:00', duration: 1h, scope: {slos: [pay]}, effect: [exclude]}}",
        );
        let definitions: Vec<Arc<SloDefinition>> = ["pay", "cart", "home"]
            .iter()
            .map(|n| {
                let text = format!(
                    "apiVersion: vigil/v1\nkind: SLO\nmetadata: {{name: {n}, service: s}}\nspec: {{objective: 99, window: 1h, sli: {{ratio: {{bad: 'e', total: 't'}}}}}}\n"
                );
                Arc::new(vigil_query::slo::load_texts(&[("s.yaml".into(), text)], None).unwrap().remove(0))
            })
            .collect();
        let got = wanted(&[daily, exclude_only], &definitions, now);
        let hour = 3_600_000;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].starts_ms, got[0].ends_ms), (now, now + hour / 2), "the rest of tonight's");
        assert_eq!((got[1].starts_ms, got[1].ends_ms), (now + 23 * hour + hour / 2, now + 24 * hour + hour / 2));
        assert_eq!(got[0].pattern, "cart|pay");
        assert_eq!(got[0].created_by, "correction/nightly");
    }
}
