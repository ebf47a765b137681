//! The alerting engine: evaluates rule groups on their intervals and SLO alerts after every
//! SLO evaluation, advances alert states, writes `ALERTS`/`ALERTS_FOR_STATE` series and the
//! `alerts` table, hands alerts to the dispatcher, and delivers its flushes in tasks of their
//! own so a slow receiver never holds up evaluation. One lock guards the state and is never
//! held across a query or a delivery.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, StringDictionaryBuilder, TimestampNanosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use vigil_query::QueryEngine;
use vigil_query::promql::EvalRange;
use vigil_query::promql::PromResult;
use vigil_query::slo::{SloDefinition, SloStatus};
use vigil_storage::schema::{FixedTable, string_map_builder};
use vigil_storage::{LabelSet, MetricSeries, STALE_NAN, Sample, TableRows, WriteBatch};

use crate::config::{InhibitRuleConfig, ReceiverConfig, RouteConfig, parse_matchers};
use crate::dispatch::{Dispatcher, Flush, NotifyAlert, Route};
use crate::labels::{Labels, fingerprint_hex};
use crate::matchers::{MatchOp, Matcher, all_match};
use crate::notify::{Message, Notifier, rfc3339_ms};
use crate::persist::{NflogRecord, SHARED_SILENCES, SHARED_STATE, Snapshot, StateFiles};
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use crate::rules::{Rule, RuleGroup, RuleKind, RuleQuery};
use crate::silences::{Silence, SilenceError, SilenceRequest, Silences};
use crate::state::{Alert, AlertState, Candidate, RuleAlerts, Transition};
use crate::template::{TemplateData, expand, format_go_float};

/// Where "now" comes from; tests fast-forward a [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(ms: i64) -> Self {
        ManualClock(AtomicI64::new(ms))
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Debug)]
pub struct AlertingOptions {
    /// Base of links in notifications.
    pub external_url: String,
    /// Where alert state, the notification log and silences are kept.
    pub state_dir: PathBuf,
    /// Interval of rule groups that set none.
    pub default_interval: Duration,
    /// Delivery attempts per notification before it counts as failed.
    pub max_attempts: u32,
    /// How often due groups and flushes are looked for.
    pub tick: Duration,
    /// A store shared with other nodes: alert state, notification log and silences are
    /// copied there, so the node that takes over alerting neither re-pages nor forgets.
    pub shared_store: Option<Arc<dyn ObjectStore>>,
}

impl AlertingOptions {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        AlertingOptions {
            external_url: "http://localhost:9400".into(),
            state_dir: state_dir.into(),
            default_interval: Duration::from_secs(30),
            max_attempts: 5,
            tick: Duration::from_millis(250),
            shared_store: None,
        }
    }
}

/// The alerting part of the configuration.
#[derive(Clone, Debug, Default)]
pub struct AlertingConfig {
    pub receivers: Vec<ReceiverConfig>,
    pub route: Option<RouteConfig>,
    /// `None`: a page inhibits the ticket of the same SLO.
    pub inhibit_rules: Option<Vec<InhibitRuleConfig>>,
    pub groups: Vec<RuleGroup>,
}

struct InhibitRule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

impl InhibitRule {
    /// A page inhibits the ticket of the same SLO (same name, service and group labels).
    fn page_inhibits_ticket(group_labels: &BTreeSet<String>) -> Result<InhibitRule, String> {
        let mut equal = vec!["alertname".to_string(), "slo".to_string(), "service".to_string()];
        equal.extend(group_labels.iter().cloned());
        Ok(InhibitRule {
            source: vec![Matcher::new("severity", MatchOp::Equal, "page")?, Matcher::new("slo", MatchOp::NotEqual, "")?],
            target: vec![Matcher::new("severity", MatchOp::Equal, "ticket")?],
            equal,
        })
    }

    fn inhibits(&self, target: &NotifyAlert, firing: &[&NotifyAlert]) -> bool {
        all_match(&self.target, &target.labels)
            && firing.iter().any(|source| {
                source.fingerprint != target.fingerprint
                    && all_match(&self.source, &source.labels)
                    && self.equal.iter().all(|l| source.labels.get(l) == target.labels.get(l))
            })
    }
}

/// An SLO or a rule, with its alerts.
struct Source {
    kind: &'static str,
    alerts: RuleAlerts,
    receivers: BTreeMap<u64, Vec<String>>,
    generator_url: String,
    last_error: Option<String>,
    last_evaluation_ms: Option<i64>,
}

impl Source {
    fn new(kind: &'static str, alerts: RuleAlerts) -> Self {
        Source { kind, alerts, receivers: BTreeMap::new(), generator_url: String::new(), last_error: None, last_evaluation_ms: None }
    }
}

struct GroupRuntime {
    group: RuleGroup,
    interval_ms: i64,
    next_ms: i64,
    running: bool,
    last_duration_ms: i64,
}

/// Delivery record of one receiver.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverStatus {
    pub name: String,
    pub integrations: Vec<&'static str>,
    pub notifications: u64,
    pub failures: u64,
    pub last_attempt: Option<String>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
}

struct State {
    sources: BTreeMap<String, Source>,
    groups: Vec<GroupRuntime>,
    dispatcher: Dispatcher,
    inhibit: Vec<InhibitRule>,
    custom_inhibit: bool,
    /// `ALERTS` label sets written last, to end those that go away with a stale marker.
    written: BTreeSet<Labels>,
    /// Time of the last `ALERTS` samples: later writes never go back in time, even when
    /// evaluations that started earlier publish later.
    written_at_ms: i64,
}

struct Inner {
    engine: QueryEngine,
    clock: Arc<dyn Clock>,
    options: AlertingOptions,
    files: StateFiles,
    state: Mutex<State>,
    silences: Mutex<Silences>,
    notifiers: RwLock<BTreeMap<String, Arc<Notifier>>>,
    receivers: Mutex<BTreeMap<String, ReceiverStatus>>,
    http: reqwest::Client,
    persisting: tokio::sync::Mutex<()>,
    deliveries: tokio_util::task::TaskTracker,
    /// False on a node that does not hold the alerting lease: it evaluates and pages nothing.
    active: AtomicBool,
}

#[derive(Clone)]
pub struct Alerting {
    inner: Arc<Inner>,
}

fn to_utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Checks the alerting config as start-up would apply it.
pub fn check_config(config: &AlertingConfig) -> Result<(), String> {
    compile(config, &reqwest::Client::new()).map(|_| ())
}

type Compiled = (Option<Route>, BTreeMap<String, Arc<Notifier>>, Option<Vec<InhibitRule>>);

fn compile(config: &AlertingConfig, http: &reqwest::Client) -> Result<Compiled, String> {
    let first = config.receivers.first().map(|r| r.name.value.as_str());
    let route = Route::compile(config.route.as_ref(), first).map_err(|e| e.message)?;
    let mut notifiers = BTreeMap::new();
    for receiver in &config.receivers {
        let notifier = Notifier::new(receiver, http.clone()).map_err(|e| format!("receiver {:?}: {e}", receiver.name.value))?;
        notifiers.insert(receiver.name.value.clone(), Arc::new(notifier));
    }
    let inhibit = match &config.inhibit_rules {
        None => None,
        Some(rules) => Some(
            rules
                .iter()
                .map(|r| {
                    Ok(InhibitRule {
                        source: parse_matchers(&r.source_matchers).map_err(|e| e.message)?,
                        target: parse_matchers(&r.target_matchers).map_err(|e| e.message)?,
                        equal: r.equal.clone(),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?,
        ),
    };
    Ok((route, notifiers, inhibit))
}

/// The kind of a saved source, by its key (`slo:NAME` or `rule:...`).
fn source_kind(key: &str) -> &'static str {
    if key.starts_with("slo:") { "slo" } else { "rule" }
}

fn rule_key(group: &RuleGroup, rule: &Rule, index: usize) -> String {
    format!("rule:{};{};{};{index}", group.file, group.name, rule.name())
}

impl Alerting {
    /// Opens the engine with the state saved in `options.state_dir`.
    pub fn open(engine: QueryEngine, options: AlertingOptions, clock: Arc<dyn Clock>) -> Alerting {
        let files = StateFiles::new(&options.state_dir);
        let (snapshot, silences) = files.load();
        let mut dispatcher = Dispatcher::default();
        dispatcher.restore_nflog(snapshot.nflog.into_iter().map(NflogRecord::into_entry).collect());
        let sources = snapshot
            .sources
            .into_iter()
            .map(|(key, alerts)| {
                let source = Source::new(source_kind(&key), alerts);
                (key, source)
            })
            .collect();
        let inhibit = InhibitRule::page_inhibits_ticket(&BTreeSet::new()).into_iter().collect();
        let http = reqwest::Client::builder().user_agent(concat!("Vigil/", env!("CARGO_PKG_VERSION"))).build().unwrap_or_default();
        Alerting {
            inner: Arc::new(Inner {
                engine,
                clock,
                files,
                state: Mutex::new(State { sources, groups: Vec::new(), dispatcher, inhibit, custom_inhibit: false, written: BTreeSet::new(), written_at_ms: 0 }),
                silences: Mutex::new(Silences::restore(silences)),
                notifiers: RwLock::new(BTreeMap::new()),
                receivers: Mutex::new(BTreeMap::new()),
                http,
                persisting: tokio::sync::Mutex::new(()),
                deliveries: tokio_util::task::TaskTracker::new(),
                active: AtomicBool::new(true),
                options,
            }),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Installs receivers, routes, inhibition and rule groups. Alerts of rules that stay
    /// keep their state; those of removed rules resolve.
    pub fn configure(&self, config: &AlertingConfig) -> Result<(), String> {
        let (route, notifiers, inhibit) = compile(config, &self.inner.http)?;
        let send_resolved = notifiers.iter().map(|(name, n)| (name.clone(), n.send_resolved())).collect();
        let now = self.now_ms();
        {
            let mut receivers = self.inner.receivers.lock();
            receivers.retain(|name, _| notifiers.contains_key(name));
            for receiver in &config.receivers {
                let status = receivers.entry(receiver.name.value.clone()).or_default();
                status.name = receiver.name.value.clone();
                status.integrations = [receiver.email.as_ref().map(|_| "email"), receiver.webhook.as_ref().map(|_| "webhook")].into_iter().flatten().collect();
            }
        }
        *self.inner.notifiers.write() = notifiers;
        let mut state = self.inner.state.lock();
        state.dispatcher.configure(route, send_resolved);
        if let Some(rules) = inhibit {
            state.inhibit = rules;
            state.custom_inhibit = true;
        } else if state.custom_inhibit {
            state.inhibit = InhibitRule::page_inhibits_ticket(&BTreeSet::new()).into_iter().collect();
            state.custom_inhibit = false;
        }
        let previous: BTreeMap<String, i64> = state.groups.iter().map(|g| (g.group.key(), g.next_ms)).collect();
        let default_ms = self.inner.options.default_interval.as_millis() as i64;
        state.groups = config
            .groups
            .iter()
            .map(|group| GroupRuntime {
                interval_ms: group.interval.map_or(default_ms, |d| d.as_millis() as i64).max(1000),
                next_ms: previous.get(&group.key()).copied().unwrap_or(now),
                running: false,
                last_duration_ms: 0,
                group: group.clone(),
            })
            .collect();
        let keys: BTreeSet<String> =
            config.groups.iter().flat_map(|g| g.rules.iter().enumerate().map(move |(i, r)| rule_key(g, r, i))).collect();
        state.sources.retain(|key, _| key.starts_with("slo:") || keys.contains(key));
        Ok(())
    }

    /// Evaluates the alerts of every SLO from its latest statuses.
    pub async fn evaluate_slos(&self, definitions: &[Arc<SloDefinition>], statuses: &[SloStatus]) {
        let now = self.now_ms();
        let external = self.inner.options.external_url.clone();
        let mut transitions = Vec::new();
        {
            let mut state = self.inner.state.lock();
            let group_labels: BTreeSet<String> = definitions.iter().flat_map(|d| d.group_by.iter().cloned()).collect();
            if !state.custom_inhibit {
                state.inhibit = InhibitRule::page_inhibits_ticket(&group_labels).into_iter().collect();
            }
            let names: BTreeSet<String> = definitions.iter().map(|d| format!("slo:{}", d.name)).collect();
            state.sources.retain(|key, _| !key.starts_with("slo:") || names.contains(key));
            for definition in definitions {
                let mine: Vec<&SloStatus> = statuses.iter().filter(|s| s.name == definition.name).collect();
                if mine.iter().any(|s| s.state == "error") {
                    // As a rule whose query failed: alerts stay as they are.
                    continue;
                }
                let key = format!("slo:{}", definition.name);
                let source = state.sources.entry(key).or_insert_with(|| Source::new("slo", RuleAlerts::default()));
                source.generator_url = format!("{}/slos/{}", external.trim_end_matches('/'), definition.name);
                source.last_evaluation_ms = Some(now);
                let candidates = crate::slo_alerts::candidates(definition, &mine, &external);
                source.receivers = candidates.iter().map(|c| (crate::labels::fingerprint(&c.candidate.labels), c.receivers.clone())).collect();
                match source.alerts.advance(now, candidates.into_iter().map(|c| c.candidate).collect()) {
                    Ok(mut t) => {
                        source.last_error = None;
                        transitions.append(&mut t);
                    }
                    Err(e) => source.last_error = Some(e.to_string()),
                }
            }
        }
        self.publish(now, transitions, Vec::new()).await;
    }

    /// Evaluates the rule groups whose time has come, each in a task of its own.
    pub fn evaluate_due_groups(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let now = self.now_ms();
        let due: Vec<RuleGroup> = {
            let mut state = self.inner.state.lock();
            state
                .groups
                .iter_mut()
                .filter(|g| !g.running && g.next_ms <= now)
                .map(|g| {
                    g.running = true;
                    // Keep the phase: the next evaluation is one interval after this one was due.
                    g.next_ms += g.interval_ms * (((now - g.next_ms) / g.interval_ms) + 1);
                    g.group.clone()
                })
                .collect()
        };
        due.into_iter()
            .map(|group| {
                let this = self.clone();
                tokio::spawn(async move { this.evaluate_group(group, now).await })
            })
            .collect()
    }

    async fn evaluate_group(&self, group: RuleGroup, now: i64) {
        let started = std::time::Instant::now();
        let mut results = Vec::new();
        for rule in &group.rules {
            results.push(self.query(&rule.query, now).await);
        }
        let external = self.inner.options.external_url.clone();
        let mut transitions = Vec::new();
        let mut recorded = Vec::new();
        {
            let mut state = self.inner.state.lock();
            for (index, (rule, result)) in group.rules.iter().zip(results).enumerate() {
                let key = rule_key(&group, rule, index);
                let kind = if matches!(rule.kind, RuleKind::Alert { .. }) { "rule" } else { "record" };
                let source = state.sources.entry(key).or_insert_with(|| Source::new(kind, RuleAlerts::default()));
                source.last_evaluation_ms = Some(now);
                source.generator_url = generator_url(&external, &rule.query);
                let outcome = result.and_then(|samples| {
                    if group.limit > 0 && samples.len() > group.limit {
                        return Err(format!("exceeded limit of {} with {} results", group.limit, samples.len()));
                    }
                    match &rule.kind {
                        RuleKind::Alert { name, hold, keep_firing_for, annotations } => {
                            let candidates = samples
                                .into_iter()
                                .map(|(labels, value)| alert_candidate(rule, name, *hold, *keep_firing_for, annotations, labels, value, &external))
                                .collect();
                            source.alerts.advance(now, candidates).map(|mut t| transitions.append(&mut t)).map_err(|e| e.to_string())
                        }
                        RuleKind::Record { name } => {
                            recorded.extend(samples.into_iter().filter_map(|(labels, value)| record_series(name, &rule.labels, labels, value, now)));
                            Ok(())
                        }
                    }
                });
                source.last_error = outcome.err();
                if let Some(error) = &source.last_error {
                    tracing::warn!(group = %group.name, rule = rule.name(), %error, "rule evaluation failed");
                    metrics::counter!("vigil_rule_evaluation_failures_total").increment(1);
                }
            }
            if let Some(runtime) = state.groups.iter_mut().find(|g| g.group.key() == group.key()) {
                runtime.running = false;
                runtime.last_duration_ms = started.elapsed().as_millis() as i64;
            }
        }
        metrics::counter!("vigil_rule_group_evaluations_total").increment(1);
        metrics::histogram!("vigil_rule_group_duration_seconds").record(started.elapsed().as_secs_f64());
        self.publish(now, transitions, recorded).await;
    }

    /// Runs a rule's query at `now`: (labels, value) per result element.
    async fn query(&self, query: &RuleQuery, now: i64) -> Result<Vec<(Labels, f64)>, String> {
        match query {
            RuleQuery::PromQl(expr) => match self.inner.engine.promql(expr, EvalRange::instant(now), true).await {
                Ok(PromResult::Vector(samples)) => Ok(samples.into_iter().map(|s| (s.labels, s.value)).collect()),
                Ok(PromResult::Scalar(_, value)) => Ok(vec![(Labels::new(), value)]),
                Ok(_) => Err("rule result is not a vector or scalar".into()),
                Err(e) => Err(e.to_string()),
            },
            RuleQuery::Sql(text) => {
                let result = self.inner.engine.sql(text).await.map_err(|e| e.to_string())?;
                sql_rows(&result.batches).map_err(|e| e.to_string())
            }
        }
    }

    /// After an evaluation: alerts to the dispatcher, series and state changes to storage,
    /// state to disk.
    async fn publish(&self, now: i64, transitions: Vec<Transition>, mut metrics_out: Vec<MetricSeries>) {
        let (rows, firing, pending) = {
            let mut state = self.inner.state.lock();
            let alerts = notify_alerts(&state);
            state.dispatcher.update(&alerts, now);
            let mut current = BTreeSet::new();
            let (mut firing, mut pending) = (0usize, 0usize);
            let series_ms = self.now_ms().max(state.written_at_ms + 1);
            state.written_at_ms = series_ms;
            let now_ns = series_ms * 1_000_000;
            for source in state.sources.values() {
                for alert in source.alerts.active() {
                    match alert.state {
                        AlertState::Firing => firing += 1,
                        _ => pending += 1,
                    }
                    let mut labels = alert.labels.clone();
                    labels.insert("alertstate".into(), alert.state.as_str().into());
                    push_sample(&mut metrics_out, "ALERTS", &labels, now_ns, 1.0);
                    push_sample(&mut metrics_out, "ALERTS_FOR_STATE", &alert.labels, now_ns, (alert.active_at_ms / 1000) as f64);
                    current.insert(labels);
                }
            }
            for gone in state.written.difference(&current) {
                push_sample(&mut metrics_out, "ALERTS", gone, now_ns, STALE_NAN);
                let mut plain = gone.clone();
                plain.remove("alertstate");
                if !current.iter().any(|c| c.iter().filter(|(k, _)| k.as_str() != "alertstate").eq(plain.iter())) {
                    push_sample(&mut metrics_out, "ALERTS_FOR_STATE", &plain, now_ns, STALE_NAN);
                }
            }
            state.written = current;
            (transition_rows(&transitions, now), firing, pending)
        };
        metrics::gauge!("vigil_alerts", "state" => "firing").set(firing as f64);
        metrics::gauge!("vigil_alerts", "state" => "pending").set(pending as f64);
        let batch = WriteBatch { metrics: metrics_out, rows: rows.into_iter().map(|batch| TableRows { table: FixedTable::Alerts, batch }).collect() };
        if let Err(e) = self.inner.engine.storage().write(batch).await {
            tracing::warn!(error = %e, "writing alert series failed");
        }
        self.persist().await;
    }

    async fn persist(&self) {
        let _writing = self.inner.persisting.lock().await;
        let snapshot = {
            let state = self.inner.state.lock();
            Snapshot {
                version: 1,
                sources: state.sources.iter().filter(|(_, s)| s.kind != "record").map(|(k, s)| (k.clone(), s.alerts.clone())).collect(),
                nflog: state.dispatcher.nflog().into_iter().map(|((receiver, group_key), entry)| NflogRecord { receiver, group_key, entry }).collect(),
            }
        };
        self.share(SHARED_STATE, serde_json::to_vec(&snapshot)).await;
        let this = self.clone();
        let saved = tokio::task::spawn_blocking(move || this.inner.files.save_state(&snapshot)).await;
        if let Ok(Err(e)) | Err(e) = saved.map_err(std::io::Error::other) {
            tracing::warn!(error = %e, "saving alerting state failed");
        }
    }

    /// Copies state to the shared store, when there is one.
    async fn share(&self, path: &str, json: serde_json::Result<Vec<u8>>) {
        let Some(store) = &self.inner.options.shared_store else { return };
        let put = match json {
            Ok(json) => store.put(&path.into(), PutPayload::from(json)).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = put {
            metrics::counter!("vigil_alerting_shared_state_failures_total").increment(1);
            tracing::warn!(error = %e, path, "copying alerting state to the shared store failed");
        }
    }

    /// Whether this node evaluates rules and SLO alerts and sends notifications.
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Starts or stops evaluating and paging (the alerting lease was taken or lost).
    pub fn set_active(&self, active: bool) {
        self.inner.active.store(active, Ordering::Release);
        metrics::gauge!("vigil_alerting_active").set(if active { 1.0 } else { 0.0 });
    }

    /// Replaces alert states, the notification log and silences with the copies in the
    /// shared store (written by the node that held the lease). Done before taking over, and
    /// now and then on standby nodes so that their APIs show current alerts.
    pub async fn load_shared(&self) -> Result<(), String> {
        let Some(store) = &self.inner.options.shared_store else { return Ok(()) };
        use vigil_storage::store::get_json;
        let state: Option<Snapshot> = get_json(store, &SHARED_STATE.into()).await.map_err(|e| e.to_string())?;
        let silences: Option<Vec<Silence>> = get_json(store, &SHARED_SILENCES.into()).await.map_err(|e| e.to_string())?;
        if let Some(snapshot) = state {
            let mut state = self.inner.state.lock();
            state.dispatcher.restore_nflog(snapshot.nflog.into_iter().map(NflogRecord::into_entry).collect());
            for (key, alerts) in snapshot.sources {
                match state.sources.get_mut(&key) {
                    Some(source) => source.alerts = alerts,
                    None => {
                        let source = Source::new(source_kind(&key), alerts);
                        state.sources.insert(key, source);
                    }
                }
            }
        }
        if let Some(silences) = silences {
            *self.inner.silences.lock() = Silences::restore(silences);
        }
        Ok(())
    }

    /// Hands due flushes to delivery tasks.
    pub fn dispatch_due(&self) {
        let now = self.now_ms();
        let flushes = {
            let mut guard = self.inner.state.lock();
            let state = &mut *guard;
            let silences = self.inner.silences.lock();
            let all = notify_alerts(state);
            let firing: Vec<&NotifyAlert> = all.iter().filter(|a| !a.is_resolved(now)).collect();
            let inhibit = &state.inhibit;
            let muted = |alert: &NotifyAlert| {
                !silences.silencing(&alert.labels, to_utc(now)).is_empty() || inhibit.iter().any(|rule| rule.inhibits(alert, &firing))
            };
            state.dispatcher.due(now, &muted)
        };
        for flush in flushes {
            let this = self.clone();
            self.inner.deliveries.spawn(async move { this.deliver(flush).await });
        }
    }

    async fn deliver(&self, flush: Flush) {
        let message = Message::new(&flush, &self.inner.options.external_url, self.now_ms());
        let notifier = self.inner.notifiers.read().get(&flush.receiver).cloned();
        let outcome = match notifier {
            Some(notifier) => notifier.notify(&message, self.inner.options.max_attempts).await.map_err(|e| e.to_string()),
            None => Err(format!("receiver {:?} is not configured", flush.receiver)),
        };
        let now = self.now_ms();
        {
            let mut receivers = self.inner.receivers.lock();
            let status = receivers.entry(flush.receiver.clone()).or_insert_with(|| ReceiverStatus { name: flush.receiver.clone(), ..Default::default() });
            status.last_attempt = Some(rfc3339_ms(now));
            match &outcome {
                Ok(()) => {
                    status.notifications += 1;
                    status.last_success = Some(rfc3339_ms(now));
                    status.last_error = None;
                }
                Err(e) => {
                    status.failures += 1;
                    status.last_error = Some(e.clone());
                }
            }
        }
        self.inner.state.lock().dispatcher.complete(&flush, outcome.is_ok(), now);
        self.persist().await;
    }

    /// Waits until every delivery started so far has finished (for tests and shutdown).
    pub async fn deliveries_idle(&self) {
        while !self.inner.deliveries.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Evaluates rules and dispatches until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.inner.options.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while stop.run_until_cancelled(ticker.tick()).await.is_some() {
            if self.is_active() {
                self.evaluate_due_groups();
                self.dispatch_due();
            }
        }
        self.inner.deliveries.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.deliveries.wait()).await;
    }

    /// Every pending, firing and recently resolved alert, with its silences, inhibition and
    /// receivers.
    pub fn alerts(&self) -> Vec<AlertView> {
        let now = self.now_ms();
        let state = self.inner.state.lock();
        let silences = self.inner.silences.lock();
        let all = notify_alerts(&state);
        let firing: Vec<&NotifyAlert> = all.iter().filter(|a| !a.is_resolved(now)).collect();
        let mut out = Vec::new();
        for (key, source) in &state.sources {
            for alert in source.alerts.alerts.values() {
                let fp = alert.fingerprint();
                let notify = all.iter().find(|a| a.fingerprint == fp);
                let silenced_by = silences.silencing(&alert.labels, to_utc(now));
                let inhibited = notify.is_some_and(|n| state.inhibit.iter().any(|r| r.inhibits(n, &firing)));
                out.push(AlertView {
                    labels: alert.labels.clone(),
                    annotations: alert.annotations.clone(),
                    state: if alert.state == AlertState::Inactive { "resolved" } else { alert.state.as_str() },
                    active_at: rfc3339_ms(alert.active_at_ms),
                    fired_at: alert.fired_at_ms.map(rfc3339_ms),
                    resolved_at: alert.resolved_at_ms.map(rfc3339_ms),
                    value: format_go_float(alert.value),
                    fingerprint: fingerprint_hex(&alert.labels),
                    source: source.kind,
                    source_key: key.clone(),
                    generator_url: source.generator_url.clone(),
                    silenced: !silenced_by.is_empty(),
                    silenced_by,
                    inhibited,
                    receivers: notify.map(|n| state.dispatcher.receivers_for(n)).unwrap_or_default(),
                });
            }
        }
        out.sort_by(|a, b| (a.state != "firing", a.state != "pending", &a.labels).cmp(&(b.state != "firing", b.state != "pending", &b.labels)));
        out
    }

    /// Rule groups and their health, in the shape of Prometheus' `/api/v1/rules`.
    pub fn rule_groups(&self) -> serde_json::Value {
        let state = self.inner.state.lock();
        let groups: Vec<serde_json::Value> = state
            .groups
            .iter()
            .map(|runtime| {
                let group = &runtime.group;
                let rules: Vec<serde_json::Value> = group
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(index, rule)| {
                        let source = state.sources.get(&rule_key(group, rule, index));
                        let health = match source {
                            None | Some(Source { last_evaluation_ms: None, .. }) => "unknown",
                            Some(Source { last_error: Some(_), .. }) => "err",
                            _ => "ok",
                        };
                        let mut value = serde_json::json!({
                            "name": rule.name(),
                            "query": rule.query.text(),
                            "language": if matches!(rule.query, RuleQuery::Sql(_)) { "sql" } else { "promql" },
                            "labels": rule.labels,
                            "health": health,
                            "lastError": source.and_then(|s| s.last_error.clone()).unwrap_or_default(),
                            "lastEvaluation": source.and_then(|s| s.last_evaluation_ms).map(rfc3339_ms),
                        });
                        if let RuleKind::Alert { hold, keep_firing_for, annotations, .. } = &rule.kind {
                            let alerts: Vec<&Alert> = source.map(|s| s.alerts.active().collect()).unwrap_or_default();
                            let rule_state = if alerts.iter().any(|a| a.state == AlertState::Firing) {
                                "firing"
                            } else if alerts.is_empty() {
                                "inactive"
                            } else {
                                "pending"
                            };
                            value["type"] = "alerting".into();
                            value["duration"] = hold.as_secs().into();
                            value["keepFiringFor"] = keep_firing_for.as_secs().into();
                            value["annotations"] = serde_json::to_value(annotations).unwrap_or_default();
                            value["state"] = rule_state.into();
                            value["alerts"] = alerts
                                .iter()
                                .map(|a| serde_json::json!({"labels": a.labels, "annotations": a.annotations, "state": a.state.as_str(), "activeAt": rfc3339_ms(a.active_at_ms), "value": format_go_float(a.value)}))
                                .collect();
                        } else {
                            value["type"] = "recording".into();
                        }
                        value
                    })
                    .collect();
                serde_json::json!({
                    "name": group.name,
                    "file": group.file,
                    "interval": runtime.interval_ms / 1000,
                    "limit": group.limit,
                    "evaluationTime": runtime.last_duration_ms as f64 / 1000.0,
                    "rules": rules,
                })
            })
            .collect();
        serde_json::json!({ "groups": groups })
    }

    pub fn receivers(&self) -> Vec<ReceiverStatus> {
        self.inner.receivers.lock().values().cloned().collect()
    }

    pub fn silences(&self) -> Vec<(Silence, crate::silences::SilenceState)> {
        let now = to_utc(self.now_ms());
        let mut silences = self.inner.silences.lock();
        silences.gc(now);
        silences.all().iter().map(|s| (s.clone(), s.state(now))).collect()
    }

    pub async fn create_silence(&self, request: SilenceRequest) -> Result<String, SilenceError> {
        let id = self.inner.silences.lock().upsert(request, to_utc(self.now_ms()))?;
        self.save_silences().await;
        Ok(id)
    }

    pub async fn expire_silence(&self, id: &str) -> Result<(), SilenceError> {
        self.inner.silences.lock().expire(id, to_utc(self.now_ms()))?;
        self.save_silences().await;
        Ok(())
    }

    async fn save_silences(&self) {
        let _writing = self.inner.persisting.lock().await;
        let silences = self.inner.silences.lock().all().to_vec();
        self.share(SHARED_SILENCES, serde_json::to_vec(&silences)).await;
        let this = self.clone();
        let saved = tokio::task::spawn_blocking(move || this.inner.files.save_silences(&silences)).await;
        if let Ok(Err(e)) | Err(e) = saved.map_err(std::io::Error::other) {
            tracing::warn!(error = %e, "saving silences failed");
        }
    }
}

/// One alert for `/api/v1/alerts`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    pub labels: Labels,
    pub annotations: Labels,
    /// `pending`, `firing` or `resolved`.
    pub state: &'static str,
    pub active_at: String,
    pub fired_at: Option<String>,
    pub resolved_at: Option<String>,
    pub value: String,
    pub fingerprint: String,
    /// `slo` or `rule`.
    pub source: &'static str,
    #[serde(skip)]
    pub source_key: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub silenced: bool,
    pub silenced_by: Vec<String>,
    pub inhibited: bool,
    pub receivers: Vec<String>,
}

/// Firing and recently resolved alerts of every source, as the dispatcher takes them.
fn notify_alerts(state: &State) -> Vec<NotifyAlert> {
    let mut out = Vec::new();
    for source in state.sources.values() {
        for (fp, alert) in &source.alerts.alerts {
            if !alert.is_notifiable() {
                continue;
            }
            out.push(NotifyAlert {
                fingerprint: *fp,
                labels: alert.labels.clone(),
                annotations: alert.annotations.clone(),
                starts_at_ms: alert.fired_at_ms.unwrap_or(alert.active_at_ms),
                ends_at_ms: alert.resolved_at_ms.filter(|_| alert.state == AlertState::Inactive),
                generator_url: source.generator_url.clone(),
                receivers: source.receivers.get(fp).cloned().unwrap_or_default(),
            });
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn alert_candidate(
    rule: &Rule,
    name: &str,
    hold: Duration,
    keep_firing_for: Duration,
    annotations: &BTreeMap<String, String>,
    mut labels: Labels,
    value: f64,
    external_url: &str,
) -> Candidate {
    labels.remove("__name__");
    let data = TemplateData { labels: &labels, value, external_url };
    let mut out = labels.clone();
    for (k, v) in &rule.labels {
        let expanded = expand(v, &data);
        if expanded.is_empty() {
            out.remove(k);
        } else {
            out.insert(k.clone(), expanded);
        }
    }
    out.insert("alertname".into(), name.into());
    let annotations = annotations.iter().map(|(k, v)| (k.clone(), expand(v, &data))).collect();
    Candidate { labels: out, annotations, value, hold_ms: hold.as_millis() as i64, keep_firing_for_ms: keep_firing_for.as_millis() as i64 }
}

fn record_series(name: &str, rule_labels: &BTreeMap<String, String>, mut labels: Labels, value: f64, now: i64) -> Option<MetricSeries> {
    labels.remove("__name__");
    labels.extend(rule_labels.clone());
    let labels = LabelSet::new(labels.into_iter().collect()).ok()?;
    Some(MetricSeries { metric: name.to_string(), labels, samples: vec![Sample { timestamp_ns: now * 1_000_000, value }] })
}

fn push_sample(out: &mut Vec<MetricSeries>, metric: &str, labels: &Labels, timestamp_ns: i64, value: f64) {
    if let Ok(set) = LabelSet::new(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()) {
        out.push(MetricSeries { metric: metric.into(), labels: set, samples: vec![Sample { timestamp_ns, value }] });
    }
}

fn generator_url(external: &str, query: &RuleQuery) -> String {
    let (language, text) = match query {
        RuleQuery::PromQl(q) => ("promql", q),
        RuleQuery::Sql(q) => ("sql", q),
    };
    let base = format!("{}/explore", external.trim_end_matches('/'));
    reqwest::Url::parse_with_params(&base, &[("lang", language), ("q", text.as_str())]).map_or(base, |u| u.to_string())
}

/// SQL rule results: text columns are labels, `value` (if present) the value, 1 otherwise.
fn sql_rows(batches: &[RecordBatch]) -> Result<Vec<(Labels, f64)>, datafusion::arrow::error::ArrowError> {
    let mut out = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let mut label_columns = Vec::new();
        let mut value_column = None;
        for (i, field) in schema.fields().iter().enumerate() {
            if field.name() == "value" {
                value_column = Some(cast(batch.column(i), &DataType::Float64)?);
            } else if matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _)) {
                label_columns.push((field.name().clone(), cast(batch.column(i), &DataType::Utf8)?));
            }
        }
        for row in 0..batch.num_rows() {
            let mut labels = Labels::new();
            for (name, column) in &label_columns {
                let strings = column.as_any().downcast_ref::<StringArray>();
                if let Some(strings) = strings.filter(|s| !s.is_null(row) && !s.value(row).is_empty()) {
                    labels.insert(name.clone(), strings.value(row).to_string());
                }
            }
            let value = value_column.as_ref().and_then(|c| c.as_any().downcast_ref::<Float64Array>()).map_or(1.0, |v| if v.is_null(row) { f64::NAN } else { v.value(row) });
            out.push((labels, value));
        }
    }
    Ok(out)
}

/// `alerts` table rows for state changes.
fn transition_rows(transitions: &[Transition], now: i64) -> Option<RecordBatch> {
    if transitions.is_empty() {
        return None;
    }
    let dictionary = |values: Vec<Option<String>>| -> ArrayRef {
        let mut builder = StringDictionaryBuilder::<Int32Type>::new();
        for value in values {
            builder.append_option(value);
        }
        std::sync::Arc::new(builder.finish())
    };
    let map = |f: &dyn Fn(&Alert) -> &Labels| -> ArrayRef {
        let mut builder = string_map_builder();
        for t in transitions {
            for (k, v) in f(&t.alert) {
                builder.keys().append_value(k);
                builder.values().append_value(v);
            }
            // Keys and values were appended in pairs: appending the entry cannot fail.
            let _ = builder.append(true);
        }
        std::sync::Arc::new(builder.finish())
    };
    let label = |name: &str| dictionary(transitions.iter().map(|t| t.alert.labels.get(name).cloned()).collect());
    let columns: Vec<ArrayRef> = vec![
        std::sync::Arc::new(TimestampNanosecondArray::from(vec![now * 1_000_000; transitions.len()]).with_timezone("UTC")),
        dictionary(transitions.iter().map(|t| Some(t.alert.labels.get("alertname").cloned().unwrap_or_default())).collect()),
        std::sync::Arc::new(StringArray::from_iter_values(transitions.iter().map(|t| fingerprint_hex(&t.alert.labels)))),
        dictionary(transitions.iter().map(|t| Some(t.to.to_string())).collect()),
        label("slo"),
        label("severity"),
        map(&|a| &a.labels),
        map(&|a| &a.annotations),
        std::sync::Arc::new(transitions.iter().map(|t| Some(t.alert.value)).collect::<Float64Array>()),
        std::sync::Arc::new(TimestampNanosecondArray::from(transitions.iter().map(|t| Some(t.alert.active_at_ms * 1_000_000)).collect::<Vec<_>>()).with_timezone("UTC")),
    ];
    match RecordBatch::try_new(FixedTable::Alerts.schema(), columns) {
        Ok(batch) => Some(batch),
        Err(e) => {
            tracing::warn!(error = %e, "building alerts rows failed");
            None
        }
    }
}

#[cfg(test)]
mod tests;
