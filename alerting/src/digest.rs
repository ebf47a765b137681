//! The report digest: a compliance report (`slo::report`) mailed as HTML with a text
//! alternative to the receivers a config names (`reports.receivers`), on a schedule or when
//! asked.

use askama::Template;
use vigil_query::slo::report::Report;

use crate::Alerting;
use crate::slo_alerts::percent as percent_text;

/// One SLO's row of the mail.
pub struct DigestRow {
    pub slo: String,
    pub service: String,
    pub sli: String,
    pub objective: String,
    pub budget_spent: String,
    pub bad_minutes: u64,
    pub pages: usize,
    pub tickets: usize,
    pub verdict: &'static str,
    /// The corrections applied, or empty.
    pub corrections: String,
}

#[derive(Template)]
#[template(path = "digest.html")]
struct DigestHtml<'a> {
    subject: &'a str,
    rows: &'a [DigestRow],
    link: &'a str,
    met: usize,
    missed: usize,
}

#[derive(Template)]
#[template(path = "digest.txt")]
struct DigestText<'a> {
    subject: &'a str,
    rows: &'a [DigestRow],
    link: &'a str,
    met: usize,
    missed: usize,
}

/// Subject, text and HTML of a report's mail; `external_url` makes the link to its page.
pub fn render(report: &Report, external_url: &str) -> Result<(String, String, String), askama::Error> {
    let rows: Vec<DigestRow> = report
        .slos
        .iter()
        .map(|r| DigestRow {
            slo: r.slo.clone(),
            service: r.service.clone(),
            sli: r.sli.map_or_else(|| "–".into(), percent_text),
            objective: percent_text(r.objective),
            budget_spent: r.budget_spent.map_or_else(|| "–".into(), percent_text),
            bad_minutes: r.bad_minutes,
            pages: r.pages,
            tickets: r.tickets,
            verdict: r.verdict(),
            corrections: r.corrections_note(),
        })
        .collect();
    let met = rows.iter().filter(|r| r.verdict == "met").count();
    let missed = rows.iter().filter(|r| r.verdict == "missed").count();
    let subject = format!("SLO report {}: {met} met, {missed} missed", report.period.name);
    let link = format!(
        "{}/reports?period={}&tz={}",
        external_url.trim_end_matches('/'),
        report.period.name,
        report.period.time_zone
    );
    let html = DigestHtml { subject: &subject, rows: &rows, link: &link, met, missed }.render()?;
    let text = DigestText { subject: &subject, rows: &rows, link: &link, met, missed }.render()?;
    Ok((subject, text, html))
}

impl Alerting {
    /// Mails `report` to each of `receivers`; the failures, by receiver.
    pub async fn send_report(&self, report: &Report, receivers: &[String]) -> Vec<(String, String)> {
        let (subject, text, html) = match render(report, &self.inner.options.external_url) {
            Ok(parts) => parts,
            Err(e) => return receivers.iter().map(|r| (r.clone(), format!("rendering the report: {e}"))).collect(),
        };
        let mut failures = Vec::new();
        for receiver in receivers {
            let notifier = self.inner.notifiers.read().get(receiver).cloned();
            let Some(notifier) = notifier else {
                failures.push((receiver.clone(), "no such receiver".to_string()));
                continue;
            };
            let sent =
                notifier.send_document(&subject, (text.clone(), html.clone()), self.inner.options.max_attempts).await;
            if let Err(e) = sent {
                failures.push((receiver.clone(), e.message));
            }
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use vigil_query::slo::report::{Period, SloReport};

    use super::*;

    #[test]
    fn a_digest_names_each_slo_and_its_verdict() {
        let period = Period::parse("2026-11", "UTC").unwrap();
        let row = |slo: &str, sli: Option<f64>, met: Option<bool>| SloReport {
            slo: slo.into(),
            service: "shop".into(),
            team: String::new(),
            objective: 0.99,
            sli,
            good: 0.0,
            total: 0.0,
            budget_spent: sli.map(|s| (1.0 - s) / 0.01),
            bad_minutes: 7,
            met,
            pages: 2,
            tickets: 1,
            corrections: vec!["db-upgrade".into()],
            excluded_minutes: 120,
            error: None,
        };
        let report = Report {
            until_ms: period.end_ms,
            period,
            slos: vec![
                row("<checkout>", Some(0.97), Some(false)),
                row("search", Some(0.995), Some(true)),
                row("idle", None, None),
            ],
            services: Vec::new(),
            teams: Vec::new(),
        };
        let (subject, text, html) = render(&report, "http://vigil:9400/").unwrap();
        assert_eq!(subject, "SLO report 2026-11: 1 met, 1 missed");
        assert!(text.contains("<checkout>: missed, SLI 97%") && text.contains("300% of the budget"), "{text}");
        assert!(text.contains("corrected: db-upgrade (120 min excluded)"), "{text}");
        assert!(html.contains("corrected: db-upgrade (120 min excluded)"), "{html}");
        assert!(html.contains("&lt;checkout&gt;") || html.contains("&#60;checkout&#62;"), "{html}");
        assert!(!html.contains("<checkout>"));
        assert!(
            html.contains("http://vigil:9400/reports?period=2026-11&amp;tz=UTC")
                || html.contains("period=2026-11&#38;tz=UTC"),
            "{html}"
        );
    }
}
