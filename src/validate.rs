//! `vigil validate FILE...`: like `promtool check`, one line per error, exit 1 if any.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;

pub fn run(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in files {
        match Config::load(path) {
            Ok(_) => println!("{}: valid Vigil config", path.display()),
            Err(error) => {
                failed = true;
                eprintln!("{error}");
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
