use super::*;

const S: i64 = 1000;

fn route(yaml: &str) -> Route {
    let config: RouteConfig = serde_saphyr::from_str(yaml).unwrap();
    Route::compile(Some(&config), None).unwrap().unwrap()
}

fn alert(name: &str, service: &str, severity: &str, starts_s: i64) -> NotifyAlert {
    let labels: Labels = [("alertname", name), ("service", service), ("severity", severity)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    NotifyAlert {
        fingerprint: crate::labels::fingerprint(&labels),
        labels,
        annotations: Labels::new(),
        starts_at_ms: starts_s * S,
        ends_at_ms: None,
        generator_url: String::new(),
        receivers: Vec::new(),
    }
}

const TREE: &str = "receiver: mail
group_by: [alertname, service]
group_wait: 30s
group_interval: 5m
repeat_interval: 4h
routes:
  - matchers: ['severity=\"ticket\"']
    receiver: hook
  - matchers: ['service=~\"pay.*\"']
    receiver: payments
    continue: true
  - matchers: ['service=\"payments\"']
    receiver: finance
";

fn dispatcher() -> Dispatcher {
    let mut d = Dispatcher::default();
    d.configure(Some(route(TREE)), BTreeMap::new());
    d
}

fn never_muted(_: &NotifyAlert) -> bool {
    false
}

#[test]
fn routing_follows_alertmanager_match() {
    let tree = route(TREE);
    let receivers =
        |a: &NotifyAlert| tree.matching(&a.labels).iter().map(|r| r.options.receiver.clone()).collect::<Vec<_>>();
    assert_eq!(receivers(&alert("A", "checkout", "page", 0)), ["mail"], "no child matches: the root");
    assert_eq!(receivers(&alert("A", "checkout", "ticket", 0)), ["hook"], "first match stops");
    assert_eq!(receivers(&alert("A", "payments", "page", 0)), ["payments", "finance"], "continue goes on");
    assert_eq!(receivers(&alert("A", "payments", "ticket", 0)), ["hook"]);
    assert_eq!(tree.routes[0].options.group_interval_ms, 300 * S, "options are inherited");
}

#[test]
fn groups_wait_then_notify_once_then_repeat() {
    let mut d = dispatcher();
    let a = alert("Burn", "checkout", "page", 0);
    d.update(std::slice::from_ref(&a), 0);
    assert!(d.due(29 * S, &never_muted).is_empty(), "group_wait holds the first notification");
    let mut b = alert("Burn", "checkout", "page", 10);
    b.labels.insert("slo".into(), "latency".into());
    b.fingerprint = crate::labels::fingerprint(&b.labels);
    let other = alert("Burn", "search", "page", 10);
    d.update(&[a.clone(), b.clone(), other.clone()], 10 * S);
    let flushes = d.due(30 * S, &never_muted);
    assert_eq!(flushes.len(), 1, "search's group formed at 10 s waits until 40 s");
    assert_eq!(flushes[0].group_key, r#"{}:{alertname="Burn", service="checkout"}"#);
    assert_eq!(flushes[0].alerts.len(), 2, "alike alerts are grouped");
    d.complete(&flushes[0], true, 30 * S);
    assert_eq!(d.due(40 * S, &never_muted).len(), 1);
    // Nothing new: no notification at the next group_interval, nor before repeat_interval.
    let current = [a.clone(), b.clone(), other.clone()];
    for t in [330, 630, 3600, 4 * 3600] {
        d.update(&current, t * S);
        let due: Vec<_> = d.due(t * S, &never_muted).into_iter().filter(|f| f.group_key.contains("checkout")).collect();
        assert!(due.is_empty(), "no repeat at {t}s");
    }
    d.update(&current, 4 * 3600 * S + 330 * S);
    let repeated: Vec<_> =
        d.due(4 * 3600 * S + 330 * S, &never_muted).into_iter().filter(|f| f.group_key.contains("checkout")).collect();
    assert_eq!(repeated.len(), 1, "repeat_interval passed");
}

#[test]
fn new_alert_in_a_group_is_notified_at_the_next_interval() {
    let mut d = dispatcher();
    let a = alert("Burn", "checkout", "page", 0);
    d.update(std::slice::from_ref(&a), 0);
    let first = d.due(30 * S, &never_muted);
    d.complete(&first[0], true, 30 * S);
    let mut b = alert("Burn", "checkout", "page", 60);
    b.labels.insert("slo".into(), "latency".into());
    b.fingerprint = crate::labels::fingerprint(&b.labels);
    d.update(&[a.clone(), b.clone()], 60 * S);
    assert!(d.due(60 * S, &never_muted).is_empty(), "waits for group_interval");
    let next = d.due(330 * S, &never_muted);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].alerts.len(), 2);
}

#[test]
fn resolution_is_notified_and_the_group_ends() {
    let mut d = dispatcher();
    let mut a = alert("Burn", "checkout", "page", 0);
    d.update(std::slice::from_ref(&a), 0);
    let first = d.due(30 * S, &never_muted);
    d.complete(&first[0], true, 30 * S);
    a.ends_at_ms = Some(100 * S);
    d.update(std::slice::from_ref(&a), 100 * S);
    let resolved = d.due(330 * S, &never_muted);
    assert_eq!(resolved.len(), 1);
    assert!(resolved[0].alerts[0].is_resolved(330 * S));
    d.complete(&resolved[0], true, 330 * S);
    d.update(&[], 400 * S);
    assert!(d.groups().is_empty(), "a fully resolved, notified group goes away");
}

#[test]
fn vanished_alerts_resolve() {
    let mut d = dispatcher();
    let a = alert("Burn", "checkout", "page", 0);
    d.update(std::slice::from_ref(&a), 0);
    let first = d.due(30 * S, &never_muted);
    d.complete(&first[0], true, 30 * S);
    d.update(&[], 60 * S);
    let flush = d.due(330 * S, &never_muted);
    assert_eq!(flush[0].alerts[0].ends_at_ms, Some(60 * S));
}

#[test]
fn failed_delivery_is_retried_at_the_next_flush() {
    let mut d = dispatcher();
    let a = alert("Burn", "checkout", "page", 0);
    d.update(std::slice::from_ref(&a), 0);
    let first = d.due(30 * S, &never_muted);
    assert!(d.due(31 * S, &never_muted).is_empty(), "one flush in flight per group");
    d.complete(&first[0], false, 31 * S);
    assert_eq!(d.due(330 * S, &never_muted).len(), 1, "not in the log: sent again");
}

#[test]
fn muted_alerts_are_left_out() {
    let mut d = dispatcher();
    let a = alert("Burn", "checkout", "page", 0);
    d.update(std::slice::from_ref(&a), 0);
    assert!(d.due(30 * S, &|_| true).is_empty(), "nothing unmuted: nothing to send");
    assert_eq!(d.due(330 * S, &never_muted).len(), 1, "unsilenced: sent");
}

#[test]
fn old_alerts_skip_group_wait_and_named_receivers_bypass_the_tree() {
    let mut d = dispatcher();
    let mut a = alert("Burn", "checkout", "page", 0);
    a.receivers = vec!["pager".into()];
    d.update(std::slice::from_ref(&a), 600 * S);
    let flush = d.due(600 * S, &never_muted);
    assert_eq!(flush.len(), 1, "started long ago: flushed at once");
    assert_eq!(flush[0].receiver, "pager");
}

#[test]
fn group_by_all_makes_one_group_per_alert() {
    let mut d = Dispatcher::default();
    d.configure(Some(route("receiver: r\ngroup_by: ['...']\ngroup_wait: 0s\n")), BTreeMap::new());
    d.update(&[alert("A", "x", "page", 0), alert("A", "y", "page", 0)], 0);
    assert_eq!(d.due(0, &never_muted).len(), 2);
}

#[test]
fn dedup_follows_alertmanager() {
    let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
    let entry = NflogEntry { firing: set(&[1, 2]), resolved: set(&[]), timestamp_ms: 0 };
    assert!(needs_update(None, &set(&[1]), &set(&[]), true, 10, 1));
    assert!(!needs_update(None, &set(&[]), &set(&[1]), true, 10, 1), "only resolved, never notified");
    assert!(!needs_update(Some(&entry), &set(&[1, 2]), &set(&[]), true, 10, 5));
    assert!(needs_update(Some(&entry), &set(&[1, 2, 3]), &set(&[]), true, 10, 5), "new firing");
    assert!(needs_update(Some(&entry), &set(&[1]), &set(&[2]), true, 10, 5), "resolved, send_resolved");
    assert!(!needs_update(Some(&entry), &set(&[1]), &set(&[2]), false, 10, 5), "resolved, not sent");
    assert!(needs_update(Some(&entry), &set(&[]), &set(&[1, 2]), false, 10, 5), "all resolved clears the log");
    assert!(needs_update(Some(&entry), &set(&[1, 2]), &set(&[]), true, 10, 11), "repeat");
}
