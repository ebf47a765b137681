//! Loading: the example files, the three dialects agreeing, and bad files reported at the
//! right place with the right words.

use std::time::Duration;

use super::model::{Budgeting, CalendarUnit, PromQlKind, Severity, Sli, Window};
use super::*;

fn fixture(name: &str) -> (String, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/slos").join(name);
    (name.to_string(), std::fs::read_to_string(path).unwrap())
}

fn load(name: &str, text: &str) -> Result<Vec<SloDefinition>, Vec<LoadError>> {
    load_texts(&[(name.to_string(), text.to_string())], None)
}

fn error(text: &str) -> String {
    let errors = load("bad.yaml", text).expect_err("must not load");
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

#[test]
fn every_example_file_loads() {
    let vigil = load_texts(&[fixture("checkout.vigil.yaml")], None).unwrap();
    let names: Vec<&str> = vigil.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["checkout-availability", "checkout-latency", "payment-spans", "fraud-model-drift"]);
    assert_eq!(vigil[0].objective, 0.999);
    assert_eq!(vigil[0].window, Window::Rolling(Duration::from_secs(30 * 86400)));
    assert_eq!(vigil[0].alerting.page.receivers, ["oncall-email"]);
    assert!(matches!(&vigil[0].sli, Sli::Ratio { bad: Some(_), good: None, .. }));
    assert_eq!(
        vigil[1].sli,
        Sli::Latency { histogram: "http_request_duration_seconds{job=\"checkout\"}".into(), threshold: 0.3 }
    );
    assert!(matches!(&vigil[2].sli, Sli::Spans { max_duration: Some(d), .. } if *d == Duration::from_secs(1)));
    assert_eq!(vigil[3].budgeting, Budgeting::Timeslices { slice: Duration::from_secs(3600), target: 1.0 });

    let openslo = load_texts(&[fixture("checkout.openslo.yaml")], None).unwrap();
    assert_eq!(openslo.len(), 1);
    assert_eq!(openslo[0].name, "checkout-availability-openslo");
    assert_eq!(openslo[0].objective, 0.999);
    assert_eq!(openslo[0].window, Window::Rolling(Duration::from_secs(28 * 86400)));
    assert!(matches!(&openslo[0].sli, Sli::PromQl { kind: PromQlKind::Counter, good: Some(_), .. }));
    assert_eq!(openslo[0].alerting.conditions.len(), 1);
    assert_eq!(openslo[0].alerting.conditions[0].burn_rate, 14.4);
    assert_eq!(openslo[0].alerting.page.receivers, ["oncall-email"]);

    let sloth = load_texts(&[fixture("checkout.sloth.yaml")], None).unwrap();
    assert_eq!(sloth[0].name, "checkout-requests-availability");
    assert_eq!(sloth[0].alerting.name, "CheckoutHighErrorRate");
    assert_eq!(sloth[0].alerting.page.labels.get("severity").map(String::as_str), Some("page"));
    assert!(matches!(&sloth[0].sli, Sli::PromQl { kind: PromQlKind::Rate, bad: Some(_), .. }));
}

#[test]
fn calendar_windows_and_budgeting_methods() {
    let slos = load("c.yaml", "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: a, service: s}\nspec:\n  objective: 99\n  window: {calendar: month, timeZone: Europe/Paris}\n  budgeting: {timeslices: {slice: 5m, target: 0.95}}\n  sli: {ratio: {good: 'ok_total', total: 'all_total'}}\n").unwrap();
    assert_eq!(slos[0].window, Window::Calendar { unit: CalendarUnit::Month, time_zone: chrono_tz::Europe::Paris });
    assert_eq!(slos[0].budgeting, Budgeting::Timeslices { slice: Duration::from_secs(300), target: 0.95 });
    let sloth_windows = "apiVersion: sloth.slok.dev/v1\nkind: AlertWindows\nspec:\n  sloPeriod: 28d\n  page:\n    quick: {errorBudgetPercent: 8, shortWindow: 5m, longWindow: 1h}\n    slow: {errorBudgetPercent: 12.5, shortWindow: 30m, longWindow: 6h}\n  ticket:\n    quick: {errorBudgetPercent: 20, shortWindow: 2h, longWindow: 1d}\n    slow: {errorBudgetPercent: 42, shortWindow: 6h, longWindow: 3d}\n";
    let slos =
        load_texts(&[fixture("checkout.sloth.yaml"), ("windows.yaml".into(), sloth_windows.into())], None).unwrap();
    assert_eq!(slos[0].window, Window::Rolling(Duration::from_secs(28 * 86400)));
    let page = &slos[0].alerting.conditions[0];
    assert_eq!((page.severity, page.long_window.as_secs()), (Severity::Page, 3600));
    assert!((page.burn_rate - 0.08 * 28.0 * 24.0).abs() < 1e-9);
}

#[test]
fn bad_files_say_where_and_what_to_do() {
    let head = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: a, service: s}\nspec:\n";
    let ratio = "  sli: {ratio: {bad: 'errors_total', total: 'requests_total'}}\n";
    assert_eq!(
        error(&format!("{head}  objectiv: 99.9\n  window: 30d\n{ratio}")),
        "bad.yaml:5:3: unknown field `objectiv`, expected one of description, objective, window, budgeting, sli, group_by, alerting, policy (hint: did you mean `objective`?)"
    );
    assert_eq!(
        error(&format!("{head}  objective: 100\n  window: 30d\n{ratio}")),
        "bad.yaml:5:14: objective 100 is out of range (hint: a percentage strictly between 0 and 100, e.g. 99.9)"
    );
    assert_eq!(
        error(&format!("{head}  objective: ninety\n  window: 30d\n{ratio}")),
        "bad.yaml:5:14: invalid floating point (hint: write a number here, e.g. 99.9)"
    );
    assert_eq!(
        error(&format!("{head}  objective: 99\n  window: 30days\n{ratio}")),
        "bad.yaml:6:11: invalid duration \"30days\" (hint: use a number and a unit (ms, s, m, h, d, w, y), e.g. 30d or 5m)"
    );
    assert_eq!(
        error(&format!(
            "{head}  objective: 99\n  window: 30d\n  sli: {{ratio: {{bad: 'rate(x[5m])', total: 'requests_total'}}}}\n"
        )),
        "bad.yaml:7:22: \"rate(x[5m])\" is not a series selector (hint: write a metric and label matchers, e.g. http_requests_total{job=\"api\", code=~\"5..\"})"
    );
    assert_eq!(
        error("apiVersion: vigil/v2\nkind: SLO\n"),
        "bad.yaml:1:13: unknown apiVersion \"vigil/v2\" (hint: vigil/v1, openslo/v1 or sloth.slok.dev/v1 (or version: prometheus/v1))"
    );
    let dangling = "apiVersion: openslo/v1\nkind: Service\nmetadata: {name: checkout}\nspec: {}\n---\napiVersion: openslo/v1\nkind: SLO\nmetadata: {name: x}\nspec:\n  service: checkout\n  indicatorRef: checkout-good\n  timeWindow: [{duration: 28d, isRolling: true}]\n  budgetingMethod: Occurrences\n  objectives: [{target: 0.99}]\n";
    assert_eq!(
        error(dangling),
        "bad.yaml:11:17: unresolved SLI reference \"checkout-good\" (hint: define an OpenSLO SLI named \"checkout-good\" in one of the files given)"
    );
    let typo_kind = "apiVersion: openslo/v1\nkind: SLi\nmetadata: {name: x}\nspec: {}\n";
    assert_eq!(
        error(typo_kind),
        "bad.yaml:2:7: unknown OpenSLO kind \"SLi\" (hint: did you mean `SLI`? one of SLO, SLI, DataSource, Service, AlertPolicy, AlertCondition, AlertNotificationTarget)"
    );
    let sloth = "version: prometheus/v1\nservice: s\nslos:\n  - name: a\n    objective: 0\n    sli: {events: {error_query: 'sum(rate(e[{{.window}}]))', total_query: 'sum(rate(t[{{.window}}]))'}}\n";
    assert_eq!(
        error(sloth),
        "bad.yaml:5:16: objective 0 is out of range (hint: a percentage strictly between 0 and 100, e.g. 99.9)"
    );
    // PromQL SLIs that cannot give per-minute events, in every dialect.
    let range = "version: prometheus/v1\nservice: s\nslos:\n  - name: a\n    objective: 99\n    sli: {events: {error_query: 'e[{{.window}}]', total_query: 'sum(rate(t[{{.window}}]))'}}\n";
    assert_eq!(
        error(range),
        "bad.yaml:6:33: \"e[{{.window}}]\" cannot be an SLI: it is a range vector (hint: take rate(), increase() or another function of the range, e.g. sum(rate(x[5m])))"
    );
    let pinned = format!(
        "{head}  objective: 99\n  window: 30d\n  sli: {{promql: {{bad: 'sum(rate(e[5m] @ 1700000000))', total: 'sum(rate(t[5m]))'}}}}\n"
    );
    assert_eq!(
        error(&pinned),
        "bad.yaml:7:23: \"sum(rate(e[5m] @ 1700000000))\" cannot be an SLI: an `@` modifier pins it to one time, while an SLI is evaluated at every minute (hint: remove the `@` modifier)"
    );
    let ungrouped = format!(
        "{head}  objective: 99\n  window: 30d\n  group_by: [route]\n  sli: {{promql: {{bad: 'sum by (route) (rate(e[5m]))', total: 'sum(rate(t[5m]))'}}}}\n"
    );
    assert_eq!(
        error(&ungrouped),
        "bad.yaml:8:62: the query's aggregation drops \"route\", which the SLO is grouped by: every group would read the same series (hint: aggregate by (route) or leave the label out of group_by)"
    );
    let grouped = format!(
        "{head}  objective: 99\n  window: 30d\n  group_by: [route]\n  sli: {{promql: {{bad: 'sum by (route) (rate(e[5m]))', total: 'sum without (code) (rate(t[5m]))'}}}}\n"
    );
    assert!(load_texts(&[("ok.yaml".into(), grouped)], None).is_ok());
    // Every error of a load is reported, not just the first.
    let two =
        format!("{head}  objective: 100\n  window: 30d\n{ratio}---\n{head}  objective: 99\n  window: 1x\n{ratio}");
    assert_eq!(error(&two).lines().count(), 2);
}

#[test]
fn receivers_named_by_slos_must_exist_when_known() {
    let text = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: a, service: s}\nspec:\n  objective: 99\n  window: 30d\n  sli: {ratio: {bad: 'e_total', total: 't_total'}}\n  alerting: {page: {receivers: [oncal-email]}}\n";
    let known = std::collections::BTreeSet::from(["oncall-email".to_string()]);
    let errors = load_texts(&[("r.yaml".into(), text.into())], Some(&known)).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "r.yaml:8:33: unknown receiver \"oncal-email\" (hint: did you mean `oncall-email`?)"
    );
    assert!(load_texts(&[("r.yaml".into(), text.into())], None).is_ok());
}

#[test]
fn files_are_told_apart_by_content() {
    assert_eq!(file_kind("apiVersion: vigil/v1\n"), FileKind::Slo);
    assert_eq!(file_kind("version: \"prometheus/v1\"\n"), FileKind::Slo);
    assert_eq!(file_kind("groups:\n  - name: x\n"), FileKind::Rules);
    assert_eq!(file_kind("storage:\n  retention: 1d\n"), FileKind::Config);
}

#[test]
fn error_budget_policies_load_and_bad_ones_say_where() {
    let head = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: pay, service: checkout}\nspec:\n  objective: 99\n  window: 30d\n  sli: {ratio: {bad: e, total: t}}\n";
    for (written, fraction) in [("10%", 0.10), ("2.5", 0.025), ("0%", 0.0)] {
        let text = format!("{head}  policy: {{freeze_below: {written}, freeze_while_paging: true}}\n");
        let slo = load("p.yaml", &text).unwrap().remove(0);
        let policy = slo.policy.expect("a policy");
        assert_eq!((policy.freeze_below, policy.freeze_while_paging), (Some(fraction), true), "{written}");
    }
    assert_eq!(load("p.yaml", head).unwrap()[0].policy, None, "no policy, no freeze");
    let bad = error(&format!("{head}  policy: {{freeze_below: 100%}}\n"));
    assert!(bad.starts_with("bad.yaml:8:") && bad.contains("freeze_below is not a percentage"), "{bad}");
    let bad = error(&format!("{head}  policy: {{freeze_below: lots}}\n"));
    assert!(bad.contains("bad.yaml:8:") && bad.contains("e.g. 10%"), "{bad}");
    let unknown = error(&format!("{head}  policy: {{freeze_when: always}}\n"));
    assert!(unknown.contains("bad.yaml:8:") && unknown.contains("freeze_when"), "{unknown}");
}

#[test]
fn composite_parts_resolve_or_say_where() {
    let part = |name: &str| {
        format!(
            "apiVersion: vigil/v1\nkind: SLO\nmetadata: {{name: {name}, service: s}}\nspec:\n  objective: 99\n  window: 30d\n  sli: {{ratio: {{bad: e, total: t}}}}\n"
        )
    };
    let composite = |parts: &str| {
        format!(
            "apiVersion: vigil/v1\nkind: SLO\nmetadata: {{name: c, service: s}}\nspec:\n  objective: 99\n  window: 30d\n  sli:\n    composite: {{weighting: declared, parts: {parts}}}\n"
        )
    };
    let text = format!("{}---\n{}---\n{}", part("a"), part("b"), composite("[{slo: a, weight: 2}, {slo: b}]"));
    let slos = load("c.yaml", &text).unwrap();
    let c = slos.iter().find(|s| s.name == "c").unwrap();
    let model::Sli::Composite { parts, weighting } = &c.sli else { panic!("{:?}", c.sli) };
    assert_eq!(*weighting, model::Weighting::Declared);
    assert_eq!(
        parts.iter().map(|p| (p.name.as_str(), p.weight, p.slo.is_some())).collect::<Vec<_>>(),
        [("a", 2.0, true), ("b", 1.0, true)]
    );
    let missing = error(&format!("{}---\n{}", part("a"), composite("[{slo: a}, {slo: nope}]")));
    assert!(missing.starts_with("bad.yaml:16:") && missing.contains("no SLO named \"nope\" to compose"), "{missing}");
    let one = error(&composite("[{slo: a}]"));
    assert!(one.contains("at least two parts"), "{one}");
    let weight =
        error(&format!("{}---\n{}---\n{}", part("a"), part("b"), composite("[{slo: a, weight: 0}, {slo: b}]")));
    assert!(weight.contains("weight 0 is not positive"), "{weight}");
    let nested = error(&format!(
        "{}---\n{}---\n{}---\n{}",
        part("a"),
        part("b"),
        composite("[{slo: a}, {slo: b}]"),
        composite("[{slo: a}, {slo: c}]").replace("name: c,", "name: d,")
    ));
    assert!(nested.contains("itself composite"), "{nested}");
}
