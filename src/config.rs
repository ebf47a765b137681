//! The configuration file, typed. Every section has defaults that run out of the box; an
//! unknown key or a bad value is an error at `file:line:col`. Flags and `VIGIL_*` variables
//! (see `cli.rs`) override the file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use serde_saphyr::Spanned;
pub use vigil_query::PromDuration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: ListenConfig,
    /// The URL people reach Vigil at; used in links from alerts.
    pub external_url: Option<String>,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub query: QueryConfig,
    pub log: LogConfig,
    /// Prometheus-style pull, besides push.
    pub scrape_configs: Vec<ScrapeConfig>,
    /// SLO files (globs, relative to this file).
    pub slos: Vec<String>,
    /// Prometheus rule files (globs, relative to this file).
    pub rules: Vec<String>,
    /// How often SLOs (and rule groups without an `interval`) are evaluated.
    pub evaluation_interval: PromDuration,
    /// How often the SLO evaluator's state is saved (and at shutdown); `0`: at shutdown only.
    pub slo_state_save_interval: PromDuration,
    /// Where notifications go.
    pub receivers: Vec<vigil_alerting::config::ReceiverConfig>,
    /// The routing tree, as Alertmanager's; without one, everything goes to the first receiver.
    pub route: Option<vigil_alerting::config::RouteConfig>,
    /// Without them, a page inhibits the ticket of the same SLO.
    pub inhibit_rules: Option<Vec<vigil_alerting::config::InhibitRuleConfig>>,
    pub alerting: AlertingSettings,
    /// Model drift scoring.
    pub drift: DriftConfig,
    /// Scheduled SLO reports.
    pub reports: ReportsConfig,
    pub auth: AuthConfig,
    /// Serve every listener over TLS; plain HTTP without it.
    pub tls: Option<TlsConfig>,
    /// Several nodes on one object store.
    pub cluster: ClusterConfig,
    /// The directory relative paths of the file are resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: ListenConfig::default(),
            external_url: None,
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            query: QueryConfig::default(),
            log: LogConfig::default(),
            cluster: ClusterConfig::default(),
            scrape_configs: Vec::new(),
            slos: Vec::new(),
            rules: Vec::new(),
            evaluation_interval: PromDuration(Duration::from_secs(30)),
            slo_state_save_interval: PromDuration(Duration::from_secs(300)),
            receivers: Vec::new(),
            route: None,
            inhibit_rules: None,
            alerting: AlertingSettings::default(),
            drift: DriftConfig::default(),
            reports: ReportsConfig::default(),
            auth: AuthConfig::default(),
            tls: None,
            base_dir: PathBuf::from("."),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingSettings {
    /// Delivery attempts per notification (with exponential backoff) before it counts as failed.
    pub max_attempts: u32,
}

impl Default for AlertingSettings {
    fn default() -> Self {
        AlertingSettings { max_attempts: 5 }
    }
}

/// The scheduled report digest: each calendar period's compliance report mailed to
/// `receivers` once the period ends.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReportsConfig {
    /// `week`, `month` or `quarter`; none: no scheduled reports.
    pub every: Option<String>,
    /// The zone the periods are calendar periods of.
    pub time_zone: String,
    /// Receivers (of `receivers`) with an email integration.
    pub receivers: Vec<String>,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig { every: None, time_zone: "UTC".into(), receivers: Vec::new() }
    }
}

impl ReportsConfig {
    /// What a schedule needs: a known period kind, a time zone, and receivers that exist.
    fn check(&self, known: &std::collections::BTreeSet<String>) -> Result<(), String> {
        if vigil_query::slo::report::Period::month_of(0, &self.time_zone).is_err() {
            return Err(format!("reports.time_zone {:?} is not an IANA time zone (e.g. Europe/Paris)", self.time_zone));
        }
        let Some(every) = &self.every else { return Ok(()) };
        if !matches!(every.as_str(), "week" | "month" | "quarter") {
            return Err(format!("reports.every {every:?} is not week, month or quarter"));
        }
        if self.receivers.is_empty() {
            return Err("reports.every is set but reports.receivers names no receiver".into());
        }
        if let Some(unknown) = self.receivers.iter().find(|r| !known.contains(*r)) {
            return Err(format!("reports.receivers names {unknown:?}, which is not among receivers"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    /// Width of a scoring window (windows align to multiples of it).
    pub window: PromDuration,
    /// Fewer values than this on either side of a window: no scores.
    pub min_samples: u64,
    /// How often windows that received data are scored and written.
    pub flush_interval: PromDuration,
    /// Thresholds of the per-model view, per statistic, laid over the defaults (PSI 0.2,
    /// js_distance 0.1, ks_p 0.05); p-values drift below theirs, the others at or above.
    pub thresholds: std::collections::BTreeMap<String, Spanned<f64>>,
}

impl Default for DriftConfig {
    fn default() -> Self {
        let defaults = vigil_drift::DriftOptions::default();
        DriftConfig {
            window: PromDuration(defaults.window),
            min_samples: defaults.min_samples,
            flush_interval: PromDuration(defaults.flush_interval),
            thresholds: Default::default(),
        }
    }
}

/// Bearer tokens. None configured: every endpoint is open (the loopback default); any
/// configured: every endpoint but `/-/healthy` and `/-/ready` needs one with the right scope.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
    /// A file of more tokens, one `NAME:SCOPES:TOKEN` per line (`#` comments): tokens kept
    /// out of the config and off the command line.
    pub tokens_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: Spanned<String>,
    /// The token itself; `token_env` keeps it out of the file.
    #[serde(default)]
    pub token: Option<Secret>,
    /// The environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A file holding the token (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    pub scopes: Vec<Scope>,
}

pub use vigil_web::Scope;

/// A value that never shows in logs or `Debug` output.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl AuthConfig {
    /// The tokens with their secrets read (from the file or the environment).
    pub fn resolve(&self) -> Result<Vec<vigil_web::TokenSpec>, String> {
        let mut specs = self
            .tokens
            .iter()
            .map(|token| {
                let secret = match (&token.token, &token.token_env, &token.token_file) {
                    (Some(secret), _, _) => secret.0.clone(),
                    (None, Some(var), _) => std::env::var(var).map_err(|_| {
                        format!("auth token {:?}: environment variable {var} is not set", token.name.value)
                    })?,
                    (None, None, Some(file)) => std::fs::read_to_string(file)
                        .map_err(|e| format!("auth token {:?}: reading {}: {e}", token.name.value, file.display()))?,
                    (None, None, None) => {
                        return Err(format!(
                            "auth token {:?} has none of token, token_env, token_file",
                            token.name.value
                        ));
                    }
                };
                if secret.trim().is_empty() {
                    return Err(format!("auth token {:?} is empty", token.name.value));
                }
                Ok(vigil_web::TokenSpec {
                    name: token.name.value.clone(),
                    secret: secret.trim().to_string(),
                    scopes: token.scopes.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if let Some(file) = &self.tokens_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("reading the tokens file {}: {e}", file.display()))?;
            for (index, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let token: crate::cli::TokenArg =
                    line.parse().map_err(|e| format!("{}:{}: {e}", file.display(), index + 1))?;
                specs.push(token.into_spec());
            }
        }
        Ok(specs)
    }
}

/// TLS for every listener (API, OTLP/HTTP, OTLP/gRPC), PEM files.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PKCS#8, PKCS#1 or SEC1 private key.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: Spanned<String>,
    #[serde(default = "ScrapeConfig::default_interval")]
    pub scrape_interval: PromDuration,
    pub scrape_timeout: Option<Spanned<PromDuration>>,
    #[serde(default = "ScrapeConfig::default_path")]
    pub metrics_path: String,
    #[serde(default = "ScrapeConfig::default_scheme")]
    pub scheme: Spanned<String>,
    #[serde(default)]
    pub honor_labels: bool,
    /// Keep the timestamps the exposition gives (Prometheus's default).
    #[serde(default = "ScrapeConfig::default_honor_timestamps")]
    pub honor_timestamps: bool,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    /// Rules over each target's labels (`__address__`, `__scheme__`, `__metrics_path__`,
    /// `job`, the static labels) before it is scraped.
    #[serde(default)]
    pub relabel_configs: Vec<vigil_ingest::relabel::RelabelConfig>,
    /// Rules over each scraped sample's labels before it is stored.
    #[serde(default)]
    pub metric_relabel_configs: Vec<vigil_ingest::relabel::RelabelConfig>,
}

impl ScrapeConfig {
    fn default_interval() -> PromDuration {
        PromDuration(Duration::from_secs(60))
    }

    fn default_path() -> String {
        "/metrics".into()
    }

    fn default_honor_timestamps() -> bool {
        true
    }

    /// Both rule lists compiled; the first bad rule named by its job, list and place.
    pub fn rules(&self) -> Result<(Vec<vigil_ingest::relabel::Rule>, Vec<vigil_ingest::relabel::Rule>), String> {
        let compile = |list: &str, configs| {
            vigil_ingest::relabel::compile_all(configs)
                .map_err(|(index, error)| format!("scrape_configs[{}].{list}[{index}]: {error}", self.job_name.value))
        };
        Ok((
            compile("relabel_configs", &self.relabel_configs)?,
            compile("metric_relabel_configs", &self.metric_relabel_configs)?,
        ))
    }

    fn default_scheme() -> Spanned<String> {
        Spanned::new("http".to_string(), serde_saphyr::Location::UNKNOWN, serde_saphyr::Location::UNKNOWN)
    }

    /// Prometheus's default: 10s, or the interval when that is shorter.
    pub fn timeout(&self) -> Duration {
        self.scrape_timeout.as_ref().map_or(Duration::from_secs(10).min(self.scrape_interval.0), |t| t.value.0)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    pub targets: Vec<Spanned<String>>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// API, dashboard and ops endpoints (and the OTLP/HTTP routes).
    pub http: SocketAddr,
    /// OTLP/HTTP receiver.
    pub otlp_http: SocketAddr,
    /// OTLP/gRPC receiver.
    pub otlp_grpc: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            http: SocketAddr::from(([127, 0, 0, 1], 9400)),
            otlp_http: SocketAddr::from(([127, 0, 0, 1], 4318)),
            otlp_grpc: SocketAddr::from(([127, 0, 0, 1], 4317)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub retention: PromDuration,
    /// Time span of one Parquet partition.
    pub partition: PromDuration,
    pub flush_interval: PromDuration,
    /// Memory budget of the write buffer.
    pub buffer_size: ByteSize,
    /// Rows one compaction merges (in memory) at most.
    pub compaction_max_rows: u64,
    /// Closed partitions of one window this long merge into one segment; 0 keeps them apart.
    pub compaction_window: PromDuration,
    /// Memory kept for segments' series indexes.
    pub index_cache_size: ByteSize,
    /// Memory for remote write's cache of the series it has decoded.
    pub series_cache_size: ByteSize,
    pub wal: WalConfig,
    /// Where segments and manifests live: local disk by default; S3, GCS or Azure.
    pub object_store: vigil_storage::store::ObjectStoreConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./vigil-data"),
            retention: PromDuration::days(30),
            partition: PromDuration(Duration::from_secs(2 * 3600)),
            flush_interval: PromDuration(Duration::from_secs(600)),
            buffer_size: ByteSize::gib(1),
            compaction_max_rows: vigil_storage::StorageOptions::new(".").compaction_max_rows,
            compaction_window: PromDuration(vigil_storage::StorageOptions::new(".").compaction_window),
            index_cache_size: ByteSize::b(vigil_storage::series_index::DEFAULT_CACHE_BYTES as u64),
            series_cache_size: ByteSize::b(vigil_ingest::series_cache::SeriesCache::DEFAULT_BYTES as u64),
            wal: WalConfig::default(),
            object_store: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    Always,
    Interval,
    Never,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    pub fsync: FsyncMode,
    /// With `fsync: interval`, how often the WAL is synced.
    pub fsync_interval: PromDuration,
    /// Bytes that may queue for the WAL writer before writes are refused.
    pub max_pending: ByteSize,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            fsync: FsyncMode::Always,
            fsync_interval: PromDuration(Duration::from_secs(1)),
            max_pending: ByteSize::mib(256),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_body_size: ByteSize,
    pub max_decompressed_size: ByteSize,
    pub max_series_per_request: usize,
    pub max_samples_per_request: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub max_concurrent_ingest: usize,
    pub max_concurrent_queries: usize,
    /// Bytes in a metric name (a metric name is also a table name).
    pub max_metric_name_length: usize,
    /// Oldest sample accepted, relative to now; unset: the retention; `0`: any time since 1970.
    pub max_past: Option<PromDuration>,
    /// Newest sample accepted, ahead of now.
    pub max_future: PromDuration,
    /// Metric names (tables) held; a new name past it is refused.
    pub max_metric_names: usize,
    /// Active series over all metrics.
    pub max_series: usize,
    /// Active series of one metric.
    pub max_series_per_metric: usize,
    /// New series one request may add.
    pub max_new_series_per_request: usize,
    /// A series not written for this long stops counting as active.
    pub active_series_window: PromDuration,
    /// Open connections over all listeners.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_client: usize,
    /// The TLS handshake and each request's headers must arrive within this.
    pub header_read_timeout: PromDuration,
    /// A request body must arrive whole within this (408).
    pub body_read_timeout: PromDuration,
    /// A connection with nothing in flight and nothing moving is closed after this.
    pub idle_timeout: PromDuration,
    /// Failed tokens one client may present per minute before it gets 429 for a minute.
    pub max_auth_failures_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let ingest = vigil_ingest::Limits::default();
        let http = vigil_web::HttpOptions::default();
        let cardinality = vigil_storage::cardinality::CardinalityLimits::default();
        let connections = vigil_web::server::ConnectionLimits::default();
        LimitsConfig {
            max_body_size: ByteSize::b(http.max_body_bytes as u64),
            max_decompressed_size: ByteSize::b(ingest.max_decompressed_bytes as u64),
            max_series_per_request: ingest.max_series_per_request,
            max_samples_per_request: ingest.max_samples_per_request,
            max_labels_per_series: ingest.max_labels_per_series,
            max_label_name_length: ingest.max_label_name_bytes,
            max_label_value_length: ingest.max_label_value_bytes,
            max_concurrent_ingest: http.max_concurrent_ingest,
            max_concurrent_queries: http.max_concurrent_queries,
            max_metric_name_length: ingest.max_metric_name_bytes,
            max_past: None,
            max_future: PromDuration(ingest.max_future),
            max_metric_names: cardinality.max_metric_names,
            max_series: cardinality.max_series,
            max_series_per_metric: cardinality.max_series_per_metric,
            max_new_series_per_request: cardinality.max_new_series_per_request,
            active_series_window: PromDuration(cardinality.active_window),
            max_connections: connections.max_connections,
            max_connections_per_client: connections.max_connections_per_client,
            header_read_timeout: PromDuration(connections.header_read_timeout),
            body_read_timeout: PromDuration(http.body_read_timeout),
            idle_timeout: PromDuration(connections.idle_timeout),
            max_auth_failures_per_minute: vigil_web::auth::DEFAULT_FAILURES_PER_MINUTE,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name in the shared store; default: the one made up at first start and
    /// kept in `data_dir/node_id`.
    pub node_id: Option<String>,
    /// How often other nodes' manifests are re-read: how late their flushed data may show.
    pub peer_refresh: PromDuration,
    /// Lifetime of the alerting lease: how long alerting pauses when its node dies.
    pub lease_ttl: PromDuration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: None,
            peer_refresh: PromDuration(Duration::from_secs(15)),
            lease_ttl: PromDuration(Duration::from_secs(15)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    pub timeout: PromDuration,
    pub max_memory: ByteSize,
    /// A Ballista scheduler (`df://host:50050`): SQL over long ranges runs there.
    pub ballista_scheduler: Option<String>,
    /// SQL scanning at least this much time (or unbounded) goes to Ballista.
    pub ballista_min_range: PromDuration,
    /// Longest query text (SQL or PromQL).
    pub max_length: ByteSize,
    /// Deepest nesting of a query's expressions.
    pub max_depth: usize,
    /// Rows a SQL result may have (422 above).
    pub max_result_rows: usize,
    /// Bytes a SQL result may hold in memory (422 above).
    pub max_result_bytes: ByteSize,
    /// Samples one PromQL query may load and produce (422 above).
    pub max_samples: usize,
    /// Threads one query computes on at most; 0 = one per CPU.
    pub max_workers_per_query: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        let defaults = vigil_query::QueryOptions::default();
        QueryConfig {
            timeout: PromDuration(defaults.timeout),
            max_memory: ByteSize::b(defaults.max_memory_bytes as u64),
            ballista_scheduler: None,
            ballista_min_range: PromDuration::days(7),
            max_length: ByteSize::b(defaults.shape.max_length as u64),
            max_depth: defaults.shape.max_depth,
            max_result_rows: defaults.max_result_rows,
            max_result_bytes: ByteSize::b(defaults.max_result_bytes as u64),
            max_samples: defaults.max_samples,
            max_workers_per_query: defaults.max_workers_per_query,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `vigil_storage=debug,info`, ...
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event; coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// A config error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Turns a serde-saphyr error into `file:line:col: message`.
pub fn yaml_error(path: &Path, error: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = error.location().map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
    let text = error.without_snippet().to_string();
    let suffix = format!(" at line {line}, column {column}");
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
    ConfigError { path: path.to_path_buf(), line, column, message }
}

impl Config {
    /// Parses a config file. Relative paths in it are relative to the file's directory.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| yaml_error(path, &e))?
        };
        config.check(path)?;
        if let Some(base) = path.parent() {
            config.base_dir = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base.to_path_buf() };
            if config.storage.data_dir.is_relative() {
                config.storage.data_dir = base.join(&config.storage.data_dir);
            }
            if let Some(path) = &mut config.storage.object_store.path
                && path.is_relative()
            {
                *path = base.join(&*path);
            }
            if let Some(tls) = &mut config.tls {
                tls.cert_file = base.join(&tls.cert_file);
                tls.key_file = base.join(&tls.key_file);
            }
            let token_files = config.auth.tokens.iter_mut().filter_map(|t| t.token_file.as_mut());
            for file in token_files.chain(config.auth.tokens_file.as_mut()) {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    /// The scrape targets of every scrape config.
    /// The targets to scrape, after each job's `relabel_configs` (a target they drop, or
    /// leave without an address, is not scraped). Bad rules were refused by `check_bounds`.
    pub fn scrape_targets(&self) -> Vec<vigil_ingest::scrape::ScrapeTarget> {
        let mut targets = Vec::new();
        for scrape in &self.scrape_configs {
            let Ok((relabel, metric_relabel)) = scrape.rules() else { continue };
            for static_config in &scrape.static_configs {
                for address in &static_config.targets {
                    let mut labels: std::collections::BTreeMap<String, String> = static_config.labels.clone();
                    labels.insert("job".into(), scrape.job_name.value.clone());
                    labels.insert("__address__".into(), address.value.clone());
                    labels.insert("__scheme__".into(), scrape.scheme.value.clone());
                    labels.insert("__metrics_path__".into(), scrape.metrics_path.clone());
                    let Some(mut labels) = vigil_ingest::relabel::relabel(labels, &relabel) else { continue };
                    let Some(address) = labels.remove("__address__") else { continue };
                    let scheme = labels.remove("__scheme__").unwrap_or_else(|| scrape.scheme.value.clone());
                    let metrics_path = labels.remove("__metrics_path__").unwrap_or_else(|| scrape.metrics_path.clone());
                    let job = labels.remove("job").unwrap_or_else(|| scrape.job_name.value.clone());
                    labels.retain(|name, _| !name.starts_with("__"));
                    targets.push(vigil_ingest::scrape::ScrapeTarget {
                        job,
                        address,
                        scheme,
                        metrics_path,
                        interval: scrape.scrape_interval.0,
                        timeout: scrape.timeout(),
                        honor_labels: scrape.honor_labels,
                        labels: labels.into_iter().collect(),
                        honor_timestamps: scrape.honor_timestamps,
                        metric_relabel: metric_relabel.clone(),
                    });
                }
            }
        }
        targets
    }

    /// The bounds a setting must keep for Vigil to run (start-up used to clamp them
    /// silently): checked for a file by `load` (so `vigil validate` reports them) and for
    /// flags and variables once they are laid over it.
    pub fn check_bounds(&self) -> Result<(), String> {
        for scrape in &self.scrape_configs {
            scrape.rules()?;
        }
        let durations = [
            ("storage.partition", self.storage.partition.0, Duration::from_secs(60)),
            ("storage.flush_interval", self.storage.flush_interval.0, Duration::from_secs(1)),
            ("evaluation_interval", self.evaluation_interval.0, Duration::from_secs(1)),
            ("cluster.lease_ttl", self.cluster.lease_ttl.0, Duration::from_secs(1)),
            ("limits.header_read_timeout", self.limits.header_read_timeout.0, Duration::from_millis(100)),
            ("limits.idle_timeout", self.limits.idle_timeout.0, Duration::from_millis(100)),
        ];
        for (name, value, least) in durations {
            if value < least {
                return Err(format!("{name} is {}, under its least of {}", PromDuration(value), PromDuration(least)));
            }
        }
        let (window, partition) = (self.storage.compaction_window.0, self.storage.partition.0);
        if !window.is_zero() && window.as_nanos() % partition.as_nanos() != 0 {
            return Err(format!(
                "storage.compaction_window is {}, not a whole number of partitions of {} (0 turns it off)",
                PromDuration(window),
                PromDuration(partition)
            ));
        }
        let counts = [
            ("storage.compaction_max_rows", self.storage.compaction_max_rows, 1),
            ("alerting.max_attempts", u64::from(self.alerting.max_attempts), 1),
            ("drift.min_samples", self.drift.min_samples, 1),
            ("query.max_depth", self.query.max_depth as u64, 2),
            ("limits.max_connections_per_client", self.limits.max_connections_per_client as u64, 1),
        ];
        for (name, value, least) in counts {
            if value < least {
                return Err(format!("{name} is {value}, under its least of {least}"));
            }
        }
        self.reports.check(&self.receiver_names())?;
        self.check_features()
    }

    /// Settings that need a part this build was made without (README, "Building").
    fn check_features(&self) -> Result<(), String> {
        if !vigil_query::distributed::AVAILABLE && self.query.ballista_scheduler.is_some() {
            return Err("query.ballista_scheduler is set, but this build has no distributed queries: build with the `distributed` feature (on by default)".into());
        }
        self.storage.object_store.check_supported().map_err(|e| e.to_string())
    }

    /// Checks what types alone cannot, pointing at the offending value.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let at = |location: serde_saphyr::Location, message: String| ConfigError {
            path: path.to_path_buf(),
            line: location.line().max(1),
            column: location.column().max(1),
            message,
        };
        self.check_bounds().map_err(|message| ConfigError { path: path.to_path_buf(), line: 1, column: 1, message })?;
        vigil_alerting::config::check(
            &self.receivers,
            self.route.as_ref(),
            self.inhibit_rules.as_deref().unwrap_or_default(),
        )
        .map_err(|issue| at(issue.location, issue.message))?;
        for (statistic, value) in &self.drift.thresholds {
            let known = vigil_storage::schema::DRIFT_STATISTICS;
            if !known.contains(&statistic.as_str()) {
                return Err(at(
                    value.referenced,
                    format!("unknown drift statistic {statistic:?} in drift.thresholds; one of {}", known.join(", ")),
                ));
            }
            if !value.value.is_finite() {
                return Err(at(value.referenced, format!("the {statistic} threshold must be a finite number")));
            }
        }
        if self.drift.window.0 < Duration::from_secs(60) {
            return Err(ConfigError {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                message: format!("drift.window {} is under a minute", self.drift.window),
            });
        }
        let mut names = std::collections::HashSet::new();
        for token in &self.auth.tokens {
            let name = &token.name;
            if name.value.is_empty() || !names.insert(name.value.as_str()) {
                return Err(at(
                    name.referenced,
                    format!("auth token names must be unique and not empty ({:?})", name.value),
                ));
            }
            if token.token.is_some() == token.token_env.is_some() {
                return Err(at(
                    name.referenced,
                    format!("auth token {:?} needs exactly one of token and token_env", name.value),
                ));
            }
            if token.scopes.is_empty() {
                return Err(at(
                    name.referenced,
                    format!("auth token {:?} has no scopes; give it some of ingest, read, admin", name.value),
                ));
            }
        }
        let mut jobs = std::collections::HashSet::new();
        for scrape in &self.scrape_configs {
            let job = &scrape.job_name;
            if job.value.is_empty() {
                return Err(at(job.referenced, "job_name must not be empty".into()));
            }
            if !jobs.insert(job.value.as_str()) {
                return Err(at(job.referenced, format!("duplicate job_name {:?}", job.value)));
            }
            if let Some(timeout) = &scrape.scrape_timeout
                && timeout.value.0 > scrape.scrape_interval.0
            {
                let message = format!(
                    "scrape_timeout {} is greater than scrape_interval {}",
                    timeout.value, scrape.scrape_interval
                );
                return Err(at(timeout.referenced, message));
            }
            if !matches!(scrape.scheme.value.as_str(), "http" | "https") {
                return Err(at(
                    scrape.scheme.referenced,
                    format!("scheme must be http or https, not {:?}", scrape.scheme.value),
                ));
            }
            for target in scrape.static_configs.iter().flat_map(|c| &c.targets) {
                let valid = target
                    .value
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !valid {
                    return Err(at(target.referenced, format!("target {:?} is not host:port", target.value)));
                }
            }
        }
        Ok(())
    }

    /// Names of the configured receivers.
    pub fn receiver_names(&self) -> std::collections::BTreeSet<String> {
        self.receivers.iter().map(|r| r.name.value.clone()).collect()
    }

    /// The alerting part, with the rule files loaded.
    pub fn alerting(&self) -> Result<vigil_alerting::AlertingConfig, String> {
        let files = vigil_query::slo::expand(&self.base_dir, &self.rules).map_err(|e| e.to_string())?;
        let groups = vigil_alerting::rules::load_files(&files)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
        Ok(vigil_alerting::AlertingConfig {
            receivers: self.receivers.clone(),
            route: self.route.clone(),
            inhibit_rules: self.inhibit_rules.clone(),
            groups,
        })
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse(path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("vigil.yaml"), text)
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        assert_eq!(Config::parse(Path::new("vigil.yaml"), "").unwrap().listen, ListenConfig::default());
        assert_eq!(Config::default().storage.data_dir, PathBuf::from("./vigil-data"));
    }

    #[test]
    fn values_are_typed() {
        let config = parse(
            "storage:\n  retention: 7d\n  buffer_size: 256MiB\n  wal: {fsync: interval, fsync_interval: 200ms}\n",
        )
        .unwrap();
        assert_eq!(config.storage.retention.0, Duration::from_secs(7 * 86400));
        assert_eq!(config.storage.buffer_size, ByteSize::mib(256));
        assert_eq!(config.storage.wal.fsync, FsyncMode::Interval);
        assert_eq!(config.storage.wal.fsync_interval.0, Duration::from_millis(200));
    }

    #[test]
    fn drift_settings_are_checked_in_place() {
        let config = parse("drift:\n  window: 30m\n  thresholds: {psi: 0.25, ks_p: 0.01}\n").unwrap();
        assert_eq!(config.drift.window.0, Duration::from_secs(1800));
        assert_eq!(config.drift.thresholds["psi"].value, 0.25);
        assert_eq!(config.drift.min_samples, 5, "unset keys keep their defaults");
        let error = parse("drift:\n  thresholds:\n    psy: 0.2\n").unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.message.contains("unknown drift statistic \"psy\""), "{}", error.message);
        assert!(parse("drift: {window: 10s}\n").unwrap_err().message.contains("under a minute"));
    }

    #[test]
    fn scrape_configs_are_checked_in_place() {
        let config = parse("scrape_configs:\n  - job_name: node\n    scrape_interval: 15s\n    static_configs: [{targets: ['127.0.0.1:9100'], labels: {env: prod}}]\n").unwrap();
        assert_eq!(config.scrape_configs[0].timeout(), Duration::from_secs(10));
        assert_eq!(config.scrape_configs[0].static_configs[0].labels["env"], "prod");
        let error = parse("scrape_configs:\n  - job_name: a\n    static_configs: [{targets: [nohost]}]\n").unwrap_err();
        assert_eq!((error.line, error.column), (3, 33));
        assert_eq!(error.message, "target \"nohost\" is not host:port");
        let error =
            parse("scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n").unwrap_err();
        assert_eq!((error.line, error.message.as_str()), (4, "scrape_timeout 10s is greater than scrape_interval 5s"));
        let error = parse("scrape_configs:\n  - job_name: a\n  - job_name: a\n").unwrap_err();
        assert_eq!((error.line, error.column), (3, 15));
    }

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../tests/fixtures/vigil.example.yaml");
        let config = parse(text).unwrap();
        assert_eq!(config.receivers.len(), 2);
        assert_eq!(config.route.as_ref().unwrap().routes.len(), 1);
        assert_eq!(config.auth.tokens[0].scopes, [Scope::Ingest]);
    }

    #[test]
    fn tokens_are_checked_and_never_printed() {
        let config =
            parse("auth:\n  tokens:\n    - {name: ci, token: s3cret-value, scopes: [ingest, read]}\n").unwrap();
        assert!(!format!("{config:?}").contains("s3cret-value"), "Debug output shows the token");
        let specs = config.auth.resolve().unwrap();
        assert_eq!((specs[0].name.as_str(), specs[0].secret.as_str()), ("ci", "s3cret-value"));
        let error = parse("auth:\n  tokens:\n    - {name: ci, scopes: [read]}\n").unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.message.contains("exactly one of token and token_env"), "{}", error.message);
        let error = parse("auth:\n  tokens:\n    - {name: a, token: x, scopes: []}\n").unwrap_err();
        assert!(error.message.contains("no scopes"), "{}", error.message);
        let error = parse(
            "auth:\n  tokens:\n    - {name: a, token: x, scopes: [read]}\n    - {name: a, token: y, scopes: [read]}\n",
        )
        .unwrap_err();
        assert_eq!(error.line, 4);
        let error = parse("auth:\n  tokens:\n    - {name: a, token: x, scopes: [write]}\n").unwrap_err();
        assert!(error.message.contains("unknown variant `write`"), "{}", error.message);
        let config =
            parse("auth:\n  tokens:\n    - {name: a, token_env: VIGIL_TEST_UNSET_TOKEN_VAR, scopes: [read]}\n")
                .unwrap();
        assert!(config.auth.resolve().unwrap_err().contains("VIGIL_TEST_UNSET_TOKEN_VAR is not set"));
        let config =
            Config::parse(Path::new("/etc/vigil/vigil.yaml"), "tls: {cert_file: c.pem, key_file: /k.pem}\n").unwrap();
        let tls = config.tls.unwrap();
        assert_eq!((tls.cert_file, tls.key_file), (PathBuf::from("/etc/vigil/c.pem"), PathBuf::from("/k.pem")));
    }

    #[test]
    fn receivers_and_routes_are_checked_in_place() {
        let error = parse("receivers:\n  - name: mail\n    webhook: {url: 'http://x/'}\nroute:\n  receiver: mial\n")
            .unwrap_err();
        assert_eq!((error.line, error.column), (5, 13));
        assert!(error.message.contains("unknown receiver \"mial\" (did you mean \"mail\"?)"), "{}", error.message);
        let mail = "receivers:\n  - name: sre\n    email: {to: [a@b.c], from: v@b.c, smtp: {host: localhost}}\n";
        assert!(
            parse(&format!("{mail}reports: {{every: month, time_zone: Europe/Paris, receivers: [sre]}}\n")).is_ok()
        );
        for (reports, needle) in [
            ("{every: fortnight, receivers: [sre]}", "not week, month or quarter"),
            ("{every: month}", "names no receiver"),
            ("{every: month, receivers: [ops]}", "\"ops\", which is not among receivers"),
            ("{time_zone: Mars/Olympus}", "not an IANA time zone"),
        ] {
            let error = parse(&format!("{mail}reports: {reports}\n")).unwrap_err().to_string();
            assert!(error.contains(needle), "{reports}: {error}");
        }
        let error = parse("receivers:\n  - name: a\n    webhook: {url: 'ftp://x/'}\n").unwrap_err();
        assert_eq!(error.line, 3);
        let error = parse("receivers:\n  - name: a\n    webhook: {url: 'http://x/'}\nroute:\n  receiver: a\n  routes:\n    - matchers: ['severity=~\"(\"']\n").unwrap_err();
        assert_eq!(error.line, 7, "{error}");
    }

    #[test]
    fn errors_point_at_file_line_and_column() {
        let error = parse("storage:\n  data_dir: x\n  retentoin: 3d\n").unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("vigil.yaml:3:3: unknown field `retentoin`, expected one of"), "{text}");
        assert!(text.contains("retention"), "{text}");
        let error = parse("storage:\n  wal: {fsync: sometimes}\n").unwrap_err();
        assert_eq!((error.line, error.column), (2, 16));
        assert!(error.message.contains("unknown variant `sometimes`"), "{}", error.message);
        let error = parse("storage:\n  retention: soon\n").unwrap_err();
        assert_eq!((error.line, error.column), (2, 14));
        assert!(error.message.starts_with("invalid duration \"soon\""), "{}", error.message);
        let error = parse("listen:\n  http: not-an-address\n").unwrap_err();
        assert_eq!(error.line, 2);
    }

    #[test]
    fn settings_below_their_bounds_are_refused_not_clamped() {
        assert!(parse("storage:\n  partition: 1m\n").is_ok(), "at the bound");
        let error = parse("storage:\n  partition: 30s\n").unwrap_err();
        assert_eq!(error.message, "storage.partition is 30s, under its least of 1m");
        // The compaction window merges whole partitions.
        assert!(parse("storage:\n  partition: 2h\n  compaction_window: 4h\n").is_ok());
        assert!(parse("storage:\n  compaction_window: 0s\n").is_ok(), "0 turns it off");
        let error = parse("storage:\n  partition: 2h\n  compaction_window: 3h\n").unwrap_err();
        assert_eq!(
            error.message,
            "storage.compaction_window is 3h, not a whole number of partitions of 2h (0 turns it off)"
        );
        let error = parse("query:\n  max_depth: 1\n").unwrap_err();
        assert_eq!(error.message, "query.max_depth is 1, under its least of 2");
        assert!(parse("evaluation_interval: 1s\n").is_ok());
        assert!(parse("evaluation_interval: 500ms\n").is_err());
        // Flags are laid over the file, then checked the same way.
        let mut config = Config::default();
        config.alerting.max_attempts = 0;
        assert_eq!(config.check_bounds().unwrap_err(), "alerting.max_attempts is 0, under its least of 1");
        assert!(Config::default().check_bounds().is_ok());
    }

    /// A lean build (`--no-default-features`) refuses the settings that need what it lacks,
    /// where `vigil validate` shows them; the default build takes them.
    #[test]
    fn settings_that_need_a_left_out_feature_are_refused() {
        let ballista = parse("query:\n  ballista_scheduler: df://127.0.0.1:50050\n");
        assert_eq!(ballista.is_ok(), cfg!(feature = "distributed"), "{ballista:?}");
        if let Err(error) = ballista {
            assert!(error.message.contains("`distributed` feature"), "{}", error.message);
        }
        let s3 = parse("storage:\n  object_store: {kind: s3, bucket: b}\n");
        assert_eq!(s3.is_ok(), cfg!(feature = "cloud"), "{s3:?}");
        if let Err(error) = s3 {
            assert!(error.message.contains("`cloud` feature"), "{}", error.message);
        }
    }
}
