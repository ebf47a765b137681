//! `vigil serve`: open storage and start its maintenance (flush, compaction, retention), the
//! drift engine, the scraper, the SLO evaluation loop and alerting (both active only on the
//! node holding the `alerting` lease in the store), the definitions reloader, then serve the
//! API, OTLP and dashboard listeners until SIGTERM or ctrl-c; then stop accepting, flush,
//! and exit 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;
use vigil_ingest::{Ingestor, Limits};
use vigil_query::{QueryEngine, QueryOptions};
use vigil_storage::wal::FsyncPolicy;
use vigil_storage::{Storage, StorageOptions};
use vigil_web::{AppState, HttpOptions};

use crate::cli::ServeArgs;
use crate::config::{Config, FsyncMode, LogFormat};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    args.apply(&mut config);
    config.check_bounds().map_err(anyhow::Error::msg)?;
    init_logging(&config.log)?;
    let metrics = PrometheusBuilder::new().install_recorder().context("installing the metrics recorder")?;
    metrics::gauge!("vigil_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let max_fds = crate::process::raise_fd_limit();
    let _data_dir_lock = crate::process::DataDirLock::take(&config.storage.data_dir)?;

    let storage = Storage::open(storage_options(&config))
        .await
        .with_context(|| format!("opening storage in {}", config.storage.data_dir.display()))?;
    let stop = CancellationToken::new();
    let maintenance = tokio::spawn({
        let storage = storage.clone();
        let stop = stop.clone();
        async move { storage.run_maintenance(stop.cancelled_owned()).await }
    });
    let engine = QueryEngine::new(storage.clone(), query_options(&config)?)?;
    tokio::spawn({
        let metrics = metrics.clone();
        let stop = stop.clone();
        let engine = engine.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            while stop.run_until_cancelled(every.tick()).await.is_some() {
                metrics.run_upkeep();
                crate::process::record_fds();
                crate::process::record_memory(&engine);
            }
        }
    });
    // The allocator's freed memory back to the OS (see `process::return_freed_memory`).
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            while stop.run_until_cancelled(every.tick()).await.is_some() {
                crate::process::return_freed_memory();
            }
        }
    });
    let drift = vigil_drift::DriftEngine::open(
        engine.clone(),
        drift_options(&config),
        Arc::new(vigil_storage::clock::SystemClock),
    )
    .await?;
    let drift_task = tokio::spawn({
        let drift = drift.clone();
        let stop = stop.clone();
        async move { drift.run(stop.cancelled_owned()).await }
    });
    let series_cache_bytes = usize::try_from(config.storage.series_cache_size.as_u64()).unwrap_or(usize::MAX);
    let ingestor = Ingestor::new(storage.clone(), ingest_limits(&config))
        .with_series_cache_bytes(series_cache_bytes)
        .with_metrics_tap(Arc::new(drift.clone()));
    tokio::spawn({
        let ingestor = ingestor.clone();
        let stop = stop.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(300));
            while stop.run_until_cancelled(every.tick()).await.is_some() {
                ingestor.prune_delta_totals();
            }
        }
    });
    let scraper = Arc::new(vigil_ingest::scrape::Scraper::start(config.scrape_targets(), ingestor.clone()));
    let slos = Arc::new(vigil_query::slo::SloEvaluator::new(engine.clone()));
    let mut alerting_options = alerting_options(&config);
    alerting_options.shared_store = Some(storage.object_store().1);
    let alerting =
        vigil_alerting::Alerting::open(engine.clone(), alerting_options, Arc::new(vigil_alerting::SystemClock));
    // Only the node holding the lease evaluates SLOs and alerts; it is taken before the first
    // evaluation, so a single node starts alerting at once.
    let mut lease = vigil_storage::lease::Lease::new(
        storage.object_store().1,
        "alerting",
        storage.node_id(),
        config.cluster.lease_ttl.0,
    );
    alerting.set_active(false);
    crate::cluster::lease_tick(&mut lease, &alerting).await;
    let lease_task = tokio::spawn(crate::cluster::hold_lease(lease, alerting.clone(), stop.clone()));
    let slo_state = vigil_query::slo::persist::state_path(&config.storage.data_dir);
    let (schedule, schedules) = tokio::sync::watch::channel(vigil_query::slo::schedule::Schedule {
        every: config.evaluation_interval.0,
        save_every: config.slo_state_save_interval.0,
        state_path: slo_state.clone(),
    });
    let overlay: crate::reload::Overlay = {
        let args = args.clone();
        Box::new(move |config| args.apply(config))
    };
    let reloader = Arc::new(crate::reload::DefinitionReloader::new(
        args.config.clone(),
        config.clone(),
        overlay,
        crate::reload::Live { evaluator: slos.clone(), alerting: alerting.clone(), scraper: scraper.clone(), schedule },
    ));
    // At start-up there is no previous set to keep: invalid definitions stop Vigil.
    reloader.apply().await.map_err(|errors| anyhow::anyhow!("invalid definitions:\n{errors}"))?;
    tokio::spawn(reloader.clone().watch(stop.clone()));
    // API-made corrections count before the state is restored: state saved under other
    // corrections is recomputed.
    let corrections = vigil_query::slo::correction_book::book_path(&config.storage.data_dir);
    match slos.open_corrections(&corrections, crate::reload::now_ms()).await {
        Ok(opened) => info!(opened, path = %corrections.display(), "corrections loaded"),
        Err(error) => return Err(anyhow::anyhow!("{error}")),
    }
    // SLOs resume from their saved state; the others (new or edited) backfill.
    match slos.restore(&slo_state, crate::reload::now_ms()).await {
        Ok(resumed) => info!(resumed, path = %slo_state.display(), "SLO state loaded"),
        Err(error) => tracing::warn!(%error, "SLO state not loaded: every SLO backfills"),
    }
    let alerting_task = tokio::spawn(alerting.clone().run(stop.clone()));
    tokio::spawn(crate::reports::run(
        config.reports.clone(),
        config.storage.data_dir.clone(),
        slos.clone(),
        engine.clone(),
        alerting.clone(),
        stop.clone(),
    ));
    let slo_task = tokio::spawn({
        let active = alerting.clone();
        let after = alerting.clone();
        let evaluator = slos.clone();
        slos.clone().run(
            schedules,
            Arc::new(vigil_storage::clock::SystemClock),
            move || active.is_active(),
            move |definitions, statuses| {
                let alerting = after.clone();
                let corrections = evaluator.corrections();
                async move {
                    alerting.sync_correction_silences(&corrections, &definitions).await;
                    alerting.evaluate_slos(&definitions, &statuses).await
                }
            },
            stop.clone().cancelled_owned(),
        )
    });
    let ready = Arc::new(AtomicBool::new(false));
    let http = HttpOptions {
        max_body_bytes: config.limits.max_body_size.as_u64() as usize,
        max_concurrent_ingest: config.limits.max_concurrent_ingest,
        max_concurrent_queries: config.limits.max_concurrent_queries,
        body_read_timeout: config.limits.body_read_timeout.0,
    };
    let auth = vigil_web::Auth::new(config.auth.resolve().map_err(anyhow::Error::msg)?)
        .with_failure_limit(config.limits.max_auth_failures_per_minute);
    if auth.enabled() {
        info!(tokens = auth.token_count(), "bearer-token auth on");
    } else {
        for (what, address) in [
            ("HTTP API", config.listen.http),
            ("OTLP/HTTP", config.listen.otlp_http),
            ("OTLP/gRPC", config.listen.otlp_grpc),
        ] {
            if !address.ip().is_loopback() {
                tracing::warn!(%address, "no auth tokens configured: the {what} listener is open to whoever reaches this address");
            }
        }
    }
    let tls = match &config.tls {
        Some(tls) => Some(tls_config(tls)?),
        None => None,
    };
    let connection_limits = vigil_web::server::ConnectionLimits {
        // Every connection is a file descriptor: keep some for segments, the WAL and peers.
        max_connections: config.limits.max_connections.min(max_fds.saturating_sub(256).max(64)),
        max_connections_per_client: config.limits.max_connections_per_client,
        header_read_timeout: config.limits.header_read_timeout.0,
        idle_timeout: config.limits.idle_timeout.0,
        shutdown_grace: Duration::from_secs(30),
    };
    let connections = Arc::new(vigil_web::server::ConnectionCounts::default());
    let slots = vigil_web::Slots::new(&http);
    let state = AppState {
        ingestor: ingestor.clone(),
        engine,
        metrics,
        scraper: scraper.clone(),
        slos,
        alerting,
        drift,
        reloader,
        ready: ready.clone(),
        dashboard: Default::default(),
        auth: auth.clone(),
        status: Arc::new(status_info(&config, args.config.as_deref())),
    };
    let api = bind(config.listen.http, "HTTP API", tls.is_some()).await?;
    let otlp_http = bind(config.listen.otlp_http, "OTLP/HTTP", tls.is_some()).await?;
    let otlp_grpc = bind(config.listen.otlp_grpc, "OTLP/gRPC", tls.is_some()).await?;
    let shutdown = CancellationToken::new();
    let servers = [
        (api, vigil_web::router(state.clone(), &http, &slots)),
        (otlp_http, vigil_web::otlp_http_router(state, &http, &slots)),
        (otlp_grpc, vigil_web::otlp_grpc_router(ingestor, http.max_body_bytes, auth)),
    ]
    .map(|(listener, app)| {
        tokio::spawn(vigil_web::server::serve(
            listener,
            app,
            tls.clone(),
            connection_limits.clone(),
            connections.clone(),
            shutdown.clone(),
        ))
    });
    ready.store(true, Ordering::Release);
    shutdown_signal(ready).await;
    shutdown.cancel();
    for server in servers {
        server.await.context("HTTP server task")?;
    }
    drop(scraper);
    info!("no longer accepting requests; flushing");
    stop.cancel();
    let _ = slo_task.await;
    let _ = alerting_task.await;
    let _ = lease_task.await;
    let _ = drift_task.await;
    let _ = maintenance.await;
    storage.close().await.context("flushing storage")?;
    info!("stopped cleanly");
    Ok(())
}

async fn bind(address: std::net::SocketAddr, what: &str, tls: bool) -> anyhow::Result<TcpListener> {
    let listener =
        TcpListener::bind(address).await.with_context(|| format!("binding the {what} listener to {address}"))?;
    info!(address = %listener.local_addr()?, tls, "{what} listening");
    Ok(listener)
}

/// The certificate and key, checked now so that a bad file stops start-up with its name.
/// ALPN offers h2 (gRPC needs it) and HTTP/1.1.
fn tls_config(tls: &crate::config::TlsConfig) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    // One crypto provider for the process (ring); a second call is a no-op error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the TLS certificate {}", tls.cert_file.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", tls.cert_file.display());
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .with_context(|| format!("reading the TLS private key {}", tls.key_file.display()))?;
    let mut server =
        rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).with_context(|| {
            format!("the key {} does not fit the certificate {}", tls.key_file.display(), tls.cert_file.display())
        })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

fn init_logging(log: &crate::config::LogConfig) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .with_context(|| format!("invalid log filter {:?}", log.level))?;
    let lines = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log.format {
        // Colour codes only where a person reads them: a file or a pipe gets plain text.
        LogFormat::Text => lines.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => lines.json().init(),
    }
    Ok(())
}

fn storage_options(config: &Config) -> StorageOptions {
    let storage = &config.storage;
    let mut options = StorageOptions::new(&storage.data_dir);
    options.wal_fsync = match storage.wal.fsync {
        FsyncMode::Always => FsyncPolicy::Always,
        FsyncMode::Interval => FsyncPolicy::Interval(storage.wal.fsync_interval.0),
        FsyncMode::Never => FsyncPolicy::Never,
    };
    options.wal_max_pending_bytes = storage.wal.max_pending.as_u64() as usize;
    options.partition_duration = storage.partition.0;
    options.flush_interval = storage.flush_interval.0;
    options.buffer_max_bytes = storage.buffer_size.as_u64() as usize;
    options.retention = storage.retention.0;
    options.compaction_max_rows = storage.compaction_max_rows;
    options.compaction_window = storage.compaction_window.0;
    options.index_cache_bytes = usize::try_from(storage.index_cache_size.as_u64()).unwrap_or(usize::MAX);
    options.store = storage.object_store.clone();
    options.node_id = config.cluster.node_id.clone();
    options.peer_refresh_interval = config.cluster.peer_refresh.0;
    let limits = &config.limits;
    options.cardinality = vigil_storage::cardinality::CardinalityLimits {
        max_metric_names: limits.max_metric_names,
        max_series: limits.max_series,
        max_series_per_metric: limits.max_series_per_metric,
        max_new_series_per_request: limits.max_new_series_per_request,
        active_window: limits.active_series_window.0,
    };
    options
}

fn alerting_options(config: &Config) -> vigil_alerting::AlertingOptions {
    let mut options = vigil_alerting::AlertingOptions::new(config.storage.data_dir.join("alerting"));
    options.external_url = config.external_url.clone().unwrap_or_else(|| format!("http://{}", config.listen.http));
    options.default_interval = config.evaluation_interval.0;
    options.max_attempts = config.alerting.max_attempts;
    options
}

fn drift_options(config: &Config) -> vigil_drift::DriftOptions {
    let drift = &config.drift;
    vigil_drift::DriftOptions {
        window: drift.window.0,
        min_samples: drift.min_samples,
        flush_interval: drift.flush_interval.0,
        thresholds: vigil_drift::default_thresholds()
            .into_iter()
            .chain(drift.thresholds.iter().map(|(name, value)| (name.clone(), value.value)))
            .collect(),
        max_values_per_request: config.limits.max_samples_per_request,
    }
}

fn query_options(config: &Config) -> anyhow::Result<QueryOptions> {
    let ballista = match &config.query.ballista_scheduler {
        Some(scheduler) => Some(vigil_query::distributed::BallistaOptions {
            scheduler: scheduler.clone(),
            min_range: config.query.ballista_min_range.0,
            store_url: config
                .storage
                .object_store
                .base_url(&config.storage.data_dir)
                .context("the store's URL for Ballista")?,
        }),
        None => None,
    };
    let query = &config.query;
    Ok(QueryOptions {
        timeout: query.timeout.0,
        max_memory_bytes: query.max_memory.as_u64() as usize,
        ballista,
        shape: vigil_query::guard::QueryShape {
            max_length: query.max_length.as_u64() as usize,
            max_depth: query.max_depth,
        },
        max_result_rows: query.max_result_rows,
        max_result_bytes: query.max_result_bytes.as_u64() as usize,
        max_samples: query.max_samples,
        max_workers_per_query: query.max_workers_per_query,
    })
}

fn ingest_limits(config: &Config) -> Limits {
    let limits = &config.limits;
    Limits {
        max_decompressed_bytes: limits.max_decompressed_size.as_u64() as usize,
        max_series_per_request: limits.max_series_per_request,
        max_samples_per_request: limits.max_samples_per_request,
        max_labels_per_series: limits.max_labels_per_series,
        max_label_name_bytes: limits.max_label_name_length,
        max_label_value_bytes: limits.max_label_value_length,
        max_metric_name_bytes: limits.max_metric_name_length,
        // Unset: samples older than the retention would be deleted at once; `0`: any age.
        max_past: match limits.max_past {
            Some(past) if past.0.is_zero() => None,
            Some(past) => Some(past.0),
            None => Some(config.storage.retention.0).filter(|retention| !retention.is_zero()),
        },
        max_future: limits.max_future.0,
    }
}

/// Resolves on SIGTERM or ctrl-c, after marking the server not ready.
async fn shutdown_signal(ready: Arc<AtomicBool>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("interrupted"),
        _ = terminate => info!("SIGTERM received"),
    }
    ready.store(false, Ordering::Release);
}

/// A duration as Prometheus writes one: `30d`, `5m`, `1500ms`.
fn prom_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        _ if ms.is_multiple_of(86_400_000) => format!("{}d", ms / 86_400_000),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

/// What `/api/v1/status/{config,flags,runtimeinfo}` show: the config file as written, with
/// the values of keys that hold secrets replaced, and the main settings by flag name.
fn status_info(config: &Config, path: Option<&std::path::Path>) -> vigil_web::prom_api::StatusInfo {
    let secret_key = |key: &str| ["password", "token", "secret", "key_file"].iter().any(|s| key.contains(s));
    let config_yaml = match path.map(std::fs::read_to_string) {
        Some(Ok(text)) => text
            .lines()
            .map(|line| match line.split_once(':') {
                Some((key, value)) if secret_key(&key.to_lowercase()) && !value.trim().is_empty() => {
                    format!("{key}: <secret>")
                }
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => "# Vigil runs on its embedded defaults (no --config)\n".to_string(),
    };
    let flags: std::collections::BTreeMap<String, String> = [
        ("config", path.map(|p| p.display().to_string()).unwrap_or_default()),
        ("data-dir", config.storage.data_dir.display().to_string()),
        ("retention", prom_duration(config.storage.retention.0)),
        ("http-addr", config.listen.http.to_string()),
        ("otlp-http-addr", config.listen.otlp_http.to_string()),
        ("otlp-grpc-addr", config.listen.otlp_grpc.to_string()),
        ("evaluation-interval", prom_duration(config.evaluation_interval.0)),
        ("query-timeout", prom_duration(config.query.timeout.0)),
        ("query-max-result-rows", config.query.max_result_rows.to_string()),
        ("external-url", config.external_url.clone().unwrap_or_default()),
        ("log-level", config.log.level.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    vigil_web::prom_api::StatusInfo {
        config_yaml,
        flags,
        started_at: vigil_alerting::notify::rfc3339_ms(crate::reload::now_ms()),
        working_dir: std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        retention: prom_duration(config.storage.retention.0),
    }
}
