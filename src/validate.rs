//! `vigil validate FILE...`: like `promtool check`, one line per error, exit 1 if any.
//! Each file is recognised by its content: SLO files (apiVersion/version), rule files
//! (`groups`), otherwise a Vigil config. SLO references resolve among the files given, and
//! receivers named by SLOs must exist in a config given alongside.

use std::path::PathBuf;
use std::process::ExitCode;

use vigil_query::slo::{FileKind, file_kind};

use crate::config::Config;

pub fn run(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    let mut slo_files = Vec::new();
    let mut receivers: Option<std::collections::BTreeSet<String>> = None;
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("{}:1:1: cannot read the file: {e}", path.display());
                failed = true;
                continue;
            }
        };
        match file_kind(&text) {
            FileKind::Slo => slo_files.push(path.clone()),
            FileKind::Rules => match vigil_alerting::rules::parse(&path.display().to_string(), &text) {
                Ok(groups) => {
                    let rules: usize = groups.iter().map(|g| g.rules.len()).sum();
                    println!(
                        "{}: {rules} valid rule{} in {} group{}",
                        path.display(),
                        plural(rules),
                        groups.len(),
                        plural(groups.len())
                    );
                }
                Err(errors) => {
                    failed = true;
                    for error in errors {
                        eprintln!("{error}");
                    }
                }
            },
            FileKind::Config => match Config::parse(path, &text) {
                Ok(config) => {
                    receivers.get_or_insert_with(Default::default).extend(config.receiver_names());
                    println!("{}: valid Vigil config", path.display());
                }
                Err(error) => {
                    failed = true;
                    eprintln!("{error}");
                }
            },
        }
    }
    if !slo_files.is_empty() {
        match vigil_query::slo::load_files(&slo_files, receivers.as_ref()) {
            Ok(slos) => {
                for path in &slo_files {
                    let count = slos.iter().filter(|s| s.source.file == path.display().to_string()).count();
                    println!("{}: {count} valid SLO{}", path.display(), plural(count));
                }
            }
            Err(errors) => {
                failed = true;
                for error in errors {
                    eprintln!("{error}");
                }
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
