//! Alerting state on disk: alert states and the notification log in `state.json`,
//! silences in `silences.json`, each replaced atomically (write, fsync, rename), so a
//! restart neither re-pages nor forgets `for` progress or silences.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dispatch::NflogEntry;
use crate::silences::Silence;
use crate::state::RuleAlerts;

/// Where a shared store keeps the alerting node's copies.
pub const SHARED_STATE: &str = "cluster/alerting/state.json";
pub const SHARED_SILENCES: &str = "cluster/alerting/silences.json";

#[derive(Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// Alerts per source (`slo:NAME`, `rule:FILE;GROUP;NAME;…`).
    pub sources: BTreeMap<String, RuleAlerts>,
    pub nflog: Vec<NflogRecord>,
}

#[derive(Serialize, Deserialize)]
pub struct NflogRecord {
    pub receiver: String,
    pub group_key: String,
    #[serde(flatten)]
    pub entry: NflogEntry,
}

impl NflogRecord {
    /// The dispatcher's key and entry.
    pub fn into_entry(self) -> ((String, String), NflogEntry) {
        ((self.receiver, self.group_key), self.entry)
    }
}

pub struct StateFiles {
    dir: PathBuf,
}

impl StateFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateFiles { dir: dir.into() }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn silences_path(&self) -> PathBuf {
        self.dir.join("silences.json")
    }

    /// Loads what was saved; a missing file is a fresh start, a damaged one is set aside
    /// with a warning (never a failed start).
    pub fn load(&self) -> (Snapshot, Vec<Silence>) {
        (read_json(&self.state_path()).unwrap_or_default(), read_json(&self.silences_path()).unwrap_or_default())
    }

    pub fn save_state(&self, snapshot: &Snapshot) -> std::io::Result<()> {
        write_atomically(&self.dir, &self.state_path(), &serde_json::to_vec(snapshot).map_err(std::io::Error::other)?)
    }

    pub fn save_silences(&self, silences: &[Silence]) -> std::io::Result<()> {
        write_atomically(&self.dir, &self.silences_path(), &serde_json::to_vec_pretty(silences).map_err(std::io::Error::other)?)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read alerting state; starting without it");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(e) => {
            let aside = path.with_extension("json.damaged");
            tracing::warn!(path = %path.display(), error = %e, aside = %aside.display(), "damaged alerting state set aside");
            let _ = std::fs::rename(path, aside);
            None
        }
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}
