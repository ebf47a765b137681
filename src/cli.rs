//! Command line. Every setting of the config file that is a single value has a flag and a
//! `VIGIL_*` variable here; flags beat variables, variables beat the file. `vigil serve
//! --help` is the reference.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, FsyncMode, LogFormat, PromDuration, Scope, Secret, TlsConfig, TokenConfig};

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "One server for telemetry, SLOs, alerting and dashboards.",
    long_about = "Vigil receives telemetry (Prometheus remote write, OTLP, ...), stores it as Arrow and \
                  Parquet, answers SQL, and evaluates SLOs. Run `vigil serve` to start on embedded defaults."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Check config files; print `file:line:col: message` for each error. Exit 0 when valid, 1 when not.
    Validate(ValidateArgs),
    /// Check or repair this node's store (manifests and segments); takes serve's flags.
    Store(StoreArgs),
    /// Ask a running Vigil whether a service may deploy (its SLOs' error-budget policies).
    /// Exit 0 when allowed, 1 when frozen (reasons printed), 2 when there is no answer.
    Gate(GateArgs),
    /// SLO tools that ask a running Vigil.
    Slo(SloArgs),
    /// Run a Ballista scheduler for distributed queries (Ballista's flags: `-- --help`).
    BallistaScheduler(PassThrough),
    /// Run a Ballista executor for distributed queries (Ballista's flags: `-- --help`).
    BallistaExecutor(PassThrough),
}

#[derive(Debug, Clone, Args)]
pub struct GateArgs {
    /// The service whose SLOs decide.
    #[arg(long)]
    pub service: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct SloArgs {
    #[command(subcommand)]
    pub action: SloAction,
}

#[derive(Debug, Subcommand)]
pub enum SloAction {
    /// Replay a running Vigil's stored data through an SLO definition (one SLO in FILE) and
    /// print every page and ticket it would have fired. Exit 0 with an answer, 2 without.
    Backtest(BacktestArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BacktestArgs {
    /// The SLO file (one SLO, any dialect).
    pub file: PathBuf,
    /// Start of the replay (RFC 3339 or Unix seconds); default: the SLO's window before `to`.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the replay; default now.
    #[arg(long)]
    pub to: Option<String>,
    /// Print the server's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Where a client command finds Vigil.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the Vigil to ask.
    #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:9400")]
    pub url: String,
    /// Bearer token (read scope) when the server requires one.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seconds to wait for the answer (default: 10 for gate, 300 for backtest).
    #[arg(long)]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct PassThrough {
    /// Ballista's own arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub action: StoreAction,
}

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Read every manifest and decode every segment of this node; print each problem. Exit 1
    /// when there is one. Safe while the server runs.
    Check(Box<ServeArgs>),
    /// Rebuild lost partition manifests from their segment files, move unreadable segments
    /// aside, replace a damaged root. The server must be stopped.
    Repair(Box<ServeArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Config file (YAML). Without one, Vigil runs on embedded defaults.
    #[arg(long, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// The URL people reach Vigil at, used in links sent out.
    #[arg(long, env = "VIGIL_EXTERNAL_URL")]
    pub external_url: Option<String>,
    /// Log filter (`info`, `debug`, `vigil_storage=debug,info`).
    #[arg(long, env = "VIGIL_LOG")]
    pub log_level: Option<String>,
    /// Log lines as `text` (coloured only on a terminal) or `json` [default: text]
    #[arg(long, env = "VIGIL_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
    #[command(flatten)]
    pub query: QueryArgs,
    /// How often SLOs are evaluated [default: 30s]
    #[arg(long, env = "VIGIL_EVALUATION_INTERVAL")]
    pub evaluation_interval: Option<PromDuration>,
    /// How often the SLO state is saved, besides at shutdown; 0: at shutdown only [default: 5m]
    #[arg(long, env = "VIGIL_SLO_STATE_SAVE_INTERVAL")]
    pub slo_state_save_interval: Option<PromDuration>,
    /// SLO files (globs; comma-separated in the env var)
    #[arg(long = "slos", env = "VIGIL_SLOS", value_delimiter = ',')]
    pub slos: Vec<String>,
    /// Prometheus rule files (globs; comma-separated in the env var)
    #[arg(long = "rules", env = "VIGIL_RULES", value_delimiter = ',')]
    pub rules: Vec<String>,
    /// Delivery attempts per notification before it counts as failed [default: 5]
    #[arg(long, env = "VIGIL_ALERTING_MAX_ATTEMPTS")]
    pub alerting_max_attempts: Option<u32>,
    /// Mail each week's, month's or quarter's SLO report when it ends: week, month or quarter
    #[arg(long, env = "VIGIL_REPORT_EVERY")]
    pub report_every: Option<String>,
    /// Time zone the report periods are calendar periods of [default: UTC]
    #[arg(long, env = "VIGIL_REPORT_TIME_ZONE")]
    pub report_time_zone: Option<String>,
    /// Receivers the scheduled reports are mailed to (comma-separated)
    #[arg(long = "report-receivers", env = "VIGIL_REPORT_RECEIVERS", value_delimiter = ',')]
    pub report_receivers: Vec<String>,
    #[command(flatten)]
    pub drift: DriftArgs,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Object store and cluster")]
pub struct ClusterArgs {
    /// Where segments live: local, s3, gcs or azure [default: local]
    #[arg(long, env = "VIGIL_OBJECT_STORE_KIND", value_parser = parse_store_kind)]
    pub object_store_kind: Option<vigil_storage::store::StoreKind>,
    /// Bucket (S3, GCS) or container (Azure)
    #[arg(long, env = "VIGIL_OBJECT_STORE_BUCKET")]
    pub object_store_bucket: Option<String>,
    /// Key prefix inside the bucket
    #[arg(long, env = "VIGIL_OBJECT_STORE_PREFIX")]
    pub object_store_prefix: Option<String>,
    /// Directory of a local store shared by several nodes [default: DATA_DIR/segments]
    #[arg(long, env = "VIGIL_OBJECT_STORE_PATH")]
    pub object_store_path: Option<PathBuf>,
    /// S3-compatible endpoint URL (MinIO, moto, ...)
    #[arg(long, env = "VIGIL_OBJECT_STORE_ENDPOINT")]
    pub object_store_endpoint: Option<String>,
    /// Region of the bucket
    #[arg(long, env = "VIGIL_OBJECT_STORE_REGION")]
    pub object_store_region: Option<String>,
    /// Allow a plain-http endpoint
    #[arg(long, env = "VIGIL_OBJECT_STORE_ALLOW_HTTP")]
    pub object_store_allow_http: bool,
    /// This node's name in a shared store [default: kept in DATA_DIR/node_id]
    #[arg(long, env = "VIGIL_NODE_ID")]
    pub node_id: Option<String>,
    /// How often other nodes' manifests are re-read [default: 15s]
    #[arg(long, env = "VIGIL_PEER_REFRESH")]
    pub peer_refresh: Option<PromDuration>,
    /// Lifetime of the alerting lease: how long alerting pauses when its node dies [default: 15s]
    #[arg(long, env = "VIGIL_LEASE_TTL")]
    pub lease_ttl: Option<PromDuration>,
}

fn parse_store_kind(text: &str) -> Result<vigil_storage::store::StoreKind, String> {
    use vigil_storage::store::StoreKind;
    match text {
        "local" => Ok(StoreKind::Local),
        "s3" => Ok(StoreKind::S3),
        "gcs" => Ok(StoreKind::Gcs),
        "azure" => Ok(StoreKind::Azure),
        other => Err(format!("{other:?} is not one of local, s3, gcs, azure")),
    }
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Auth and TLS")]
pub struct SecurityArgs {
    /// A bearer token as NAME:SCOPES:TOKEN, scopes joined by `+` (`ci:ingest+read:...`);
    /// repeatable, comma-separated in the env var. Added to the file's `auth.tokens`.
    /// Prefer `token_env` in the file: flags show in the process list.
    #[arg(long = "auth-token", env = "VIGIL_AUTH_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub auth_tokens: Vec<TokenArg>,
    /// A file of tokens, one NAME:SCOPES:TOKEN per line (`#` comments), added to the file's
    /// `auth.tokens`: keeps tokens off the command line and out of the config
    #[arg(long, env = "VIGIL_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Certificate chain (PEM) to serve every listener over TLS; needs --tls-key-file
    #[arg(long, env = "VIGIL_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert-file
    #[arg(long, env = "VIGIL_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
}

/// `NAME:SCOPES:TOKEN` from the command line.
#[derive(Clone)]
pub struct TokenArg {
    name: String,
    scopes: Vec<Scope>,
    secret: Secret,
}

impl std::fmt::Debug for TokenArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenArg")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("secret", &self.secret)
            .finish()
    }
}

impl TokenArg {
    pub fn into_spec(self) -> vigil_web::TokenSpec {
        vigil_web::TokenSpec { name: self.name, secret: self.secret.0.trim().to_string(), scopes: self.scopes }
    }
}

impl std::str::FromStr for TokenArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.splitn(3, ':');
        let (Some(name), Some(scopes), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected NAME:SCOPES:TOKEN, e.g. ci:ingest+read:<token>".into());
        };
        let scopes = scopes.split('+').map(str::parse).collect::<Result<Vec<Scope>, _>>().map_err(|e| e.to_string())?;
        if name.is_empty() || secret.trim().is_empty() {
            return Err("the token's name and value must not be empty".into());
        }
        Ok(TokenArg { name: name.to_string(), scopes, secret: Secret(secret.to_string()) })
    }
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Model drift")]
pub struct DriftArgs {
    /// Width of a drift scoring window [default: 1h]
    #[arg(long, env = "VIGIL_DRIFT_WINDOW")]
    pub drift_window: Option<PromDuration>,
    /// Values needed on each side before a window is scored [default: 5]
    #[arg(long, env = "VIGIL_DRIFT_MIN_SAMPLES")]
    pub drift_min_samples: Option<u64>,
    /// How often windows that received data are scored [default: 10s]
    #[arg(long, env = "VIGIL_DRIFT_FLUSH_INTERVAL")]
    pub drift_flush_interval: Option<PromDuration>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Listeners")]
pub struct ListenArgs {
    /// Address of the HTTP API, dashboard and ops endpoints [default: 127.0.0.1:9400]
    #[arg(long, env = "VIGIL_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Address of the OTLP/HTTP receiver [default: 127.0.0.1:4318]
    #[arg(long, env = "VIGIL_OTLP_HTTP_ADDR")]
    pub otlp_http_addr: Option<SocketAddr>,
    /// Address of the OTLP/gRPC receiver [default: 127.0.0.1:4317]
    #[arg(long, env = "VIGIL_OTLP_GRPC_ADDR")]
    pub otlp_grpc_addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Storage")]
pub struct StorageArgs {
    /// Directory for the WAL and Parquet segments [default: ./vigil-data]
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Delete data older than this, whole segments at a time; 0 keeps everything [default: 30d]
    #[arg(long, env = "VIGIL_RETENTION")]
    pub retention: Option<PromDuration>,
    /// Time span of one Parquet partition: longer means fewer, larger files [default: 2h]
    #[arg(long, env = "VIGIL_PARTITION")]
    pub partition: Option<PromDuration>,
    /// Flush the write buffer to Parquet at least this often: longer means fewer files,
    /// more memory and a longer WAL replay after a crash [default: 10m]
    #[arg(long, env = "VIGIL_FLUSH_INTERVAL")]
    pub flush_interval: Option<PromDuration>,
    /// Memory budget of the write buffer; past half a flush starts, past all writes get 503 [default: 1GiB]
    #[arg(long, env = "VIGIL_BUFFER_SIZE")]
    pub buffer_size: Option<ByteSize>,
    /// Rows one compaction holds in memory at most (a partition's merge, a slice of series of a window's) [default: 2000000]
    #[arg(long, env = "VIGIL_COMPACTION_MAX_ROWS")]
    pub compaction_max_rows: Option<u64>,
    /// Merge closed partitions of one window this long into one segment (a multiple of
    /// --partition; 0 keeps partitions apart) [default: 1d]
    #[arg(long, env = "VIGIL_COMPACTION_WINDOW")]
    pub compaction_window: Option<PromDuration>,
    /// Memory kept for segments' series indexes (read once, then served from memory) [default: 64MiB]
    #[arg(long, env = "VIGIL_INDEX_CACHE_SIZE")]
    pub index_cache_size: Option<ByteSize>,
    /// Memory for remote write's cache of series it has decoded (0 turns it off) [default: 64MiB]
    #[arg(long, env = "VIGIL_SERIES_CACHE_SIZE")]
    pub series_cache_size: Option<ByteSize>,
    /// When a write is acknowledged: `always` after fdatasync (group commit), `interval` after
    /// reaching the OS with a sync every --wal-fsync-interval, `never` leaves syncing to the OS [default: always]
    #[arg(long, env = "VIGIL_WAL_FSYNC")]
    pub wal_fsync: Option<FsyncMode>,
    /// Sync period for `--wal-fsync interval`: the most an OS crash can lose [default: 1s]
    #[arg(long, env = "VIGIL_WAL_FSYNC_INTERVAL")]
    pub wal_fsync_interval: Option<PromDuration>,
    /// Bytes that may wait for the WAL writer before writes are refused with 503 [default: 256MiB]
    #[arg(long, env = "VIGIL_WAL_MAX_PENDING")]
    pub wal_max_pending: Option<ByteSize>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitsArgs {
    /// Largest request body, as sent (413 above) [default: 64MiB]
    #[arg(long, env = "VIGIL_MAX_BODY_SIZE")]
    pub max_body_size: Option<ByteSize>,
    /// Largest body once decompressed: refuses decompression bombs (413) [default: 256MiB]
    #[arg(long, env = "VIGIL_MAX_DECOMPRESSED_SIZE")]
    pub max_decompressed_size: Option<ByteSize>,
    /// Series in one write request (413 above) [default: 100000]
    #[arg(long, env = "VIGIL_MAX_SERIES_PER_REQUEST")]
    pub max_series_per_request: Option<usize>,
    /// Samples in one write request (413 above) [default: 1000000]
    #[arg(long, env = "VIGIL_MAX_SAMPLES_PER_REQUEST")]
    pub max_samples_per_request: Option<usize>,
    /// Labels on one series (400 above) [default: 128]
    #[arg(long, env = "VIGIL_MAX_LABELS_PER_SERIES")]
    pub max_labels_per_series: Option<usize>,
    /// Bytes in a label name (400 above) [default: 1024]
    #[arg(long, env = "VIGIL_MAX_LABEL_NAME_LENGTH")]
    pub max_label_name_length: Option<usize>,
    /// Bytes in a label value (400 above) [default: 16384]
    #[arg(long, env = "VIGIL_MAX_LABEL_VALUE_LENGTH")]
    pub max_label_value_length: Option<usize>,
    /// Ingest requests handled at once; more get 503 instead of queueing [default: 256]
    #[arg(long, env = "VIGIL_MAX_CONCURRENT_INGEST")]
    pub max_concurrent_ingest: Option<usize>,
    /// Queries (SQL, PromQL) handled at once; more get 503 instead of queueing [default: 64]
    #[arg(long, env = "VIGIL_MAX_CONCURRENT_QUERIES")]
    pub max_concurrent_queries: Option<usize>,
    /// Bytes in a metric name; a longer one is refused [default: 1024]
    #[arg(long, env = "VIGIL_MAX_METRIC_NAME_LENGTH")]
    pub max_metric_name_length: Option<usize>,
    /// Oldest sample accepted, relative to now; `0` takes any time since 1970 [default: the retention]
    #[arg(long, env = "VIGIL_MAX_PAST")]
    pub max_past: Option<PromDuration>,
    /// Newest sample accepted, ahead of now (senders' clock skew) [default: 1h]
    #[arg(long, env = "VIGIL_MAX_FUTURE")]
    pub max_future: Option<PromDuration>,
    /// Metric names (tables) held; a new one past it is refused. 0: no limit [default: 10000]
    #[arg(long, env = "VIGIL_MAX_METRIC_NAMES")]
    pub max_metric_names: Option<usize>,
    /// Active series over all metrics; new ones past it are refused. 0: no limit [default: 2000000]
    #[arg(long, env = "VIGIL_MAX_SERIES")]
    pub max_series: Option<usize>,
    /// Active series of one metric. 0: no limit [default: 500000]
    #[arg(long, env = "VIGIL_MAX_SERIES_PER_METRIC")]
    pub max_series_per_metric: Option<usize>,
    /// New series one request may add. 0: no limit [default: 100000]
    #[arg(long, env = "VIGIL_MAX_NEW_SERIES_PER_REQUEST")]
    pub max_new_series_per_request: Option<usize>,
    /// A series unwritten this long stops counting as active [default: 1h]
    #[arg(long, env = "VIGIL_ACTIVE_SERIES_WINDOW")]
    pub active_series_window: Option<PromDuration>,
    /// Open connections over all listeners; more are closed at once [default: 8192, at most the file-descriptor limit less 256]
    #[arg(long, env = "VIGIL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections from one client address [default: 512]
    #[arg(long, env = "VIGIL_MAX_CONNECTIONS_PER_CLIENT")]
    pub max_connections_per_client: Option<usize>,
    /// The TLS handshake and each request's headers must arrive within this [default: 30s]
    #[arg(long, env = "VIGIL_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<PromDuration>,
    /// A request body must arrive whole within this (408 past it) [default: 2m]
    #[arg(long, env = "VIGIL_BODY_READ_TIMEOUT")]
    pub body_read_timeout: Option<PromDuration>,
    /// A connection with no request in flight and no bytes moving is closed after this [default: 2m]
    #[arg(long, env = "VIGIL_IDLE_TIMEOUT")]
    pub idle_timeout: Option<PromDuration>,
    /// Failed tokens one client may present per minute; past it, 429 for a minute [default: 60]
    #[arg(long, env = "VIGIL_MAX_AUTH_FAILURES_PER_MINUTE")]
    pub max_auth_failures_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Queries")]
pub struct QueryArgs {
    /// Cancel a query running longer than this (503) [default: 2m]
    #[arg(long, env = "VIGIL_QUERY_TIMEOUT")]
    pub query_timeout: Option<PromDuration>,
    /// Memory all running queries may use together for sorts, joins and aggregations (422 above) [default: 1GiB]
    #[arg(long, env = "VIGIL_QUERY_MAX_MEMORY")]
    pub query_max_memory: Option<ByteSize>,
    /// Ballista scheduler (`df://host:50050`) for SQL over long ranges [default: none, all local]
    #[arg(long, env = "VIGIL_BALLISTA_SCHEDULER")]
    pub ballista_scheduler: Option<String>,
    /// SQL scanning at least this much time (or unbounded) runs on Ballista [default: 7d]
    #[arg(long, env = "VIGIL_BALLISTA_MIN_RANGE")]
    pub ballista_min_range: Option<PromDuration>,
    /// Longest query text, SQL or PromQL (400 above) [default: 256KiB]
    #[arg(long, env = "VIGIL_QUERY_MAX_LENGTH")]
    pub query_max_length: Option<ByteSize>,
    /// Deepest nesting of a query's expressions (400 above) [default: 128]
    #[arg(long, env = "VIGIL_QUERY_MAX_DEPTH")]
    pub query_max_depth: Option<usize>,
    /// Rows a SQL result may have (422 above) [default: 1000000]
    #[arg(long, env = "VIGIL_QUERY_MAX_RESULT_ROWS")]
    pub query_max_result_rows: Option<usize>,
    /// Bytes a SQL result may hold in memory (422 above) [default: 256MiB]
    #[arg(long, env = "VIGIL_QUERY_MAX_RESULT_BYTES")]
    pub query_max_result_bytes: Option<ByteSize>,
    /// Samples one PromQL query may load and produce (422 above) [default: 20000000]
    #[arg(long, env = "VIGIL_QUERY_MAX_SAMPLES")]
    pub query_max_samples: Option<usize>,
    /// Threads one query computes on at most; 0 = one per CPU [default: 0]
    #[arg(long, env = "VIGIL_QUERY_MAX_WORKERS_PER_QUERY")]
    pub query_max_workers_per_query: Option<usize>,
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

impl ServeArgs {
    /// Lays flags and variables over the file's settings.
    pub fn apply(&self, config: &mut Config) {
        set(&mut config.external_url, self.external_url.clone().map(Some));
        set(&mut config.log.level, self.log_level.clone());
        set(&mut config.log.format, self.log_format);
        set(&mut config.evaluation_interval, self.evaluation_interval);
        set(&mut config.slo_state_save_interval, self.slo_state_save_interval);
        if let Some(every) = &self.report_every {
            config.reports.every = Some(every.clone());
        }
        set(&mut config.reports.time_zone, self.report_time_zone.clone());
        if !self.report_receivers.is_empty() {
            config.reports.receivers = self.report_receivers.clone();
        }
        if !self.slos.is_empty() {
            config.slos = self.slos.clone();
        }
        if !self.rules.is_empty() {
            config.rules = self.rules.clone();
        }
        set(&mut config.alerting.max_attempts, self.alerting_max_attempts);
        set(&mut config.drift.window, self.drift.drift_window);
        set(&mut config.drift.min_samples, self.drift.drift_min_samples);
        set(&mut config.drift.flush_interval, self.drift.drift_flush_interval);
        set(&mut config.listen.http, self.listen.http_addr);
        set(&mut config.listen.otlp_http, self.listen.otlp_http_addr);
        set(&mut config.listen.otlp_grpc, self.listen.otlp_grpc_addr);

        let storage = &mut config.storage;
        set(&mut storage.data_dir, self.storage.data_dir.clone());
        set(&mut storage.retention, self.storage.retention);
        set(&mut storage.partition, self.storage.partition);
        set(&mut storage.flush_interval, self.storage.flush_interval);
        set(&mut storage.buffer_size, self.storage.buffer_size);
        set(&mut storage.compaction_max_rows, self.storage.compaction_max_rows);
        set(&mut storage.compaction_window, self.storage.compaction_window);
        set(&mut storage.index_cache_size, self.storage.index_cache_size);
        set(&mut storage.series_cache_size, self.storage.series_cache_size);
        set(&mut storage.wal.fsync, self.storage.wal_fsync);
        set(&mut storage.wal.fsync_interval, self.storage.wal_fsync_interval);
        set(&mut storage.wal.max_pending, self.storage.wal_max_pending);

        let limits = &mut config.limits;
        set(&mut limits.max_body_size, self.limits.max_body_size);
        set(&mut limits.max_decompressed_size, self.limits.max_decompressed_size);
        set(&mut limits.max_series_per_request, self.limits.max_series_per_request);
        set(&mut limits.max_samples_per_request, self.limits.max_samples_per_request);
        set(&mut limits.max_labels_per_series, self.limits.max_labels_per_series);
        set(&mut limits.max_label_name_length, self.limits.max_label_name_length);
        set(&mut limits.max_label_value_length, self.limits.max_label_value_length);
        set(&mut limits.max_concurrent_ingest, self.limits.max_concurrent_ingest);

        set(&mut limits.max_concurrent_queries, self.limits.max_concurrent_queries);
        set(&mut limits.max_metric_name_length, self.limits.max_metric_name_length);
        set(&mut limits.max_past, self.limits.max_past.map(Some));
        set(&mut limits.max_future, self.limits.max_future);
        set(&mut limits.max_metric_names, self.limits.max_metric_names);
        set(&mut limits.max_series, self.limits.max_series);
        set(&mut limits.max_series_per_metric, self.limits.max_series_per_metric);
        set(&mut limits.max_new_series_per_request, self.limits.max_new_series_per_request);
        set(&mut limits.active_series_window, self.limits.active_series_window);
        set(&mut limits.max_connections, self.limits.max_connections);
        set(&mut limits.max_connections_per_client, self.limits.max_connections_per_client);
        set(&mut limits.header_read_timeout, self.limits.header_read_timeout);
        set(&mut limits.body_read_timeout, self.limits.body_read_timeout);
        set(&mut limits.idle_timeout, self.limits.idle_timeout);
        set(&mut limits.max_auth_failures_per_minute, self.limits.max_auth_failures_per_minute);

        for token in &self.security.auth_tokens {
            let name = serde_saphyr::Spanned::new(
                token.name.clone(),
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            );
            config.auth.tokens.push(TokenConfig {
                name,
                token: Some(token.secret.clone()),
                token_env: None,
                token_file: None,
                scopes: token.scopes.clone(),
            });
        }
        if self.security.auth_tokens_file.is_some() {
            config.auth.tokens_file.clone_from(&self.security.auth_tokens_file);
        }
        if let (Some(cert_file), Some(key_file)) = (&self.security.tls_cert_file, &self.security.tls_key_file) {
            config.tls = Some(TlsConfig { cert_file: cert_file.clone(), key_file: key_file.clone() });
        }

        let store = &mut config.storage.object_store;
        set(&mut store.kind, self.cluster.object_store_kind);
        let cluster = &self.cluster;
        for (target, value) in [
            (&mut store.bucket, &cluster.object_store_bucket),
            (&mut store.prefix, &cluster.object_store_prefix),
            (&mut store.endpoint, &cluster.object_store_endpoint),
            (&mut store.region, &cluster.object_store_region),
        ] {
            if value.is_some() {
                target.clone_from(value);
            }
        }
        if cluster.object_store_path.is_some() {
            store.path.clone_from(&cluster.object_store_path);
        }
        store.allow_http |= cluster.object_store_allow_http;
        if cluster.node_id.is_some() {
            config.cluster.node_id.clone_from(&cluster.node_id);
        }
        set(&mut config.cluster.peer_refresh, cluster.peer_refresh);
        set(&mut config.cluster.lease_ttl, cluster.lease_ttl);

        set(&mut config.query.timeout, self.query.query_timeout);
        set(&mut config.query.max_memory, self.query.query_max_memory);
        if self.query.ballista_scheduler.is_some() {
            config.query.ballista_scheduler.clone_from(&self.query.ballista_scheduler);
        }
        set(&mut config.query.ballista_min_range, self.query.ballista_min_range);
        set(&mut config.query.max_length, self.query.query_max_length);
        set(&mut config.query.max_depth, self.query.query_max_depth);
        set(&mut config.query.max_result_rows, self.query.query_max_result_rows);
        set(&mut config.query.max_result_bytes, self.query.query_max_result_bytes);
        set(&mut config.query.max_samples, self.query.query_max_samples);
        set(&mut config.query.max_workers_per_query, self.query.query_max_workers_per_query);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::try_parse_from([
            "vigil",
            "serve",
            "--data-dir",
            "/tmp/x",
            "--wal-fsync",
            "never",
            "--retention",
            "7d",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        let mut config =
            Config::parse(std::path::Path::new("/etc/vigil.yaml"), "storage: {retention: 1d, data_dir: data}").unwrap();
        assert_eq!(config.storage.data_dir, PathBuf::from("/etc/data"), "file paths are relative to the file");
        args.apply(&mut config);
        assert_eq!(config.storage.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.storage.wal.fsync, FsyncMode::Never);
        assert_eq!(config.storage.retention, PromDuration::days(7));
    }

    #[test]
    fn the_index_cache_size_and_query_workers_come_from_file_or_flag() {
        let defaults = Config::parse(std::path::Path::new("/etc/vigil.yaml"), "{}").unwrap();
        assert_eq!(defaults.storage.index_cache_size, bytesize::ByteSize::mib(64));
        assert_eq!(defaults.storage.series_cache_size, bytesize::ByteSize::mib(64));
        assert_eq!(defaults.query.max_workers_per_query, 0, "one per CPU");
        let file = "storage: {index_cache_size: 8MiB, series_cache_size: 1MiB}\nquery: {max_workers_per_query: 3}";
        let mut config = Config::parse(std::path::Path::new("/etc/vigil.yaml"), file).unwrap();
        assert_eq!(config.storage.index_cache_size, bytesize::ByteSize::mib(8));
        assert_eq!(config.storage.series_cache_size, bytesize::ByteSize::mib(1));
        assert_eq!(config.query.max_workers_per_query, 3);
        let cli = Cli::try_parse_from([
            "vigil",
            "serve",
            "--index-cache-size",
            "1GiB",
            "--query-max-workers-per-query",
            "1",
            "--series-cache-size",
            "0",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        args.apply(&mut config);
        assert_eq!(config.storage.index_cache_size, bytesize::ByteSize::gib(1));
        assert_eq!(config.storage.series_cache_size, bytesize::ByteSize::b(0));
        assert_eq!(config.query.max_workers_per_query, 1);
    }

    #[test]
    fn tokens_and_tls_come_from_flags() {
        let cli = Cli::try_parse_from([
            "vigil",
            "serve",
            "--auth-token",
            "ci:ingest+read:a:b:c",
            "--tls-cert-file",
            "c.pem",
            "--tls-key-file",
            "k.pem",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert!(!format!("{args:?}").contains("a:b:c"), "Debug output shows the token");
        let mut config = Config::default();
        args.apply(&mut config);
        let specs = config.auth.resolve().unwrap();
        assert_eq!(
            (specs[0].name.as_str(), specs[0].secret.as_str(), specs[0].scopes.as_slice()),
            ("ci", "a:b:c", &[Scope::Ingest, Scope::Read][..])
        );
        assert_eq!(config.tls.unwrap().key_file, PathBuf::from("k.pem"));
        assert!(Cli::try_parse_from(["vigil", "serve", "--auth-token", "ci:write:x"]).is_err());
        assert!(
            Cli::try_parse_from(["vigil", "serve", "--tls-cert-file", "c.pem"]).is_err(),
            "a certificate needs its key"
        );
    }

    #[test]
    fn object_store_cluster_and_ballista_settings_come_from_file_and_flags() {
        use vigil_storage::store::StoreKind;
        let file = "storage:\n  object_store: {kind: local, path: shared}\ncluster: {node_id: a, lease_ttl: 5s}\nquery: {ballista_scheduler: 'df://s:50050'}\n";
        let mut config = Config::parse(std::path::Path::new("/etc/vigil.yaml"), file).unwrap();
        assert_eq!(config.storage.object_store.path, Some(PathBuf::from("/etc/shared")), "relative to the file");
        assert_eq!(config.cluster.node_id.as_deref(), Some("a"));
        assert_eq!(config.query.ballista_min_range, PromDuration::days(7));
        let cli = Cli::try_parse_from([
            "vigil",
            "serve",
            "--object-store-kind",
            "s3",
            "--object-store-bucket",
            "b",
            "--object-store-allow-http",
            "--node-id",
            "b",
            "--lease-ttl",
            "30s",
            "--ballista-min-range",
            "1d",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        args.apply(&mut config);
        let store = &config.storage.object_store;
        assert_eq!((store.kind, store.bucket.as_deref(), store.allow_http), (StoreKind::S3, Some("b"), true));
        assert_eq!(config.cluster.node_id.as_deref(), Some("b"));
        assert_eq!(config.cluster.lease_ttl, PromDuration(std::time::Duration::from_secs(30)));
        assert_eq!(config.query.ballista_min_range, PromDuration::days(1));
        assert_eq!(config.query.ballista_scheduler.as_deref(), Some("df://s:50050"));
        assert!(Cli::try_parse_from(["vigil", "serve", "--object-store-kind", "ftp"]).is_err());
        let typo = Config::parse(std::path::Path::new("v.yaml"), "storage:\n  object_store: {kind: s3, buckett: x}\n");
        assert!(typo.is_err_and(|e| e.line == 2), "unknown keys name their line");
    }

    #[test]
    fn ballista_roles_take_ballistas_own_flags() {
        let cli =
            Cli::try_parse_from(["vigil", "ballista-executor", "--scheduler-port", "1", "--bind-port", "2"]).unwrap();
        let Command::BallistaExecutor(pass) = cli.command else { panic!("not the executor") };
        assert_eq!(pass.args, ["--scheduler-port", "1", "--bind-port", "2"]);
    }

    /// The configuration `vigil serve` runs with given `flags` (on the embedded defaults).
    fn serve_config(flags: &[&str]) -> Result<Config, clap::Error> {
        let cli = Cli::try_parse_from(["vigil", "serve"].iter().chain(flags))?;
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        let mut config = Config::default();
        args.apply(&mut config);
        Ok(config)
    }

    /// Defaults written as words (a place relative to another setting) or lists, not values.
    fn described(default: &str) -> bool {
        default.contains("DATA_DIR") || default.contains(' ') || default.starts_with('[')
    }

    /// Every `[default: X]` in `vigil serve --help` is the default Vigil runs with: giving
    /// the flag X changes nothing. The defaults live in `Config::default()` (and the crates'
    /// options it takes them from); the help texts are written by hand, so this holds them to it.
    #[test]
    fn help_defaults_are_the_defaults() {
        let plain = serve_config(&[]).unwrap();
        let mut command = Cli::command();
        let serve = command.find_subcommand_mut("serve").unwrap();
        let mut checked = 0;
        for arg in serve.get_arguments() {
            let (Some(long), Some(help)) = (arg.get_long(), arg.get_help()) else { continue };
            let help = help.to_string();
            let Some(default) = help.split("[default: ").nth(1).and_then(|d| d.split(']').next()) else { continue };
            if described(default) {
                continue;
            }
            let flag = format!("--{long}");
            let given = serve_config(&[&flag, default]).unwrap_or_else(|e| panic!("{flag} {default}: {e}"));
            assert!(given == plain, "{flag}: the help says [default: {default}], Vigil runs with another");
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} defaults found in the help");
    }

    /// Every default in the README's configuration table is the default Vigil runs with.
    #[test]
    fn readme_defaults_are_the_defaults() {
        let readme = include_str!("../README.md");
        let plain = serve_config(&[]).unwrap();
        let mut checked = 0;
        for row in readme.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let (Some(flags), Some(default)) = (cells.get(1), cells.get(2)) else { continue };
            let Some(flag) = flags.split('`').find(|f| f.starts_with("--")) else { continue };
            let Some(default) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) else { continue };
            if described(default) {
                continue;
            }
            if default == "false" {
                // A switch: off unless given, and giving it changes something.
                let on = serve_config(&[flag]).unwrap_or_else(|e| panic!("README: {flag}: {e}"));
                assert!(on != plain, "README: {flag} is off by default, yet giving it changes nothing");
                checked += 1;
                continue;
            }
            let given = serve_config(&[flag, default]).unwrap_or_else(|e| panic!("README: {flag} {default}: {e}"));
            assert!(given == plain, "README: {flag} has default `{default}`, Vigil runs with another");
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} defaults found in the README's table");
    }
}
