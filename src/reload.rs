//! Reloading on `POST /-/reload`, SIGHUP and file change: the config file (with the flags and
//! variables of the start laid over it, as at start), SLO files, rule files, receivers,
//! routes and inhibit rules, the evaluation interval and the scrape targets are applied; a
//! changed setting that only a restart applies (listeners, storage, limits, ...) is logged
//! and reported as such. A set that fails to load never replaces the running one; the error
//! is logged, kept for `/api/v1/slos`, and `vigil_config_last_reload_successful` drops to 0.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigil_alerting::{Alerting, AlertingConfig};
use vigil_ingest::scrape::Scraper;
use vigil_query::slo::Definitions;
use vigil_query::slo::SloEvaluator;
use vigil_query::slo::schedule::Schedule;
use vigil_web::{Reload, ReloadRefused, ReloadStatus};

use crate::config::Config;
pub(crate) use vigil_storage::clock::now_ms;

/// Lays the start's flags and variables over a config read from its file.
pub type Overlay = Box<dyn Fn(&mut Config) + Send + Sync>;

/// What a reload changes while Vigil runs.
pub struct Live {
    pub evaluator: Arc<SloEvaluator>,
    pub alerting: Alerting,
    pub scraper: Arc<Scraper>,
    pub schedule: tokio::sync::watch::Sender<Schedule>,
}

pub struct DefinitionReloader {
    /// The config file, re-read on reload; `None` runs on the start-up config.
    config_path: Option<PathBuf>,
    overlay: Overlay,
    /// The settings in force: those of the start, with the ones reloads apply updated.
    running: Mutex<Config>,
    live: Live,
    status: RwLock<ReloadStatus>,
    /// What the files looked like at the last load, to notice changes.
    fingerprint: Mutex<Vec<(PathBuf, Option<SystemTime>, u64)>>,
}

/// The top-level settings that differ between `running` and `next` and that only a restart
/// applies.
fn restart_needed(running: &Config, next: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($field:ident),*) => {
            $(if running.$field != next.$field { changed.push(stringify!($field).to_string()); })*
        };
    }
    compare!(listen, external_url, storage, limits, query, log, alerting, drift, reports, auth, tls, cluster);
    changed
}

impl DefinitionReloader {
    pub fn new(config_path: Option<PathBuf>, startup: Config, overlay: Overlay, live: Live) -> Self {
        DefinitionReloader {
            config_path,
            overlay,
            running: Mutex::new(startup),
            live,
            status: RwLock::new(ReloadStatus::default()),
            fingerprint: Mutex::new(Vec::new()),
        }
    }

    /// The config as a start would read it now: the file, then the flags, then the bounds.
    fn config(&self) -> Result<Config, String> {
        let Some(path) = &self.config_path else { return Ok(self.running.lock().clone()) };
        let mut config = Config::load(path).map_err(|e| e.to_string())?;
        (self.overlay)(&mut config);
        config.check_bounds()?;
        Ok(config)
    }

    fn definition_files(config: &Config) -> Result<Vec<PathBuf>, String> {
        let expand = |patterns| vigil_query::slo::expand(&config.base_dir, patterns).map_err(|e| e.to_string());
        let mut files = expand(&config.slos)?;
        files.extend(expand(&config.rules)?);
        Ok(files)
    }

    /// Loads the definitions `config` names, without applying them.
    fn load(config: &Config) -> Result<(Definitions, AlertingConfig), String> {
        let files = vigil_query::slo::expand(&config.base_dir, &config.slos).map_err(|e| e.to_string())?;
        let slos = vigil_query::slo::load_definition_files(&files, Some(&config.receiver_names()))
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
        let loaded = self.config().and_then(|config| Self::load(&config).map(|loaded| (config, loaded)));
        let (config, (definitions, alerting)) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => return self.failed(error),
        };
        let count = definitions.slos.len();
        let rules: usize = alerting.groups.iter().map(|g| g.rules.len()).sum();
        let live = &self.live;
        live.alerting.set_default_interval(config.evaluation_interval.0);
        if let Err(error) = live.alerting.configure(&alerting) {
            return self.failed(error.to_string());
        }
        live.evaluator.set_definitions(definitions.slos).await;
        live.evaluator.set_file_corrections(definitions.corrections, now_ms()).await;
        let (every, save_every) = (config.evaluation_interval.0, config.slo_state_save_interval.0);
        live.schedule.send_if_modified(|schedule| {
            let changed = (schedule.every, schedule.save_every) != (every, save_every);
            (schedule.every, schedule.save_every) = (every, save_every);
            if changed {
                info!(evaluation_interval = ?every, slo_state_save_interval = ?save_every, "evaluation schedule changed");
            }
            changed
        });
        let (started, stopped) = live.scraper.set_targets(config.scrape_targets());
        if started + stopped > 0 {
            info!(started, stopped, "scrape targets changed");
        }
        let restart_needed = {
            let mut running = self.running.lock();
            let needed = restart_needed(&running, &config);
            running.slos = config.slos;
            running.rules = config.rules;
            running.receivers = config.receivers;
            running.route = config.route;
            running.inhibit_rules = config.inhibit_rules;
            running.evaluation_interval = config.evaluation_interval;
            running.slo_state_save_interval = config.slo_state_save_interval;
            running.scrape_configs = config.scrape_configs;
            needed
        };
        for setting in &restart_needed {
            warn!(setting = %setting, "changed in the config; takes effect at the next restart");
        }
        *self.status.write() =
            ReloadStatus { successful: true, at_ms: now_ms(), error: None, slos: count, restart_needed };
        metrics::gauge!("vigil_config_last_reload_successful").set(1.0);
        metrics::gauge!("vigil_config_last_reload_success_timestamp_seconds").set(now_ms() as f64 / 1000.0);
        info!(slos = count, rules, "definitions loaded");
        Ok(())
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
