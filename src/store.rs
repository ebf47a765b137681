//! `vigil store check` and `vigil store repair`: this node's manifests and segments, read
//! from the store the config and flags name (the same ones `vigil serve` takes).

use std::process::ExitCode;

use anyhow::Context;
use vigil_storage::damage::{self, StoreReport};

use crate::cli::{ServeArgs, StoreAction};
use crate::config::Config;

pub async fn run(action: StoreAction) -> anyhow::Result<ExitCode> {
    let (args, repair) = match action {
        StoreAction::Check(args) => (args, false),
        StoreAction::Repair(args) => (args, true),
    };
    let config = config_of(&args)?;
    let data_dir = &config.storage.data_dir;
    let node = match &config.cluster.node_id {
        Some(node) => node.clone(),
        None => vigil_storage::stored_node_id(data_dir).with_context(|| {
            format!("{} holds no node_id: pass --node-id or the server's --data-dir", data_dir.display())
        })?,
    };
    let store = config.storage.object_store.build(data_dir).context("opening the object store")?;
    let report = if repair {
        // The server writes the same files: it must not run meanwhile.
        let _lock = crate::process::DataDirLock::take(data_dir)?;
        let wal = vigil_storage::wal::list_files(&data_dir.join("wal")).unwrap_or_default();
        // Files up to the persisted mark are deleted after each flush: the WAL resumes at
        // the oldest file still there.
        let persisted = wal.first().map(|(seq, _)| seq.saturating_sub(1));
        damage::repair(&store, &node, persisted).await?
    } else {
        damage::check(&store, &node).await?
    };
    print(&report, repair);
    Ok(if repair || report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn config_of(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    args.apply(&mut config);
    Ok(config)
}

fn print(report: &StoreReport, repair: bool) {
    println!("node {}: {} segments, {} rows", report.node, report.segments, report.rows);
    for problem in &report.problems {
        println!("problem: {}: {}", problem.what, problem.detail);
    }
    for action in &report.actions {
        println!("repaired: {}: {}", action.what, action.detail);
    }
    match (repair, report.problems.is_empty()) {
        (_, true) if report.actions.is_empty() => println!("no problems found"),
        (false, false) => println!(
            "{} problems; stop the server and run `vigil store repair` with the same flags",
            report.problems.len()
        ),
        _ => {}
    }
}
