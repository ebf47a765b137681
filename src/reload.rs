//! Reloading definitions (SLO files, rule files, receivers and routes named by the config)
//! on `POST /-/reload`, SIGHUP and file change. A set that fails to load never replaces the
//! running one; the error is logged, kept for `/api/v1/slos`, and
//! `vigil_config_last_reload_successful` drops to 0.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigil_alerting::{Alerting, AlertingConfig};
use vigil_query::slo::{SloDefinition, SloEvaluator};
use vigil_web::{Reload, ReloadRefused, ReloadStatus};

use crate::config::Config;
pub(crate) use vigil_storage::clock::now_ms;

pub struct DefinitionReloader {
    /// The config file, re-read on reload; `None` runs on the start-up config.
    config_path: Option<PathBuf>,
    startup: Config,
    evaluator: Arc<SloEvaluator>,
    alerting: Alerting,
    status: RwLock<ReloadStatus>,
    /// What the files looked like at the last load, to notice changes.
    fingerprint: Mutex<Vec<(PathBuf, Option<SystemTime>, u64)>>,
}

impl DefinitionReloader {
    pub fn new(
        config_path: Option<PathBuf>,
        startup: Config,
        evaluator: Arc<SloEvaluator>,
        alerting: Alerting,
    ) -> Self {
        DefinitionReloader {
            config_path,
            startup,
            evaluator,
            alerting,
            status: RwLock::new(ReloadStatus::default()),
            fingerprint: Mutex::new(Vec::new()),
        }
    }

    fn config(&self) -> Result<Config, String> {
        match &self.config_path {
            Some(path) => Config::load(path).map_err(|e| e.to_string()),
            None => Ok(self.startup.clone()),
        }
    }

    fn definition_files(config: &Config) -> Result<Vec<PathBuf>, String> {
        let expand = |patterns| vigil_query::slo::expand(&config.base_dir, patterns).map_err(|e| e.to_string());
        let mut files = expand(&config.slos)?;
        files.extend(expand(&config.rules)?);
        Ok(files)
    }

    /// Loads the definitions the config names, without applying them.
    pub fn load(&self) -> Result<(Vec<SloDefinition>, AlertingConfig), String> {
        let config = self.config()?;
        let files = vigil_query::slo::expand(&config.base_dir, &config.slos).map_err(|e| e.to_string())?;
        let slos = vigil_query::slo::load_files(&files, Some(&config.receiver_names()))
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
        let alerting = config.alerting()?;
        vigil_alerting::check_config(&alerting).map_err(|e| e.to_string())?;
        Ok((slos, alerting))
    }

    fn current_fingerprint(&self) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
        let mut files: Vec<PathBuf> = self.config_path.iter().cloned().collect();
        if let Ok(config) = self.config() {
            files.extend(Self::definition_files(&config).unwrap_or_default());
        }
        files
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(&path).ok();
                let modified = meta.as_ref().and_then(|m| m.modified().ok());
                let len = meta.map_or(0, |m| m.len());
                (path, modified, len)
            })
            .collect()
    }

    /// Loads and, when every file is valid, applies.
    pub async fn apply(&self) -> Result<(), String> {
        *self.fingerprint.lock() = self.current_fingerprint();
        match self.load() {
            Ok((definitions, alerting)) => {
                let count = definitions.len();
                let rules: usize = alerting.groups.iter().map(|g| g.rules.len()).sum();
                if let Err(error) = self.alerting.configure(&alerting) {
                    return self.failed(error.to_string());
                }
                self.evaluator.set_definitions(definitions).await;
                *self.status.write() = ReloadStatus { successful: true, at_ms: now_ms(), error: None, slos: count };
                metrics::gauge!("vigil_config_last_reload_successful").set(1.0);
                metrics::gauge!("vigil_config_last_reload_success_timestamp_seconds").set(now_ms() as f64 / 1000.0);
                info!(slos = count, rules, "definitions loaded");
                Ok(())
            }
            Err(error) => self.failed(error),
        }
    }

    fn failed(&self, error: String) -> Result<(), String> {
        {
            let mut status = self.status.write();
            status.successful = false;
            status.at_ms = now_ms();
            status.error = Some(error.clone());
        }
        metrics::gauge!("vigil_config_last_reload_successful").set(0.0);
        warn!(%error, "reload failed; the previous definitions stay in force");
        Err(error)
    }

    /// Reloads on SIGHUP and whenever a file changes, until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut poll = tokio::time::interval(Duration::from_secs(5));
        loop {
            #[cfg(unix)]
            let hangup_signal = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup_signal = std::future::pending::<()>();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hangup_signal => {
                    info!("SIGHUP received: reloading");
                    let _ = self.apply().await;
                }
                _ = poll.tick() => {
                    if self.current_fingerprint() != *self.fingerprint.lock() {
                        info!("definition files changed: reloading");
                        let _ = self.apply().await;
                    }
                }
            }
        }
    }
}

impl Reload for DefinitionReloader {
    fn reload(&self) -> BoxFuture<'_, Result<(), ReloadRefused>> {
        Box::pin(async move { self.apply().await.map_err(ReloadRefused) })
    }

    fn status(&self) -> ReloadStatus {
        self.status.read().clone()
    }
}
