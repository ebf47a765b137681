//! Vigil's alerting: burn-rate alerts for every SLO and rule alerts on PromQL or SQL, alert
//! states advanced as Prometheus advances them, and Alertmanager's notification pipeline
//! (routing tree, grouping and timers, deduplication, inhibition, silences) delivering to
//! email and webhooks.
//!
//! [`Alerting`] (in `engine`) holds the state and runs the loop; its work is spread over
//! files by job: `evaluate` (SLO and rule evaluation), `publish` (`ALERTS` series and
//! `alerts` rows), `inhibit` (inhibition and muting), `persist` (disk and the shared store),
//! `views` (what the API shows); `posted` takes alerts other senders post.

pub mod backtest;
pub mod config;
mod correction_silences;
pub mod digest;
pub mod dispatch;
mod engine;
mod evaluate;
mod inhibit;
pub mod labels;
pub mod matchers;
pub mod notify;
pub mod persist;
pub mod posted;
mod publish;
pub mod rules;
pub mod silences;
pub mod slo_alerts;
pub mod state;
pub mod template;
mod views;

pub use engine::{Alerting, AlertingConfig, AlertingOptions, ReceiverStatus, SourceKind, check_config};
pub use views::{AlertGroupView, AlertView, AlertViewState, RuleGroupView, RuleGroupsView, RuleView};
pub use vigil_storage::clock::{Clock, ManualClock, SystemClock};

/// Why the alerting configuration or a shared state could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    /// A route, matcher or inhibit rule (the message says which and why).
    #[error("{0}")]
    Config(String),
    #[error("receiver {name:?}: {message}")]
    Receiver { name: String, message: String },
    #[error("shared alerting state: {0}")]
    SharedState(#[from] vigil_storage::StorageError),
}
