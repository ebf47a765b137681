//! The `vigil` binary: command line, configuration and wiring of the crates.

mod ballista;
mod cli;
mod cluster;
mod config;
mod reload;
mod serve;
mod validate;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("vigil").build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("vigil: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate(args) => validate::run(&args.files),
        Command::BallistaScheduler(pass) => exit(ballista::scheduler(&pass.args)),
        Command::BallistaExecutor(pass) => exit(ballista::executor(&pass.args)),
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
