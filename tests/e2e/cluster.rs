//! Several Vigil processes on one store: each writes its own segments, each queries all of
//! them, and exactly one evaluates and pages, with a takeover when it dies.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::alerting::{RULES, alerts_api, import, webhook_receiver};
use crate::harness::{Vigil, wait_until};

/// A node on the shared store `store`, flushing and re-reading its peers every second.
async fn node(dir: &Path, store: &Path, name: &str, config: &str) -> Vigil {
    let data = dir.join(name);
    let args = [
        "--object-store-path", store.to_str().unwrap(),
        "--node-id", name,
        "--flush-interval", "1s",
        "--peer-refresh", "1s",
        "--lease-ttl", "3s",
    ];
    Vigil::start_with_config(&data, config, &args).await
}

async fn alerting_active(vigil: &Vigil) -> bool {
    let text = vigil.client.get(vigil.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().any(|l| l == "vigil_alerting_active 1")
}

#[tokio::test]
async fn two_nodes_share_one_store_and_one_of_them_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (hook_url, hook) = webhook_receiver().await;
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let config = format!(
        "rules: [rules.yaml]\nevaluation_interval: 1s\nreceivers:\n  - name: hook\n    webhook: {{url: '{hook_url}'}}\nroute:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1h\n"
    );
    let mut a = node(dir.path(), &store, "a", &config).await;
    let b = node(dir.path(), &store, "b", &config).await;
    assert!(alerting_active(&a).await, "the first node takes the free lease");
    assert!(!alerting_active(&b).await, "the second waits");

    // Written to one, read from the other, both ways: once flushed and re-read.
    import(&a, "written_on{node=\"a\"} 1\n").await;
    import(&b, "written_on{node=\"b\"} 2\n").await;
    for vigil in [&a, &b] {
        let sum = wait_until("both nodes' rows on each node", 30, async || {
            let body = vigil.sql("SELECT count(*), sum(value) FROM written_on").await;
            (body["rows"][0][0] == 2).then(|| body["rows"][0][1].clone())
        })
        .await;
        assert_eq!(sum.as_f64(), Some(3.0));
    }
    assert!(std::fs::read_dir(store.join("nodes/a/tables")).is_ok() && std::fs::read_dir(store.join("nodes/b/tables")).is_ok());

    // The rule fires on the lease holder (a) only: one notification.
    import(&b, "queue_length{queue=\"a\"} 20\nqueue_length{queue=\"b\"} 30\n").await;
    let first = wait_until("the first page", 40, async || hook.lock().first().cloned()).await;
    assert_eq!(first["alerts"].as_array().unwrap().len(), 2, "{first}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hook.lock().len(), 1, "one node pages, once: {:?}", hook.lock());

    // The holder dies: b takes over after the lease runs out, with a's notification log,
    // so the group already paged is not paged again...
    a.kill9();
    wait_until("b to take the alerting lease", 30, async || alerting_active(&b).await.then_some(())).await;
    let firing = wait_until("b to evaluate the rule", 30, async || {
        let body: Value = alerts_api(&b).await;
        let alerts = body["data"]["alerts"].as_array().cloned().unwrap_or_default();
        let firing: Vec<Value> = alerts.into_iter().filter(|x| x["labels"]["alertname"] == "QueueTooLong" && x["state"] == "firing").collect();
        (firing.len() == 2).then_some(firing)
    })
    .await;
    assert_eq!(firing.len(), 2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(hook.lock().len(), 1, "taking over must not page the same group again: {:?}", hook.lock());

    // ...while what changes afterwards is paged by b.
    import(&b, "queue_length{queue=\"c\"} 40\n").await;
    let grown = wait_until("b to page the grown group", 30, async || {
        hook.lock().iter().find(|m| m["alerts"].as_array().unwrap().len() == 3).cloned()
    })
    .await;
    assert_eq!(grown["status"], "firing");
    assert_eq!(hook.lock().len(), 2, "{:?}", hook.lock());
}
