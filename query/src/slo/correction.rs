//! Budget corrections and maintenance windows, one object (`kind: Correction`): a time range
//! (one-off or recurring), a scope (SLO names or matchers on SLO labels), an effect
//! (`exclude` the range's events from SLI and budget, `mute` the SLO's alerts) and a reason.
//!
//! Excluding is done where events enter the rollups: an excluded minute counts nothing, so
//! every figure read from the rollups (SLI, budget, burn rates, time slices) is as if its
//! events never happened. A correction added, changed or removed recomputes the minutes it
//! touches from stored data (see `SloEvaluator::set_corrections`). Muting is a silence for
//! the SLO's alerts over the window's future part (made by the alerting engine).

use std::collections::BTreeSet;
use std::hash::Hasher;

use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone, Weekday};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::model::SloDefinition;
use super::rollup::MINUTE_MS;
use super::yaml::{self, LoadError, Place};

const DAY_MS: i64 = 24 * 3_600_000;
/// Days a recurrence is expanded over at most in one call: more than any SLO's history.
const MAX_EXPANDED_DAYS: i64 = 800;
/// A scope lists at most this many SLOs and matchers.
pub const MAX_SCOPE_ENTRIES: usize = 100;

/// A correction as loaded: from a file or the API.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Correction {
    pub name: String,
    pub reason: String,
    pub created_by: String,
    /// When it was made (API) or loaded (files), ms.
    pub created_at_ms: i64,
    pub when: When,
    pub scope: Scope,
    /// Its events are taken out of SLI and budget.
    pub exclude: bool,
    /// The SLOs' alerts are silenced while it lasts.
    pub mute: bool,
    /// `file:line`, or `api`.
    pub origin: String,
    /// The document it was written as (kept for API-made corrections, to store them).
    #[serde(skip)]
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum When {
    Once {
        start_ms: i64,
        end_ms: i64,
    },
    /// Every day, or on some days of every week, at a local time, for a duration; between
    /// optional bounds.
    Recurring {
        #[serde(serialize_with = "weekdays")]
        days: Vec<Weekday>,
        #[serde(serialize_with = "time_of_day")]
        at: NaiveTime,
        duration_ms: i64,
        #[serde(serialize_with = "zone")]
        time_zone: chrono_tz::Tz,
        from_ms: Option<i64>,
        until_ms: Option<i64>,
    },
}

fn weekdays<S: serde::Serializer>(days: &[Weekday], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(days.iter().map(|d| d.to_string().to_lowercase()))
}

fn time_of_day<S: serde::Serializer>(at: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.format("%H:%M").to_string())
}

fn zone<S: serde::Serializer>(zone: &chrono_tz::Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(zone.name())
}

/// Which SLOs a correction applies to: those it names, and those all its matchers match
/// (on the SLO's labels, `slo` and `service`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Scope {
    pub slos: Vec<String>,
    #[serde(serialize_with = "matcher_texts")]
    pub matchers: Vec<promql_parser::label::Matcher>,
}

fn matcher_texts<S: serde::Serializer>(matchers: &[promql_parser::label::Matcher], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(matchers.iter().map(|m| m.to_string()))
}

impl Scope {
    pub fn covers(&self, definition: &SloDefinition) -> bool {
        if self.slos.contains(&definition.name) {
            return true;
        }
        !self.matchers.is_empty()
            && self.matchers.iter().all(|m| {
                let value = match m.name.as_str() {
                    "slo" => Some(definition.name.as_str()),
                    "service" => Some(definition.service.as_str()),
                    label => definition.labels.get(label).map(String::as_str),
                };
                m.is_match(value.unwrap_or(""))
            })
    }
}

impl Correction {
    /// Its occurrences overlapping `[from_ms, to_ms)`, oldest first.
    pub fn occurrences(&self, from_ms: i64, to_ms: i64) -> Vec<(i64, i64)> {
        match &self.when {
            When::Once { start_ms, end_ms } => {
                if *start_ms < to_ms && *end_ms > from_ms {
                    vec![(*start_ms, *end_ms)]
                } else {
                    Vec::new()
                }
            }
            When::Recurring { days, at, duration_ms, time_zone, from_ms: lower, until_ms: upper } => {
                let lo = (from_ms - duration_ms).max(lower.unwrap_or(i64::MIN));
                let hi = to_ms.min(upper.unwrap_or(i64::MAX));
                if lo >= hi {
                    return Vec::new();
                }
                let local_date = |ms: i64| {
                    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(time_zone).date_naive())
                };
                let (Some(first), Some(last)) = (local_date(lo.max(hi - MAX_EXPANDED_DAYS * DAY_MS)), local_date(hi))
                else {
                    return Vec::new();
                };
                let mut out = Vec::new();
                let mut date = first.pred_opt().unwrap_or(first);
                while date <= last {
                    if (days.is_empty() || days.contains(&date.weekday()))
                        && let Some(start) = local_start(time_zone, date, *at)
                    {
                        let (start, end) = (
                            start.max(lower.unwrap_or(i64::MIN)),
                            (start + duration_ms).min(upper.unwrap_or(i64::MAX)),
                        );
                        if start < end && start < to_ms && end > from_ms {
                            out.push((start, end));
                        }
                    }
                    let Some(next) = date.succ_opt() else { break };
                    date = next;
                }
                out
            }
        }
    }

    /// Where a one-off correction starts, or a recurring one's first bound (for sorting).
    pub fn first_ms(&self) -> Option<i64> {
        match &self.when {
            When::Once { start_ms, .. } => Some(*start_ms),
            When::Recurring { from_ms, .. } => *from_ms,
        }
    }

    /// `exclude, mute` as written.
    pub fn effects(&self) -> String {
        [(self.exclude, "exclude"), (self.mute, "mute")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, e)| *e)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `date` at `at` in `zone`, in ms; a time that a DST change skips is taken an hour later.
fn local_start(zone: &chrono_tz::Tz, date: NaiveDate, at: NaiveTime) -> Option<i64> {
    let local = date.and_time(at);
    zone.from_local_datetime(&local)
        .earliest()
        .or_else(|| zone.from_local_datetime(&(local + chrono::Duration::hours(1))).earliest())
        .map(|t| t.timestamp_millis())
}

/// The minute buckets an SLO's excluding corrections cover in a span: ranges of bucket
/// starts `[from, to)`, minute-aligned outward, sorted and merged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exclusions {
    ranges: Vec<(i64, i64)>,
}

impl Exclusions {
    pub fn of<'a>(
        corrections: impl IntoIterator<Item = &'a Correction>,
        definition: &SloDefinition,
        from_ms: i64,
        to_ms: i64,
    ) -> Self {
        let mut ranges: Vec<(i64, i64)> = corrections
            .into_iter()
            .filter(|c| c.exclude && c.scope.covers(definition))
            .flat_map(|c| c.occurrences(from_ms, to_ms))
            .map(|(start, end)| (start.div_euclid(MINUTE_MS) * MINUTE_MS, -((-end).div_euclid(MINUTE_MS)) * MINUTE_MS))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Exclusions { ranges: merged }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.ranges
    }

    /// Whether the bucket starting at `minute` is excluded.
    pub fn excludes(&self, minute: i64) -> bool {
        let after = self.ranges.partition_point(|(start, _)| *start <= minute);
        after > 0 && minute < self.ranges[after - 1].1
    }

    /// Where two exclusion sets first differ, if they do.
    pub fn first_difference(&self, other: &Exclusions) -> Option<i64> {
        let (a, b) = (&self.ranges, &other.ranges);
        let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let pick = |r: &[(i64, i64)]| r.get(common).map(|r| r.0);
        match (pick(a), pick(b)) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }
}

/// Identifies what an SLO's excluding corrections take out (0 without any): part of the
/// fingerprint its saved state is kept under, so a restart with other corrections recomputes.
pub fn fingerprint(corrections: &[std::sync::Arc<Correction>], definition: &SloDefinition) -> u64 {
    let mut applied: Vec<String> = corrections
        .iter()
        .filter(|c| c.exclude && c.scope.covers(definition))
        .map(|c| format!("{}{:?}", c.name, c.when))
        .collect();
    if applied.is_empty() {
        return 0;
    }
    applied.sort();
    let mut hasher = fnv::FnvHasher::default();
    for text in applied {
        hasher.write(text.as_bytes());
    }
    hasher.finish().max(1)
}

// ---- YAML ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrectionYaml {
    #[serde(rename = "apiVersion")]
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: Spanned<String>,
    metadata: MetadataYaml,
    spec: SpecYaml,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataYaml {
    name: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecYaml {
    reason: Spanned<String>,
    #[serde(default)]
    created_by: Option<String>,
    #[serde(default)]
    start: Option<Spanned<String>>,
    #[serde(default)]
    end: Option<Spanned<String>>,
    #[serde(default)]
    duration: Option<Spanned<String>>,
    #[serde(default)]
    every: Option<Spanned<String>>,
    #[serde(default)]
    days: Vec<Spanned<String>>,
    #[serde(default)]
    at: Option<Spanned<String>>,
    #[serde(default)]
    time_zone: Option<Spanned<String>>,
    scope: Spanned<ScopeYaml>,
    #[serde(default)]
    effect: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeYaml {
    #[serde(default)]
    slos: Vec<Spanned<String>>,
    #[serde(default)]
    matchers: Vec<Spanned<String>>,
}

fn timestamp(place: &Place, value: &Spanned<String>) -> Result<i64, LoadError> {
    chrono::DateTime::parse_from_rfc3339(value.value.trim()).map(|t| t.timestamp_millis()).map_err(|e| {
        place.at(
            value,
            format!("invalid time {:?}: {e}", value.value),
            Some("RFC 3339, e.g. 2026-11-28T02:00:00Z".into()),
        )
    })
}

fn matcher(place: &Place, value: &Spanned<String>) -> Result<promql_parser::label::Matcher, LoadError> {
    let hint = || Some("a label matcher such as team=\"payments\" or tier=~\"1|2\"".into());
    match promql_parser::parser::parse(&format!("{{{}}}", value.value)) {
        Ok(promql_parser::parser::Expr::VectorSelector(selector)) if selector.matchers.matchers.len() == 1 => {
            Ok(selector.matchers.matchers[0].clone())
        }
        Ok(_) => Err(place.at(value, format!("{:?} is not one label matcher", value.value), hint())),
        Err(e) => Err(place.at(value, format!("invalid matcher {:?}: {e}", value.value), hint())),
    }
}

/// Converts a parsed `kind: Correction` document.
pub fn convert(
    place: &Place,
    doc: CorrectionYaml,
    text: &str,
    created_at_ms: i64,
    origin: String,
) -> Result<(Correction, Vec<Spanned<String>>), LoadError> {
    let spec = doc.spec;
    let name = doc.metadata.name;
    if name.value.is_empty() || name.value.len() > 200 || name.value.chars().any(|c| c.is_control() || c == '/') {
        return Err(place.at(&name, "a correction's name is 1 to 200 characters, no '/'", None));
    }
    if spec.reason.value.trim().is_empty() {
        return Err(place.at(&spec.reason, "say why: the reason is shown beside the correction", None));
    }
    let when = match &spec.every {
        None => {
            for (field, given) in
                [("days", spec.days.first().map(|d| d.referenced)), ("at", spec.at.as_ref().map(|a| a.referenced))]
            {
                if let Some(location) = given {
                    return Err(place.error(
                        location,
                        format!("{field} is for recurring corrections"),
                        Some("add every: day or every: week".into()),
                    ));
                }
            }
            let start = spec.start.as_ref().ok_or_else(|| {
                place.start(
                    "a one-off correction needs start",
                    Some("start: 2026-11-28T02:00:00Z, and end or duration".into()),
                )
            })?;
            let start_ms = timestamp(place, start)?;
            let end_ms = match (&spec.end, &spec.duration) {
                (Some(end), None) => timestamp(place, end)?,
                (None, Some(duration)) => start_ms + yaml::duration(place, duration)?.as_millis() as i64,
                (Some(end), Some(_)) => {
                    return Err(place.at(end, "give end or duration, not both", None));
                }
                (None, None) => {
                    return Err(place.at(start, "a one-off correction needs end or duration", None));
                }
            };
            if end_ms <= start_ms {
                return Err(place.at(start, "the correction ends before it starts", None));
            }
            When::Once { start_ms, end_ms }
        }
        Some(every) => {
            let days = match every.value.as_str() {
                "day" => {
                    if let Some(day) = spec.days.first() {
                        return Err(place.at(day, "days is for every: week", None));
                    }
                    Vec::new()
                }
                "week" => {
                    if spec.days.is_empty() {
                        return Err(place.at(every, "every: week needs days", Some("days: [sat, sun]".into())));
                    }
                    let mut days = Vec::new();
                    for day in &spec.days {
                        let parsed: Weekday = day.value.parse().map_err(|_| {
                            place.at(
                                day,
                                format!("unknown day {:?}", day.value),
                                Some("mon, tue, wed, thu, fri, sat or sun".into()),
                            )
                        })?;
                        days.push(parsed);
                    }
                    days
                }
                other => {
                    return Err(place.at(every, format!("unknown recurrence {other:?}"), Some("day or week".into())));
                }
            };
            let at = spec.at.as_ref().ok_or_else(|| {
                place.at(every, "a recurring correction needs at", Some("at: \"02:00\" (local time)".into()))
            })?;
            let at_time = NaiveTime::parse_from_str(at.value.trim(), "%H:%M").map_err(|_| {
                place.at(at, format!("invalid time of day {:?}", at.value), Some("HH:MM, e.g. \"02:00\"".into()))
            })?;
            let duration = spec
                .duration
                .as_ref()
                .ok_or_else(|| place.at(every, "a recurring correction needs duration", Some("duration: 2h".into())))?;
            let duration_ms = yaml::duration(place, duration)?.as_millis() as i64;
            let period_ms = if every.value == "day" { DAY_MS } else { 7 * DAY_MS };
            if duration_ms <= 0 || duration_ms > period_ms {
                return Err(place.at(
                    duration,
                    format!("the duration must be more than 0 and at most one {}", every.value),
                    None,
                ));
            }
            let time_zone = match &spec.time_zone {
                Some(zone) => super::vigil::time_zone(place, &zone.value, zone)?,
                None => chrono_tz::UTC,
            };
            let from_ms = spec.start.as_ref().map(|s| timestamp(place, s)).transpose()?;
            let until_ms = spec.end.as_ref().map(|e| timestamp(place, e)).transpose()?;
            When::Recurring { days, at: at_time, duration_ms, time_zone, from_ms, until_ms }
        }
    };
    let scope_yaml = &spec.scope.value;
    if scope_yaml.slos.is_empty() && scope_yaml.matchers.is_empty() {
        return Err(place.at(
            &spec.scope,
            "the scope is empty",
            Some("name SLOs (slos: [...]) or match their labels (matchers: ['team=\"payments\"'])".into()),
        ));
    }
    if scope_yaml.slos.len() + scope_yaml.matchers.len() > MAX_SCOPE_ENTRIES {
        return Err(place.at(&spec.scope, format!("a scope has at most {MAX_SCOPE_ENTRIES} entries"), None));
    }
    let scope = Scope {
        slos: scope_yaml.slos.iter().map(|s| s.value.clone()).collect(),
        matchers: scope_yaml.matchers.iter().map(|m| matcher(place, m)).collect::<Result<_, _>>()?,
    };
    let (exclude, mute) = match &spec.effect {
        None => (true, true),
        Some(effect) => {
            let mut set = BTreeSet::new();
            for e in &effect.value {
                if e != "exclude" && e != "mute" {
                    return Err(place.at(
                        effect,
                        format!("unknown effect {e:?}"),
                        Some("exclude, mute, or both".into()),
                    ));
                }
                set.insert(e.as_str());
            }
            if set.is_empty() {
                return Err(place.at(effect, "no effect", Some("exclude, mute, or both".into())));
            }
            (set.contains("exclude"), set.contains("mute"))
        }
    };
    let named = scope_yaml.slos.clone();
    let correction = Correction {
        name: name.value,
        reason: spec.reason.value.trim().to_string(),
        created_by: spec.created_by.unwrap_or_default(),
        created_at_ms,
        when,
        scope,
        exclude,
        mute,
        origin,
        text: text.to_string(),
    };
    Ok((correction, named))
}

/// The scope's SLO names that name no SLO of `known`: (name, a hint).
pub fn unknown_slos<'a>(
    names: impl IntoIterator<Item = &'a String>,
    known: &BTreeSet<String>,
) -> Vec<(String, Option<String>)> {
    names
        .into_iter()
        .filter(|s| !known.contains(*s))
        .map(|s| (s.clone(), yaml::closest(s, known, 3).map(|k| format!("did you mean `{k}`?"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Correction, LoadError> {
        let place = Place { file: "c.yaml", line_offset: 0 };
        let doc: CorrectionYaml = place.parse(text)?;
        convert(&place, doc, text, 0, "c.yaml:1".into()).map(|(c, _)| c)
    }

    fn slo(name: &str, service: &str, team: &str) -> SloDefinition {
        let text = format!(
            "apiVersion: vigil/v1\nkind: SLO\nmetadata: {{name: {name}, service: {service}, labels: {{team: {team}}}}}\nspec: {{objective: 99, window: 1h, sli: {{ratio: {{bad: 'e', total: 't'}}}}}}\n"
        );
        crate::slo::load_texts(&[("s.yaml".into(), text)], None).unwrap().remove(0)
    }

    fn ms(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    const HEAD: &str =
        "apiVersion: vigil/v1\nkind: Correction\nmetadata: {name: upgrade}\nspec:\n  reason: db upgrade\n";

    #[test]
    fn a_one_off_correction_reads_its_range_scope_and_effect() {
        let c = load(&format!(
            "{HEAD}  start: 2026-11-28T02:00:00Z\n  duration: 2h\n  scope: {{slos: [pay]}}\n  effect: [exclude]\n"
        ))
        .unwrap();
        assert_eq!(c.when, When::Once { start_ms: ms("2026-11-28T02:00:00Z"), end_ms: ms("2026-11-28T04:00:00Z") });
        assert!(c.exclude && !c.mute);
        assert_eq!(c.occurrences(0, i64::MAX).len(), 1);
        assert!(c.occurrences(ms("2026-11-28T04:00:00Z"), i64::MAX).is_empty(), "ends where the span starts");
    }

    #[test]
    fn a_weekly_window_recurs_in_its_time_zone_across_dst() {
        let c = load(&format!(
            "{HEAD}  every: week\n  days: [sun]\n  at: \"02:30\"\n  duration: 1h\n  time_zone: Europe/Berlin\n  scope: {{matchers: ['team=\"db\"']}}\n"
        ))
        .unwrap();
        // Berlin leaves summer time on 2026-10-25 at 03:00 (02:30 happens twice: the first).
        let got = c.occurrences(ms("2026-10-17T00:00:00Z"), ms("2026-11-02T00:00:00Z"));
        assert_eq!(
            got,
            vec![
                (ms("2026-10-18T00:30:00Z"), ms("2026-10-18T01:30:00Z")),
                (ms("2026-10-25T00:30:00Z"), ms("2026-10-25T01:30:00Z")),
                (ms("2026-11-01T01:30:00Z"), ms("2026-11-01T02:30:00Z")),
            ]
        );
        // Spring forward (2026-03-29, 02:00 → 03:00): 02:30 does not exist, taken at 03:30.
        let spring = c.occurrences(ms("2026-03-29T00:00:00Z"), ms("2026-03-30T00:00:00Z"));
        assert_eq!(spring, vec![(ms("2026-03-29T01:30:00Z"), ms("2026-03-29T02:30:00Z"))]);
    }

    #[test]
    fn scope_matches_names_or_every_matcher_on_slo_labels() {
        let c = load(&format!("{HEAD}  start: 2026-11-28T02:00:00Z\n  end: 2026-11-28T03:00:00Z\n  scope: {{slos: [a], matchers: ['team=\"db\"', 'service=~\"pg.*\"']}}\n")).unwrap();
        assert!(c.scope.covers(&slo("a", "x", "web")), "named");
        assert!(c.scope.covers(&slo("b", "pg-main", "db")), "every matcher matches");
        assert!(!c.scope.covers(&slo("b", "redis", "db")), "one matcher fails");
    }

    #[test]
    fn exclusions_cover_whole_minutes_and_merge() {
        let mk = |start: &str, end: &str| {
            load(&format!("{HEAD}  start: {start}\n  end: {end}\n  scope: {{slos: [a]}}\n")).unwrap()
        };
        let a = mk("2026-11-28T02:00:30Z", "2026-11-28T02:05:00Z");
        let b = mk("2026-11-28T02:04:00Z", "2026-11-28T02:10:10Z");
        let slo = slo("a", "x", "web");
        let x = Exclusions::of([&a, &b], &slo, 0, i64::MAX);
        assert_eq!(x.ranges(), &[(ms("2026-11-28T02:00:00Z"), ms("2026-11-28T02:11:00Z"))]);
        assert!(x.excludes(ms("2026-11-28T02:00:00Z")) && x.excludes(ms("2026-11-28T02:10:00Z")));
        assert!(!x.excludes(ms("2026-11-28T01:59:00Z")) && !x.excludes(ms("2026-11-28T02:11:00Z")));
        let only_a = Exclusions::of([&a], &slo, 0, i64::MAX);
        assert_eq!(only_a.first_difference(&x), Some(ms("2026-11-28T02:00:00Z")));
        assert_eq!(x.first_difference(&x), None);
        assert_eq!(Exclusions::default().first_difference(&x), Some(ms("2026-11-28T02:00:00Z")));
    }

    #[test]
    fn mistakes_are_reported_at_their_place() {
        let cases = [
            ("  start: 2026-11-28T02:00:00Z\n  scope: {slos: [a]}\n", "needs end or duration"),
            ("  start: yesterday\n  duration: 1h\n  scope: {slos: [a]}\n", "invalid time"),
            ("  start: 2026-11-28T02:00:00Z\n  end: 2026-11-28T01:00:00Z\n  scope: {slos: [a]}\n", "ends before"),
            ("  every: week\n  at: \"02:00\"\n  duration: 1h\n  scope: {slos: [a]}\n", "needs days"),
            ("  every: day\n  at: \"25:00\"\n  duration: 1h\n  scope: {slos: [a]}\n", "invalid time of day"),
            ("  every: day\n  at: \"02:00\"\n  duration: 2d\n  scope: {slos: [a]}\n", "at most one day"),
            ("  start: 2026-11-28T02:00:00Z\n  duration: 1h\n  scope: {}\n", "scope is empty"),
            ("  start: 2026-11-28T02:00:00Z\n  duration: 1h\n  scope: {matchers: ['team']}\n", "matcher"),
            (
                "  start: 2026-11-28T02:00:00Z\n  duration: 1h\n  scope: {slos: [a]}\n  effect: [hide]\n",
                "unknown effect",
            ),
        ];
        for (spec, expected) in cases {
            let error = load(&format!("{HEAD}{spec}")).unwrap_err();
            assert!(error.message.contains(expected), "{spec}: {error}");
            assert!(error.line >= 5, "{spec}: {error}");
        }
    }
}
