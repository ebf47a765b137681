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
        "--object-store-path",
        store.to_str().unwrap(),
        "--node-id",
        name,
        "--flush-interval",
        "1s",
        "--peer-refresh",
        "1s",
        "--lease-ttl",
        "3s",
    ];
    Vigil::start_with_config(&data, config, &args).await
}

async fn alerting_active(vigil: &Vigil) -> bool {
    let text = vigil.own_metrics().await;
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
    assert!(
        std::fs::read_dir(store.join("nodes/a/segments")).is_ok()
            && std::fs::read_dir(store.join("nodes/b/segments")).is_ok()
    );

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
        let firing: Vec<Value> = alerts
            .into_iter()
            .filter(|x| x["labels"]["alertname"] == "QueueTooLong" && x["state"] == "firing")
            .collect();
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
    // The manifest is written last in a flush (after the segment and its partition file):
    // a listing taken between those writes would miss it.
    let keys = wait_until("a flushed segment in the bucket", 30, async || {
        let listing = client
            .get(format!("{}/vigil-test?list-type=2&prefix=prod/eu/nodes/s3-node/", moto.endpoint))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        listing.contains("prod/eu/nodes/s3-node/manifest.json").then_some(listing)
    })
    .await;
    assert!(keys.contains(".parquet"), "{keys}");
    assert!(keys.contains("prod/eu/nodes/s3-node/manifest.json"), "{keys}");
    assert!(keys.contains("prod/eu/nodes/s3-node/partitions/"), "{keys}");
    assert!(keys.contains("prod/eu/nodes/s3-node/segments/"), "a shared segment: {keys}");
    let lease = client
        .get(format!("{}/vigil-test?list-type=2&prefix=prod/eu/cluster/leases/", moto.endpoint))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(lease.contains("cluster/leases/alerting/0000000000000001.json"), "{lease}");
    vigil.kill9();

    // A new machine (empty data dir, no WAL) with the same node id reads it all from S3.
    let vigil = Vigil::start_with_config(&dir.path().join("second"), &config, &args).await;
    assert_eq!(vigil.count("SELECT count(*) FROM in_s3").await, 2);
    let body = vigil.sql("SELECT sum(value) FROM in_s3 WHERE k = '2'").await;
    assert_eq!(body["rows"][0][0].as_f64(), Some(2.0));
}

/// A process of the Vigil binary (a Ballista role), killed on drop.
struct Role(std::process::Child);

impl Role {
    fn start(args: &[&str], log: &Path, port: u16) -> Role {
        let child = std::process::Command::new(crate::harness::VIGIL)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start a Ballista role");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{args:?} did not listen: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Role(child)
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn prom_range(vigil: &Vigil, query: &str, start: i64, end: i64, step: &str) -> Value {
    let url = vigil.url(&format!("/api/v1/query_range?start={}&end={}&step={step}", start / 1000, end / 1000));
    let body: Value = vigil.client.get(url).query(&[("query", query)]).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "success", "{query}: {body}");
    body["data"].clone()
}

#[tokio::test]
async fn ballista_gives_the_single_nodes_answers() {
    use crate::remote_write_client::{WriteRequest, encode, now_ms, send, series};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let free = crate::harness::free_port;
    let (scheduler_port, flight_port, grpc_port) = (free(), free(), free());
    let _scheduler = Role::start(
        &["ballista-scheduler", "--bind-host", "127.0.0.1", "--bind-port", &scheduler_port.to_string()],
        &dir.path().join("scheduler.log"),
        scheduler_port,
    );
    let work = dir.path().join("executor-work");
    std::fs::create_dir_all(&work).unwrap();
    let _executor = Role::start(
        &[
            "ballista-executor",
            "--bind-host",
            "127.0.0.1",
            "--external-host",
            "127.0.0.1",
            "--bind-port",
            &flight_port.to_string(),
            "--bind-grpc-port",
            &grpc_port.to_string(),
            "--scheduler-host",
            "127.0.0.1",
            "--scheduler-port",
            &scheduler_port.to_string(),
            "--work-dir",
            work.to_str().unwrap(),
        ],
        &dir.path().join("executor.log"),
        flight_port,
    );

    // Six hours of two counters per job in one-hour partitions, flushed at once.
    let common = [
        "--object-store-path",
        store.to_str().unwrap(),
        "--flush-interval",
        "1s",
        "--peer-refresh",
        "1s",
        "--partition",
        "1h",
    ];
    let mut single_args = common.to_vec();
    single_args.extend(["--node-id", "single"]);
    let single = Vigil::start(&dir.path().join("single"), &single_args).await;
    let end = now_ms() - now_ms() % 60_000;
    let start = end - 6 * 3_600_000;
    let mut timeseries = Vec::new();
    for job in ["api", "db", "web"] {
        for instance in ["1", "2"] {
            let samples: Vec<(i64, f64)> = (0..=360)
                .map(|m| (start + m * 60_000, (m * (instance.len() as i64 + job.len() as i64)) as f64))
                .collect();
            timeseries.push(series("requests_total", &[("job", job), ("instance", instance)], &samples));
        }
    }
    let (status, text) = send(&single.client, &single.url("/api/v1/write"), encode(&WriteRequest { timeseries })).await;
    assert_eq!(status, 204, "{text}");
    wait_until("every sample flushed to segments", 30, async || {
        // One shared segment per partition (requests_total is the only metric).
        let flushed = std::fs::read_dir(store.join("nodes/single/segments")).map(|d| d.count()).unwrap_or(0);
        (flushed >= 6).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A second node sends every query (min range 0) to the scheduler; its own buffer is empty.
    let scheduler = format!("df://127.0.0.1:{scheduler_port}");
    let mut distributed_args = common.to_vec();
    distributed_args.extend([
        "--node-id",
        "distributed",
        "--ballista-scheduler",
        &scheduler,
        "--ballista-min-range",
        "0s",
    ]);
    let distributed = Vigil::start(&dir.path().join("distributed"), &distributed_args).await;

    let queries = [
        "SELECT count(*) AS n, sum(value) AS total, min(timestamp) AS first, max(timestamp) AS last FROM requests_total".to_string(),
        "SELECT job, instance, count(*) AS n, max(value) AS top FROM requests_total GROUP BY job, instance ORDER BY job, instance".to_string(),
        format!(
            "SELECT job, avg(value) AS mean FROM requests_total WHERE timestamp >= to_timestamp_millis({}) AND timestamp < to_timestamp_millis({}) AND instance = '2' GROUP BY job ORDER BY job",
            start + 90 * 60_000,
            start + 200 * 60_000
        ),
    ];
    for query in &queries {
        let expected = single.sql(query).await;
        let got = distributed.sql(query).await;
        assert!(expected["rows"].as_array().is_some_and(|r| !r.is_empty()), "{query}: {expected}");
        assert_eq!(got["rows"], expected["rows"], "{query}");
    }
    for query in [
        "sum by (job) (rate(requests_total[5m]))",
        "requests_total{job=~\"a.*|web\", instance=\"1\"}",
        "max_over_time(requests_total[30m]) - min_over_time(requests_total[30m])",
    ] {
        let expected = prom_range(&single, query, start + 3_600_000, end, "300").await;
        let got = prom_range(&distributed, query, start + 3_600_000, end, "300").await;
        assert!(expected["result"].as_array().is_some_and(|r| !r.is_empty()), "{query}: {expected}");
        assert_eq!(got, expected, "{query}");
    }
    let metrics = distributed.own_metrics().await;
    for language in ["sql", "promql"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("vigil_query_distributed_total{{language=\"{language}\"}}")))
            .unwrap_or_default();
        let count: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        assert!(count >= 3.0, "{language} queries went to Ballista: {line:?}");
    }
}
