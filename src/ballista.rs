//! `vigil ballista-scheduler` and `vigil ballista-executor`: Ballista's own scheduler and
//! executor, built into the Vigil binary so that they run the same DataFusion as the nodes
//! that send them queries. Their flags are Ballista's (`--help` lists them).

use std::sync::Arc;

use anyhow::Context;
use ballista_core::object_store::{
    runtime_env_with_s3_support, session_config_with_s3_support, session_state_with_s3_support,
};
use clap::Parser;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Ballista's scheduler plans deep trees recursively: its own binary uses 32 MiB stacks.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 * 1024 * 1024)
        .build()
        .context("starting the async runtime")
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

pub fn scheduler(args: &[String]) -> anyhow::Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::{Config, SchedulerConfig};
    let opt =
        Config::try_parse_from(std::iter::once("vigil ballista-scheduler".to_string()).chain(args.iter().cloned()))?;
    init_logging(&opt.log_level_setting);
    let addr = format!("{}:{}", opt.bind_host, opt.bind_port).parse().context("--bind-host/--bind-port")?;
    runtime()?.block_on(async move {
        let config: SchedulerConfig = opt.try_into().map_err(|e| anyhow::anyhow!("{e}"))?;
        let config = config
            .with_override_config_producer(Arc::new(session_config_with_s3_support))
            .with_override_session_builder(Arc::new(session_state_with_s3_support));
        let cluster = BallistaCluster::new_from_config(&config).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        ballista_scheduler::scheduler_process::start_server(cluster, addr, Arc::new(config))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
}

pub fn executor(args: &[String]) -> anyhow::Result<()> {
    use ballista_executor::config::Config;
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let opt =
        Config::try_parse_from(std::iter::once("vigil ballista-executor".to_string()).chain(args.iter().cloned()))?;
    runtime()?.block_on(async move {
        let mut config: ExecutorProcessConfig = opt.try_into().map_err(|e| anyhow::anyhow!("{e}"))?;
        init_logging(&config.special_mod_log_level);
        config.override_config_producer = Some(Arc::new(session_config_with_s3_support));
        config.override_runtime_producer = Some(Arc::new(runtime_env_with_s3_support));
        start_executor_process(Arc::new(config)).await.map_err(|e| anyhow::anyhow!("{e}"))
    })
}
