//! Compliance reports: per SLO, and per service and team, over a calendar period (a week, a
//! month, a quarter, in a time zone): whether the objective was met, the SLI, the share of
//! the period's error budget spent, the minutes that were bad, and the pages and tickets.
//!
//! The figures come from the SLIs' own sources read again over the period, a day at a time
//! as a backfill reads them (so a report of a past month is exact whatever the SLO's window
//! and whatever the evaluator holds), and the alerts from the `alerts` table.

use chrono::{Datelike, NaiveDate, TimeZone};
use serde::Serialize;

use super::correction::{Correction, Exclusions};
use super::history::alert_episodes;
use super::model::SloDefinition;
use super::rollup::MINUTE_MS;
use super::scans::Scans;
use super::sources::{self, SourceState};
use crate::QueryEngine;

/// How far before a period a counter's previous sample is looked for.
const LOOKBACK_MS: i64 = 15 * MINUTE_MS;
const DAY_MS: i64 = 86_400_000;

/// A calendar period in a time zone: `2026-11` (a month), `2026-W47` (an ISO week),
/// `2026-Q4` (a quarter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Period {
    pub name: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub time_zone: String,
}

/// Why a period cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeriodError {
    #[error("period {0:?} is not a month (2026-11), an ISO week (2026-W47) or a quarter (2026-Q4)")]
    Syntax(String),
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

fn local_midnight(tz: chrono_tz::Tz, date: NaiveDate) -> i64 {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    // A midnight skipped by a DST change starts the day at the first instant that exists.
    tz.from_local_datetime(&midnight)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(midnight + chrono::Duration::hours(1))).earliest())
        .map_or(0, |t| t.timestamp_millis())
}

impl Period {
    pub fn parse(text: &str, time_zone: &str) -> Result<Period, PeriodError> {
        let tz: chrono_tz::Tz = time_zone.parse().map_err(|_| PeriodError::TimeZone(time_zone.to_string()))?;
        let bad = || PeriodError::Syntax(text.to_string());
        let (year, rest) = text.trim().split_once('-').ok_or_else(bad)?;
        let year: i32 = year.parse().ok().filter(|y| (1970..=9999).contains(y)).ok_or_else(bad)?;
        let (first, next) = if let Some(week) = rest.strip_prefix('W') {
            let week: u32 = week.parse().map_err(|_| bad())?;
            let monday = NaiveDate::from_isoywd_opt(year, week, chrono::Weekday::Mon).ok_or_else(bad)?;
            (monday, monday + chrono::Duration::days(7))
        } else if let Some(quarter) = rest.strip_prefix('Q') {
            let quarter: u32 = quarter.parse().ok().filter(|q| (1..=4).contains(q)).ok_or_else(bad)?;
            let first = NaiveDate::from_ymd_opt(year, 3 * quarter - 2, 1).ok_or_else(bad)?;
            let next = if quarter == 4 {
                NaiveDate::from_ymd_opt(year + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(year, 3 * quarter + 1, 1)
            };
            (first, next.ok_or_else(bad)?)
        } else {
            let month: u32 = rest.parse().ok().filter(|m| (1..=12).contains(m)).ok_or_else(bad)?;
            let first = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)?;
            let next = if month == 12 {
                NaiveDate::from_ymd_opt(year + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(year, month + 1, 1)
            };
            (first, next.ok_or_else(bad)?)
        };
        Ok(Period {
            name: text.trim().to_string(),
            start_ms: local_midnight(tz, first),
            end_ms: local_midnight(tz, next),
            time_zone: time_zone.to_string(),
        })
    }

    /// The period of the same kind before or after this one (`step` −1 or +1).
    pub fn neighbour(&self, step: i32) -> Option<Period> {
        let (year, rest) = self.name.split_once('-')?;
        let year: i32 = year.parse().ok()?;
        let name = if let Some(week) = rest.strip_prefix('W') {
            let monday = NaiveDate::from_isoywd_opt(year, week.parse().ok()?, chrono::Weekday::Mon)?;
            let other = monday + chrono::Duration::days(7 * i64::from(step));
            let iso = other.iso_week();
            format!("{}-W{:02}", iso.year(), iso.week())
        } else if let Some(quarter) = rest.strip_prefix('Q') {
            let index = year * 4 + quarter.parse::<i32>().ok()? - 1 + step;
            format!("{}-Q{}", index.div_euclid(4), index.rem_euclid(4) + 1)
        } else {
            let index = year * 12 + rest.parse::<i32>().ok()? - 1 + step;
            format!("{}-{:02}", index.div_euclid(12), index.rem_euclid(12) + 1)
        };
        Period::parse(&name, &self.time_zone).ok()
    }

    /// The month holding `at_ms` in `time_zone`.
    pub fn month_of(at_ms: i64, time_zone: &str) -> Result<Period, PeriodError> {
        Period::containing("month", at_ms, time_zone)
    }

    /// The `week`, `month` or `quarter` holding `at_ms` in `time_zone`.
    pub fn containing(kind: &str, at_ms: i64, time_zone: &str) -> Result<Period, PeriodError> {
        let tz: chrono_tz::Tz = time_zone.parse().map_err(|_| PeriodError::TimeZone(time_zone.to_string()))?;
        let local = tz.timestamp_millis_opt(at_ms).single().map(|t| t.date_naive()).unwrap_or_default();
        let name = match kind {
            "week" => {
                let week = local.iso_week();
                format!("{}-W{:02}", week.year(), week.week())
            }
            "quarter" => format!("{}-Q{}", local.year(), (local.month() - 1) / 3 + 1),
            "month" => format!("{}-{:02}", local.year(), local.month()),
            other => return Err(PeriodError::Syntax(other.to_string())),
        };
        Period::parse(&name, time_zone)
    }
}

/// One SLO over a period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SloReport {
    pub slo: String,
    pub service: String,
    pub team: String,
    pub objective: f64,
    /// None without events in the period.
    pub sli: Option<f64>,
    pub good: f64,
    pub total: f64,
    /// Bad events over the budget the period's events allowed (1 = all of it).
    pub budget_spent: Option<f64>,
    /// Minutes with events whose ratio was below the objective.
    pub bad_minutes: u64,
    pub met: Option<bool>,
    pub pages: usize,
    pub tickets: usize,
    /// The corrections that took events of the period out of its figures.
    pub corrections: Vec<String>,
    /// Minutes of the period whose events those corrections excluded.
    pub excluded_minutes: u64,
    /// Why the SLO has no figures (its SLI could not be read).
    pub error: Option<String>,
}

impl SloReport {
    /// `db-upgrade, nightly (150 min excluded)`, or empty without corrections.
    pub fn corrections_note(&self) -> String {
        if self.corrections.is_empty() {
            return String::new();
        }
        format!("{} ({} min excluded)", self.corrections.join(", "), self.excluded_minutes)
    }

    /// `met`, `missed`, or `no data` without events in the period.
    pub fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "no data",
        }
    }
}

/// SLOs of one service or team pooled: their events summed, met when every SLO met its own.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupReport {
    pub name: String,
    pub slos: usize,
    pub met: usize,
    pub missed: usize,
    pub good: f64,
    pub total: f64,
    pub bad_minutes: u64,
    pub pages: usize,
    pub tickets: usize,
}

/// A period's report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub period: Period,
    /// Where the report ends when the period has not (now), else the period's end.
    pub until_ms: i64,
    pub slos: Vec<SloReport>,
    pub services: Vec<GroupReport>,
    pub teams: Vec<GroupReport>,
}

/// Good and total per minute of one SLO over `[from_ms, to_ms)`, read a day at a time,
/// without the `excluded` minutes.
async fn minutes(
    engine: &QueryEngine,
    definition: &SloDefinition,
    from_ms: i64,
    to_ms: i64,
    excluded: &Exclusions,
) -> Result<Vec<(f64, f64)>, sources::SourceError> {
    let mut state = SourceState::default();
    let mut out = Vec::new();
    let mut day = from_ms;
    let mut read_from = from_ms - LOOKBACK_MS;
    while day < to_ms {
        let day_end = (day + DAY_MS).min(to_ms);
        let scans = Scans::new();
        let counts = sources::fetch(engine, &scans, definition, read_from, day_end, day_end, &mut state).await?;
        for minutes in counts.into_values() {
            out.extend(minutes.range(day..day_end).filter(|(m, _)| !excluded.excludes(**m)).map(|(_, c)| *c));
        }
        read_from = day_end;
        day = day_end;
    }
    Ok(out)
}

fn group(name: String, reports: &[&SloReport]) -> GroupReport {
    GroupReport {
        name,
        slos: reports.len(),
        met: reports.iter().filter(|r| r.met == Some(true)).count(),
        missed: reports.iter().filter(|r| r.met == Some(false)).count(),
        good: reports.iter().map(|r| r.good).sum(),
        total: reports.iter().map(|r| r.total).sum(),
        bad_minutes: reports.iter().map(|r| r.bad_minutes).sum(),
        pages: reports.iter().map(|r| r.pages).sum(),
        tickets: reports.iter().map(|r| r.tickets).sum(),
    }
}

/// The report of `definitions` over `period`, up to `now_ms` when the period has not ended,
/// with the events `corrections` exclude taken out.
pub async fn report(
    engine: &QueryEngine,
    definitions: &[&SloDefinition],
    corrections: &[std::sync::Arc<Correction>],
    period: Period,
    now_ms: i64,
) -> Report {
    let until = period.end_ms.min(now_ms.div_euclid(MINUTE_MS) * MINUTE_MS);
    let mut slos = Vec::new();
    for definition in definitions.iter().copied() {
        let team = definition.labels.get("team").cloned().unwrap_or_default();
        let episodes =
            alert_episodes(engine, &definition.name, period.start_ms, until, 10_000).await.unwrap_or_default();
        let started = |severity: &str| {
            episodes
                .iter()
                .filter(|e| e.severity == severity && (period.start_ms..until).contains(&e.started_ms))
                .count()
        };
        let (pages, tickets) = (started("page"), started("ticket"));
        let excluded = Exclusions::of(corrections.iter().map(|c| &**c), definition, period.start_ms, until);
        let applied: Vec<String> = corrections
            .iter()
            .filter(|c| c.exclude && c.scope.covers(definition) && !c.occurrences(period.start_ms, until).is_empty())
            .map(|c| c.name.clone())
            .collect();
        let excluded_minutes = excluded
            .ranges()
            .iter()
            .map(|(from, to)| ((*to).min(until) - (*from).max(period.start_ms)).max(0) / MINUTE_MS)
            .sum::<i64>() as u64;
        let mut row = SloReport {
            slo: definition.name.clone(),
            service: definition.service.clone(),
            team,
            objective: definition.objective,
            sli: None,
            good: 0.0,
            total: 0.0,
            budget_spent: None,
            bad_minutes: 0,
            met: None,
            pages,
            tickets,
            corrections: applied,
            excluded_minutes,
            error: None,
        };
        match minutes(engine, definition, period.start_ms, until, &excluded).await {
            Ok(minutes) => {
                row.good = minutes.iter().map(|m| m.0).sum();
                row.total = minutes.iter().map(|m| m.1).sum();
                row.bad_minutes =
                    minutes.iter().filter(|(good, total)| *total > 0.0 && good / total < definition.objective).count()
                        as u64;
                if row.total > 0.0 {
                    let sli = row.good / row.total;
                    row.sli = Some(sli);
                    row.budget_spent = Some((1.0 - sli) / (1.0 - definition.objective));
                    row.met = Some(sli >= definition.objective);
                }
            }
            Err(e) => row.error = Some(e.to_string()),
        }
        slos.push(row);
    }
    slos.sort_by(|a, b| a.slo.cmp(&b.slo));
    let grouped = |key: fn(&SloReport) -> &str| {
        let mut names: Vec<&str> = slos.iter().map(key).filter(|k| !k.is_empty()).collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|name| group(name.to_string(), &slos.iter().filter(|r| key(r) == name).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    let services = grouped(|r| r.service.as_str());
    let teams = grouped(|r| r.team.as_str());
    Report { period, until_ms: until, slos, services, teams }
}

/// The report's SLO rows as CSV (RFC 4180 quoting).
pub fn to_csv(report: &Report) -> String {
    fn field(text: &str) -> String {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_string()
        }
    }
    let number = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    let mut out = String::from(
        "period,slo,service,team,objective,sli,good,total,budget_spent,bad_minutes,met,pages,tickets,error,corrections,excluded_minutes\n",
    );
    for r in &report.slos {
        let cells = [
            field(&report.period.name),
            field(&r.slo),
            field(&r.service),
            field(&r.team),
            r.objective.to_string(),
            number(r.sli),
            r.good.to_string(),
            r.total.to_string(),
            number(r.budget_spent),
            r.bad_minutes.to_string(),
            r.met.map_or_else(String::new, |m| m.to_string()),
            r.pages.to_string(),
            r.tickets.to_string(),
            field(r.error.as_deref().unwrap_or_default()),
            field(&r.corrections.join(" ")),
            r.excluded_minutes.to_string(),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_spans_in_their_zone() {
        let november = Period::parse("2026-11", "UTC").unwrap();
        assert_eq!(november.end_ms - november.start_ms, 30 * DAY_MS);
        let paris = Period::parse("2026-11", "Europe/Paris").unwrap();
        assert_eq!(november.start_ms - paris.start_ms, 3_600_000, "Paris starts November an hour earlier");
        let week = Period::parse("2026-W01", "UTC").unwrap();
        assert_eq!(
            chrono::DateTime::from_timestamp_millis(week.start_ms).unwrap().to_rfc3339(),
            "2025-12-29T00:00:00+00:00"
        );
        let q4 = Period::parse("2026-Q4", "UTC").unwrap();
        assert_eq!(q4.end_ms - q4.start_ms, 92 * DAY_MS);
        // October has a DST change in Paris: 31 days less an hour's difference.
        let october = Period::parse("2026-10", "Europe/Paris").unwrap();
        assert_eq!(october.end_ms - october.start_ms, 31 * DAY_MS + 3_600_000);
        assert_eq!(november.neighbour(-1).unwrap().name, "2026-10");
        assert_eq!(Period::parse("2026-12", "UTC").unwrap().neighbour(1).unwrap().name, "2027-01");
        assert_eq!(q4.neighbour(1).unwrap().name, "2027-Q1");
        assert_eq!(week.neighbour(-1).unwrap().name, "2025-W52");
        for bad in ["2026", "2026-13", "2026-W54", "2026-Q5", "november"] {
            assert_eq!(Period::parse(bad, "UTC"), Err(PeriodError::Syntax(bad.into())), "{bad}");
        }
        assert_eq!(Period::parse("2026-11", "Mars/Olympus"), Err(PeriodError::TimeZone("Mars/Olympus".into())));
        let at = november.start_ms + 20 * DAY_MS;
        assert_eq!(Period::containing("month", at, "UTC").unwrap().name, "2026-11");
        assert_eq!(Period::containing("quarter", at, "UTC").unwrap().name, "2026-Q4");
        assert_eq!(Period::containing("week", at, "UTC").unwrap().name, "2026-W47");
        // 2026-11-30 23:30 UTC is already December in Paris.
        assert_eq!(Period::containing("month", november.end_ms - 1_800_000, "Europe/Paris").unwrap().name, "2026-12");
    }
}
