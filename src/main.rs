//! The `vigil` binary: command line, configuration and wiring of the crates.

mod backtest;
#[cfg(feature = "distributed")]
mod ballista;
mod cli;
mod cluster;
mod config;
mod gate;
mod process;
mod reload;
mod reports;
mod serve;
mod store;
mod validate;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// mimalloc returns freed pages to the OS soon after a query or a flush; glibc's malloc
/// keeps them per thread arena, so RSS at rest stayed at its peak (see the README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stack of the runtime's threads: DataFusion plans a query of the deepest nesting allowed
/// (`query.max_depth`) well within it.
const THREAD_STACK_BYTES: usize = 8 << 20;

/// How long an idle blocking thread lives (tokio's default: 10 s). A compaction's merges run
/// on blocking threads, and what a merge frees stays resident in its thread's heap until the
/// thread allocates again or ends: a store whose compaction had just caught up held 54 MiB
/// allocated, 25 half a minute later; with 1 s, 14 after 3 s and 11 after 30. A thread spawned
/// again costs microseconds.
const BLOCKING_THREAD_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vigil")
        .thread_stack_size(THREAD_STACK_BYTES)
        .thread_keep_alive(BLOCKING_THREAD_IDLE)
        .build()
        .map_err(|e| {
            eprintln!("vigil: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            match runtime.block_on(serve::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Store(store) => {
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            match runtime.block_on(store::run(store.action)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("vigil: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate(args) => validate::run(&args.files),
        Command::Gate(args) => match runtime() {
            Ok(runtime) => runtime.block_on(gate::run(&args)),
            Err(code) => code,
        },
        Command::Slo(slo) => match (slo.action, runtime()) {
            (cli::SloAction::Backtest(args), Ok(runtime)) => runtime.block_on(backtest::run(&args)),
            (_, Err(code)) => code,
        },
        #[cfg(feature = "distributed")]
        Command::BallistaScheduler(pass) => exit(ballista::scheduler(&pass.args)),
        #[cfg(feature = "distributed")]
        Command::BallistaExecutor(pass) => exit(ballista::executor(&pass.args)),
        #[cfg(not(feature = "distributed"))]
        Command::BallistaScheduler(_) | Command::BallistaExecutor(_) => {
            exit(Err(anyhow::anyhow!("the Ballista roles need a build with the `distributed` feature (on by default)")))
        }
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}
