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

/// moto's S3 server (the S3-compatible server installable here; a mock, so this checks
/// compatibility of Vigil's S3 path, not S3's own behaviour).
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Option<Moto> {
        let python = crate::harness::python()?;
        let server = python.with_file_name("moto_server");
        if !crate::harness::require_program(server.to_str().unwrap()) {
            return None;
        }
        let port = crate::harness::free_port();
        let child = std::process::Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Moto { child, endpoint: format!("http://127.0.0.1:{port}") })
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn segments_manifests_and_the_lease_live_in_s3() {
    let Some(moto) = Moto::start() else { return };
    let client = reqwest::Client::new();
    // moto's server accepts an unsigned bucket creation.
    let created = client.put(format!("{}/vigil-test", moto.endpoint)).send().await.unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "storage:\n  object_store:\n    kind: s3\n    bucket: vigil-test\n    prefix: prod/eu\n    endpoint: '{}'\n    region: us-east-1\n    allow_http: true\n    options: {{aws_access_key_id: test, aws_secret_access_key: test}}\n",
        moto.endpoint
    );
    let args = ["--flush-interval", "1s", "--node-id", "s3-node"];
    let mut vigil = Vigil::start_with_config(&dir.path().join("first"), &config, &args).await;
    assert!(alerting_active(&vigil).await, "the lease was created in S3");
    import(&vigil, "in_s3{k=\"1\"} 1\nin_s3{k=\"2\"} 2\n").await;
    let keys = wait_until("a flushed segment in the bucket", 30, async || {
        let listing = client.get(format!("{}/vigil-test?list-type=2&prefix=prod/eu/nodes/s3-node/", moto.endpoint)).send().await.unwrap().text().await.unwrap();
        listing.contains(".parquet").then_some(listing)
    })
    .await;
    assert!(keys.contains("prod/eu/nodes/s3-node/manifest.json"), "{keys}");
    assert!(keys.contains("prod/eu/nodes/s3-node/partitions/in_s3/"), "{keys}");
    let lease = client.get(format!("{}/vigil-test?list-type=2&prefix=prod/eu/cluster/leases/", moto.endpoint)).send().await.unwrap().text().await.unwrap();
    assert!(lease.contains("cluster/leases/alerting/0000000000000001.json"), "{lease}");
    vigil.kill9();

    // A new machine (empty data dir, no WAL) with the same node id reads it all from S3.
    let vigil = Vigil::start_with_config(&dir.path().join("second"), &config, &args).await;
    assert_eq!(vigil.count("SELECT count(*) FROM in_s3").await, 2);
    let body = vigil.sql("SELECT sum(value) FROM in_s3 WHERE k = '2'").await;
    assert_eq!(body["rows"][0][0].as_f64(), Some(2.0));
}
