//! The alerting engine: the [`Alerting`] type, its configuration, and the loop that starts
//! due rule-group evaluations (`evaluate.rs`) and delivers due flushes, each in a task of its
//! own so a slow receiver never holds up evaluation. Publishing (`publish.rs`), muting
//! (`inhibit.rs`), saving (`persist.rs`) and the API's views (`views.rs`) are its other jobs.
//! One lock guards the state and is never held across a query or a delivery.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::object_store::ObjectStore;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use vigil_query::QueryEngine;
use vigil_storage::clock::Clock;

use crate::AlertingError;
use crate::config::{InhibitRuleConfig, ReceiverConfig, RouteConfig};
use crate::dispatch::{Dispatcher, Flush, Route};
use crate::evaluate::rule_key;
use crate::inhibit::{InhibitRule, Muting};
use crate::labels::Labels;
use crate::notify::{Message, Notifier, rfc3339_ms};
use crate::persist::{NflogRecord, StateFiles};
use crate::publish::notify_alerts;
use crate::rules::RuleGroup;
use crate::silences::{Silence, SilenceError, SilenceRequest, Silences};
use crate::state::RuleAlerts;

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

/// What raises a source's alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Slo,
    /// An alerting rule.
    Rule,
    /// A recording rule (no alerts; kept for its health).
    Record,
    /// Alerts another sender posted (a Prometheus whose Alertmanager is Vigil).
    Posted,
}

impl SourceKind {
    /// The kind of a saved source, by its key (`slo:NAME`, `posted` or `rule:...`).
    pub(crate) fn of_key(key: &str) -> SourceKind {
        if key.starts_with("slo:") {
            SourceKind::Slo
        } else if key == crate::posted::KEY {
            SourceKind::Posted
        } else {
            SourceKind::Rule
        }
    }
}

/// An SLO or a rule, with its alerts.
pub(crate) struct Source {
    pub(crate) kind: SourceKind,
    pub(crate) alerts: RuleAlerts,
    pub(crate) receivers: BTreeMap<u64, Vec<String>>,
    pub(crate) generator_url: String,
    pub(crate) last_error: Option<String>,
    pub(crate) last_evaluation_ms: Option<i64>,
}

impl Source {
    pub(crate) fn new(kind: SourceKind, alerts: RuleAlerts) -> Self {
        Source {
            kind,
            alerts,
            receivers: BTreeMap::new(),
            generator_url: String::new(),
            last_error: None,
            last_evaluation_ms: None,
        }
    }
}

pub(crate) struct GroupRuntime {
    pub(crate) group: RuleGroup,
    pub(crate) interval_ms: i64,
    pub(crate) next_ms: i64,
    pub(crate) running: bool,
    pub(crate) last_duration_ms: i64,
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

pub(crate) struct State {
    pub(crate) sources: BTreeMap<String, Source>,
    pub(crate) groups: Vec<GroupRuntime>,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) inhibit: Vec<InhibitRule>,
    pub(crate) custom_inhibit: bool,
    /// `ALERTS` label sets written last, to end those that go away with a stale marker.
    pub(crate) written: BTreeSet<Labels>,
    /// Time of the last `ALERTS` samples: later writes never go back in time, even when
    /// evaluations that started earlier publish later.
    pub(crate) written_at_ms: i64,
}

pub(crate) struct Inner {
    pub(crate) engine: QueryEngine,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: AlertingOptions,
    pub(crate) files: StateFiles,
    pub(crate) state: Mutex<State>,
    pub(crate) silences: Mutex<Silences>,
    pub(crate) notifiers: RwLock<BTreeMap<String, Arc<Notifier>>>,
    pub(crate) receivers: Mutex<BTreeMap<String, ReceiverStatus>>,
    pub(crate) http: reqwest::Client,
    pub(crate) persisting: tokio::sync::Mutex<()>,
    /// Per burning SLO: when its bad events were last attributed, and the summary.
    pub(crate) attributions: Mutex<BTreeMap<String, (i64, String)>>,
    pub(crate) deliveries: tokio_util::task::TaskTracker,
    /// False on a node that does not hold the alerting lease: it evaluates and pages nothing.
    pub(crate) active: AtomicBool,
    /// Interval of rule groups that set none (starts as `options.default_interval`; a reload
    /// may change it).
    pub(crate) default_interval_ms: std::sync::atomic::AtomicI64,
}

#[derive(Clone)]
pub struct Alerting {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn to_utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Checks the alerting config as start-up would apply it.
pub fn check_config(config: &AlertingConfig) -> Result<(), AlertingError> {
    compile(config, &reqwest::Client::new()).map(|_| ())
}

type Compiled = (Option<Route>, BTreeMap<String, Arc<Notifier>>, Option<Vec<InhibitRule>>);

fn compile(config: &AlertingConfig, http: &reqwest::Client) -> Result<Compiled, AlertingError> {
    let first = config.receivers.first().map(|r| r.name.value.as_str());
    let route = Route::compile(config.route.as_ref(), first).map_err(|e| AlertingError::Config(e.message))?;
    let mut notifiers = BTreeMap::new();
    for receiver in &config.receivers {
        let notifier = Notifier::new(receiver, http.clone())
            .map_err(|e| AlertingError::Receiver { name: receiver.name.value.clone(), message: e.to_string() })?;
        notifiers.insert(receiver.name.value.clone(), Arc::new(notifier));
    }
    let inhibit = match &config.inhibit_rules {
        None => None,
        Some(rules) => Some(rules.iter().map(InhibitRule::compile).collect::<Result<Vec<_>, _>>()?),
    };
    Ok((route, notifiers, inhibit))
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
                let source = Source::new(SourceKind::of_key(&key), alerts);
                (key, source)
            })
            .collect();
        let inhibit = vec![InhibitRule::page_inhibits_ticket(&BTreeSet::new())];
        let http = reqwest::Client::builder()
            .user_agent(concat!("Vigil/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Alerting {
            inner: Arc::new(Inner {
                engine,
                clock,
                files,
                state: Mutex::new(State {
                    sources,
                    groups: Vec::new(),
                    dispatcher,
                    inhibit,
                    custom_inhibit: false,
                    written: BTreeSet::new(),
                    written_at_ms: 0,
                }),
                silences: Mutex::new(Silences::restore(silences)),
                notifiers: RwLock::new(BTreeMap::new()),
                receivers: Mutex::new(BTreeMap::new()),
                http,
                persisting: tokio::sync::Mutex::new(()),
                attributions: Mutex::new(BTreeMap::new()),
                deliveries: tokio_util::task::TaskTracker::new(),
                active: AtomicBool::new(true),
                default_interval_ms: std::sync::atomic::AtomicI64::new(
                    i64::try_from(options.default_interval.as_millis()).unwrap_or(i64::MAX),
                ),
                options,
            }),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Installs receivers, routes, inhibition and rule groups. Alerts of rules that stay
    /// keep their state; those of removed rules resolve.
    pub fn configure(&self, config: &AlertingConfig) -> Result<(), AlertingError> {
        let (route, notifiers, inhibit) = compile(config, &self.inner.http)?;
        let send_resolved = notifiers.iter().map(|(name, n)| (name.clone(), n.send_resolved())).collect();
        let now = self.now_ms();
        {
            let mut receivers = self.inner.receivers.lock();
            receivers.retain(|name, _| notifiers.contains_key(name));
            for receiver in &config.receivers {
                let status = receivers.entry(receiver.name.value.clone()).or_default();
                status.name = receiver.name.value.clone();
                status.integrations =
                    [receiver.email.as_ref().map(|_| "email"), receiver.webhook.as_ref().map(|_| "webhook")]
                        .into_iter()
                        .flatten()
                        .collect();
            }
        }
        *self.inner.notifiers.write() = notifiers;
        let mut state = self.inner.state.lock();
        state.dispatcher.configure(route, send_resolved);
        if let Some(rules) = inhibit {
            state.inhibit = rules;
            state.custom_inhibit = true;
        } else if state.custom_inhibit {
            state.inhibit = vec![InhibitRule::page_inhibits_ticket(&BTreeSet::new())];
            state.custom_inhibit = false;
        }
        let previous: BTreeMap<String, i64> = state.groups.iter().map(|g| (g.group.key(), g.next_ms)).collect();
        let default_ms = self.inner.default_interval_ms.load(Ordering::Acquire);
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
        let keys: BTreeSet<String> = config
            .groups
            .iter()
            .flat_map(|g| g.rules.iter().enumerate().map(move |(i, r)| rule_key(g, r, i)))
            .collect();
        state
            .sources
            .retain(|key, source| matches!(source.kind, SourceKind::Slo | SourceKind::Posted) || keys.contains(key));
        Ok(())
    }

    /// The interval of rule groups that set none, from the next [`Self::configure`] on.
    pub fn set_default_interval(&self, interval: Duration) {
        let ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        self.inner.default_interval_ms.store(ms, Ordering::Release);
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

    /// Hands due flushes to delivery tasks.
    pub fn dispatch_due(&self) {
        let now = self.now_ms();
        let flushes = {
            let mut guard = self.inner.state.lock();
            let state = &mut *guard;
            let silences = self.inner.silences.lock();
            let all = notify_alerts(state);
            let muting = Muting::new(&silences, &state.inhibit, &all, now);
            state.dispatcher.due(now, &|alert| muting.is_muted(alert))
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
            Some(notifier) => {
                notifier.notify(&message, self.inner.options.max_attempts).await.map_err(|e| e.to_string())
            }
            None => Err(format!("receiver {:?} is not configured", flush.receiver)),
        };
        let now = self.now_ms();
        {
            let mut receivers = self.inner.receivers.lock();
            let status = receivers
                .entry(flush.receiver.clone())
                .or_insert_with(|| ReceiverStatus { name: flush.receiver.clone(), ..Default::default() });
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
                self.resolve_expired_posted().await;
                self.dispatch_due();
            }
        }
        self.inner.deliveries.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.deliveries.wait()).await;
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
}

#[cfg(test)]
mod tests;
