//! Vigil's alerting: burn-rate alerts for every SLO and rule alerts on PromQL or SQL, alert
//! states advanced as Prometheus advances them, and Alertmanager's notification pipeline
//! (routing tree, grouping and timers, deduplication, inhibition, silences) delivering to
//! email and webhooks.

pub mod config;
pub mod dispatch;
pub mod labels;
pub mod manager;
pub mod matchers;
pub mod notify;
pub mod persist;
pub mod rules;
pub mod silences;
pub mod slo_alerts;
pub mod state;
pub mod template;

pub use manager::{AlertView, Alerting, AlertingConfig, AlertingOptions, Clock, ManualClock, ReceiverStatus, SystemClock, check_config};
