//! Alertmanager's dispatcher: the routing tree sends each alert to one or more aggregation
//! groups (route × values of its `group_by` labels); a group is flushed `group_wait` after it
//! forms and every `group_interval` after that; a flush notifies only when the notification
//! log says the receiver has not yet heard of what is firing, something resolved, or
//! `repeat_interval` passed. Time is passed in, so the whole thing runs on any clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigIssue, RouteConfig, issue, parse_matchers};
use crate::labels::{Labels, format_labels};
use crate::matchers::{MatchOp, Matcher, all_match};

pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
/// How long the notification log remembers a group (Alertmanager: 120 h).
const NFLOG_RETENTION_MS: i64 = 120 * 3600 * 1000;

#[derive(Clone, Debug, PartialEq)]
pub enum GroupBy {
    /// `group_by: ['...']`: every label; each alert is its own group.
    All,
    Labels(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteOptions {
    pub receiver: String,
    pub group_by: GroupBy,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
}

impl RouteOptions {
    /// Alertmanager's defaults.
    pub fn defaults(receiver: &str) -> Self {
        RouteOptions {
            receiver: receiver.to_string(),
            group_by: GroupBy::Labels(Vec::new()),
            group_wait_ms: DEFAULT_GROUP_WAIT.as_millis() as i64,
            group_interval_ms: DEFAULT_GROUP_INTERVAL.as_millis() as i64,
            repeat_interval_ms: DEFAULT_REPEAT_INTERVAL.as_millis() as i64,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Route {
    /// The matchers from the root down, which names the route in group keys.
    pub key: String,
    matchers: Vec<Matcher>,
    continue_matching: bool,
    pub options: RouteOptions,
    routes: Vec<Route>,
}

impl Route {
    /// The tree of a config; `None` sends everything to `fallback_receiver` (if any).
    pub fn compile(
        config: Option<&RouteConfig>,
        fallback_receiver: Option<&str>,
    ) -> Result<Option<Route>, ConfigIssue> {
        match config {
            Some(config) => Ok(Some(Route::node(config, &RouteOptions::defaults(""), None, 0)?)),
            None => Ok(fallback_receiver.map(|receiver| Route {
                key: "{}".into(),
                matchers: Vec::new(),
                continue_matching: false,
                options: RouteOptions::defaults(receiver),
                routes: Vec::new(),
            })),
        }
    }

    fn node(
        config: &RouteConfig,
        parent: &RouteOptions,
        parent_key: Option<&str>,
        index: usize,
    ) -> Result<Route, ConfigIssue> {
        let mut matchers = parse_matchers(&config.matchers)?;
        for (name, value) in &config.match_equal {
            matchers.push(
                Matcher::new(name.clone(), MatchOp::Equal, value.clone())
                    .map_err(|e| issue(serde_saphyr::Location::UNKNOWN, e.to_string()))?,
            );
        }
        for (name, value) in &config.match_re {
            matchers.push(
                Matcher::new(name.clone(), MatchOp::Regex, value.clone())
                    .map_err(|e| issue(serde_saphyr::Location::UNKNOWN, e.to_string()))?,
            );
        }
        let ms =
            |d: &Option<vigil_query::PromDuration>, inherited: i64| d.map_or(inherited, |d| d.0.as_millis() as i64);
        let options = RouteOptions {
            receiver: config.receiver.as_ref().map_or_else(|| parent.receiver.clone(), |r| r.value.clone()),
            group_by: match &config.group_by {
                None => parent.group_by.clone(),
                Some(labels) if labels.iter().any(|l| l == "...") => GroupBy::All,
                Some(labels) => GroupBy::Labels(labels.clone()),
            },
            group_wait_ms: ms(&config.group_wait, parent.group_wait_ms),
            group_interval_ms: ms(&config.group_interval, parent.group_interval_ms).max(1),
            repeat_interval_ms: ms(&config.repeat_interval, parent.repeat_interval_ms),
        };
        let key = match parent_key {
            None => "{}".to_string(),
            Some(parent_key) => {
                let rendered: Vec<String> = matchers.iter().map(ToString::to_string).collect();
                format!("{parent_key}/{{{}}}/{index}", rendered.join(","))
            }
        };
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, child)| Route::node(child, &options, Some(&key), i))
            .collect::<Result<_, _>>()?;
        Ok(Route { key, matchers, continue_matching: config.continue_matching, options, routes })
    }

    /// The routes an alert goes to, as Alertmanager's `Route.Match`.
    pub fn matching(&self, labels: &Labels) -> Vec<&Route> {
        if !all_match(&self.matchers, labels) {
            return Vec::new();
        }
        let mut all = Vec::new();
        for child in &self.routes {
            let matched = child.matching(labels);
            let any = !matched.is_empty();
            all.extend(matched);
            if any && !child.continue_matching {
                break;
            }
        }
        if all.is_empty() {
            all.push(self);
        }
        all
    }

    /// Every receiver the tree names.
    pub fn receivers(&self, out: &mut BTreeSet<String>) {
        out.insert(self.options.receiver.clone());
        for child in &self.routes {
            child.receivers(out);
        }
    }
}

/// An alert as the dispatcher sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotifyAlert {
    pub fingerprint: u64,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at_ms: i64,
    /// Set once resolved.
    pub ends_at_ms: Option<i64>,
    pub generator_url: String,
    /// Receivers named by the alert's source (an SLO's `alerting.page.receivers`); these
    /// bypass the routing tree.
    pub receivers: Vec<String>,
}

impl NotifyAlert {
    pub fn is_resolved(&self, now_ms: i64) -> bool {
        self.ends_at_ms.is_some_and(|end| end <= now_ms)
    }
}

/// What the receiver last heard of a group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NflogEntry {
    pub firing: BTreeSet<u64>,
    pub resolved: BTreeSet<u64>,
    pub timestamp_ms: i64,
}

struct Group {
    group_labels: Labels,
    options: RouteOptions,
    alerts: BTreeMap<u64, NotifyAlert>,
    next_flush_ms: i64,
    in_flight: bool,
}

/// One notification to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct Flush {
    pub group_key: String,
    pub receiver: String,
    pub group_labels: Labels,
    /// Firing first, then resolved, each by start time.
    pub alerts: Vec<NotifyAlert>,
    firing: BTreeSet<u64>,
    resolved: BTreeSet<u64>,
}

#[derive(Default)]
pub struct Dispatcher {
    route: Option<Route>,
    send_resolved: BTreeMap<String, bool>,
    groups: BTreeMap<(String, String), Group>,
    nflog: BTreeMap<(String, String), NflogEntry>,
}

impl Dispatcher {
    /// Installs a (new) routing tree; groups formed under the old one flush as they are.
    pub fn configure(&mut self, route: Option<Route>, send_resolved: BTreeMap<String, bool>) {
        self.route = route;
        self.send_resolved = send_resolved;
    }

    pub fn restore_nflog(&mut self, entries: Vec<((String, String), NflogEntry)>) {
        self.nflog = entries.into_iter().collect();
    }

    pub fn nflog(&self) -> Vec<((String, String), NflogEntry)> {
        self.nflog.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The groups an alert goes to: (receiver, group key, labels, options).
    fn targets(&self, alert: &NotifyAlert) -> Vec<(String, String, Labels, RouteOptions)> {
        let grouped = |route_key: &str, options: &RouteOptions| {
            let group_labels: Labels = match &options.group_by {
                GroupBy::All => alert.labels.clone(),
                GroupBy::Labels(names) => {
                    names.iter().filter_map(|n| alert.labels.get(n).map(|v| (n.clone(), v.clone()))).collect()
                }
            };
            let key = format!("{route_key}:{}", format_labels(&group_labels));
            (options.receiver.clone(), key, group_labels, options.clone())
        };
        if !alert.receivers.is_empty() {
            // Named receivers take the root's grouping and timers.
            let base = self.route.as_ref().map_or_else(|| RouteOptions::defaults(""), |r| r.options.clone());
            return alert
                .receivers
                .iter()
                .map(|r| grouped(&format!("{{}}/receiver={r}"), &RouteOptions { receiver: r.clone(), ..base.clone() }))
                .collect();
        }
        match &self.route {
            Some(route) => route.matching(&alert.labels).into_iter().map(|r| grouped(&r.key, &r.options)).collect(),
            None => Vec::new(),
        }
    }

    /// Takes the current alerts (firing and recently resolved) of every rule and SLO.
    /// An alert that vanished without resolving (its rule was removed) resolves now.
    pub fn update(&mut self, alerts: &[NotifyAlert], now_ms: i64) {
        let mut present: BTreeSet<(String, String, u64)> = BTreeSet::new();
        for alert in alerts {
            for (receiver, key, group_labels, options) in self.targets(alert) {
                present.insert((receiver.clone(), key.clone(), alert.fingerprint));
                let group = self.groups.entry((receiver, key)).or_insert_with(|| Group {
                    group_labels,
                    next_flush_ms: now_ms + options.group_wait_ms,
                    options,
                    alerts: BTreeMap::new(),
                    in_flight: false,
                });
                if group.alerts.is_empty() && alert.starts_at_ms + group.options.group_wait_ms < now_ms {
                    // As Alertmanager: an alert older than group_wait is not held back again.
                    group.next_flush_ms = group.next_flush_ms.min(now_ms);
                }
                group.alerts.insert(alert.fingerprint, alert.clone());
            }
        }
        for ((receiver, key), group) in self.groups.iter_mut() {
            for (fp, alert) in group.alerts.iter_mut() {
                if alert.ends_at_ms.is_none() && !present.contains(&(receiver.clone(), key.clone(), *fp)) {
                    alert.ends_at_ms = Some(now_ms);
                }
            }
        }
        self.groups.retain(|_, g| !g.alerts.is_empty() || g.in_flight);
        self.nflog.retain(|_, e| now_ms - e.timestamp_ms < NFLOG_RETENTION_MS);
    }

    /// Flushes the groups whose time has come. `muted` says whether an alert is silenced or
    /// inhibited (muted alerts are left out, as Alertmanager's mute stages do).
    pub fn due(&mut self, now_ms: i64, muted: &dyn Fn(&NotifyAlert) -> bool) -> Vec<Flush> {
        let mut flushes = Vec::new();
        for ((receiver, key), group) in self.groups.iter_mut() {
            if group.in_flight || group.next_flush_ms > now_ms {
                continue;
            }
            group.next_flush_ms = now_ms + group.options.group_interval_ms;
            let mut alerts: Vec<NotifyAlert> = group.alerts.values().filter(|a| !muted(a)).cloned().collect();
            let firing: BTreeSet<u64> =
                alerts.iter().filter(|a| !a.is_resolved(now_ms)).map(|a| a.fingerprint).collect();
            let resolved: BTreeSet<u64> =
                alerts.iter().filter(|a| a.is_resolved(now_ms)).map(|a| a.fingerprint).collect();
            let send_resolved = self.send_resolved.get(receiver).copied().unwrap_or(true);
            let entry = self.nflog.get(&(receiver.clone(), key.clone()));
            if !needs_update(entry, &firing, &resolved, send_resolved, group.options.repeat_interval_ms, now_ms) {
                // Nothing to say: resolved alerts the receiver already heard of (or never
                // needed to) are done.
                group.alerts.retain(|fp, a| !(resolved.contains(fp) && a.is_resolved(now_ms)));
                continue;
            }
            alerts.sort_by_key(|a| (a.is_resolved(now_ms), a.starts_at_ms, a.fingerprint));
            if !send_resolved {
                alerts.retain(|a| !a.is_resolved(now_ms));
            }
            if alerts.is_empty() {
                // Nothing the receiver should see (all muted or resolved): log it as told.
                self.nflog.insert(
                    (receiver.clone(), key.clone()),
                    NflogEntry { firing, resolved: resolved.clone(), timestamp_ms: now_ms },
                );
                group.alerts.retain(|fp, a| !(resolved.contains(fp) && a.is_resolved(now_ms)));
                continue;
            }
            group.in_flight = true;
            flushes.push(Flush {
                group_key: key.clone(),
                receiver: receiver.clone(),
                group_labels: group.group_labels.clone(),
                alerts,
                firing,
                resolved,
            });
        }
        self.groups.retain(|_, g| !g.alerts.is_empty() || g.in_flight);
        flushes
    }

    /// Records the outcome of a flush. Delivered: the notification log remembers it and the
    /// resolved alerts it carried leave the group. Failed: the next flush tries again.
    pub fn complete(&mut self, flush: &Flush, delivered: bool, now_ms: i64) {
        let id = (flush.receiver.clone(), flush.group_key.clone());
        if delivered {
            self.nflog.insert(
                id.clone(),
                NflogEntry { firing: flush.firing.clone(), resolved: flush.resolved.clone(), timestamp_ms: now_ms },
            );
        }
        if let Some(group) = self.groups.get_mut(&id) {
            group.in_flight = false;
            if delivered {
                group.alerts.retain(|fp, a| !(flush.resolved.contains(fp) && a.ends_at_ms.is_some()));
            }
        }
        self.groups.retain(|_, g| !g.alerts.is_empty() || g.in_flight);
    }

    /// Groups and their alert counts, for the API.
    pub fn groups(&self) -> Vec<(String, String, usize)> {
        self.groups.iter().map(|((receiver, key), g)| (receiver.clone(), key.clone(), g.alerts.len())).collect()
    }

    /// Each group's receiver, group labels and the fingerprints of its alerts still firing.
    pub fn group_members(&self, now_ms: i64) -> Vec<(String, Labels, Vec<u64>)> {
        self.groups
            .iter()
            .map(|((receiver, _), g)| {
                let firing = g.alerts.values().filter(|a| !a.is_resolved(now_ms)).map(|a| a.fingerprint).collect();
                (receiver.clone(), g.group_labels.clone(), firing)
            })
            .collect()
    }

    /// The receivers an alert would reach.
    pub fn receivers_for(&self, alert: &NotifyAlert) -> Vec<String> {
        let mut names: Vec<String> = self.targets(alert).into_iter().map(|t| t.0).collect();
        names.dedup();
        names
    }
}

/// Alertmanager's `DedupStage.needsUpdate`.
fn needs_update(
    entry: Option<&NflogEntry>,
    firing: &BTreeSet<u64>,
    resolved: &BTreeSet<u64>,
    send_resolved: bool,
    repeat_ms: i64,
    now_ms: i64,
) -> bool {
    let Some(entry) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&entry.firing) {
        return true;
    }
    if firing.is_empty() {
        // All resolved: say so once (the log must forget the firing alerts either way).
        return !entry.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&entry.resolved) {
        return true;
    }
    entry.timestamp_ms < now_ms - repeat_ms
}

#[cfg(test)]
mod tests;

impl Flush {
    #[cfg(test)]
    pub(crate) fn for_test(group_key: &str, receiver: &str, group_labels: Labels, alerts: Vec<NotifyAlert>) -> Flush {
        Flush {
            group_key: group_key.into(),
            receiver: receiver.into(),
            group_labels,
            alerts,
            firing: BTreeSet::new(),
            resolved: BTreeSet::new(),
        }
    }
}
