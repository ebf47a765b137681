//! Alerting state on disk: alert states and the notification log in `state.json`,
//! silences in `silences.json`, each replaced atomically (write, fsync, rename), so a
//! restart neither re-pages nor forgets `for` progress or silences.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use datafusion::object_store::{ObjectStoreExt, PutPayload};

use crate::AlertingError;
use crate::dispatch::NflogEntry;
use crate::engine::{Alerting, Source, SourceKind};
use crate::silences::{Silence, Silences};
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
        write_atomically(
            &self.dir,
            &self.silences_path(),
            &serde_json::to_vec_pretty(silences).map_err(std::io::Error::other)?,
        )
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
/// Saving: state and silences to disk and, with a shared store, copied there; loading the
/// shared copies on a node about to take over.
impl Alerting {
    pub(crate) async fn persist(&self) {
        let _writing = self.inner.persisting.lock().await;
        let snapshot = {
            let state = self.inner.state.lock();
            Snapshot {
                version: 1,
                sources: state
                    .sources
                    .iter()
                    .filter(|(_, s)| s.kind != SourceKind::Record)
                    .map(|(k, s)| (k.clone(), s.alerts.clone()))
                    .collect(),
                nflog: state
                    .dispatcher
                    .nflog()
                    .into_iter()
                    .map(|((receiver, group_key), entry)| NflogRecord { receiver, group_key, entry })
                    .collect(),
            }
        };
        self.share(SHARED_STATE, serde_json::to_vec(&snapshot)).await;
        let this = self.clone();
        let saved = tokio::task::spawn_blocking(move || this.inner.files.save_state(&snapshot)).await;
        if let Ok(Err(e)) | Err(e) = saved.map_err(std::io::Error::other) {
            tracing::warn!(error = %e, "saving alerting state failed");
        }
    }

    /// Copies state to the shared store, when there is one.
    async fn share(&self, path: &str, json: serde_json::Result<Vec<u8>>) {
        let Some(store) = &self.inner.options.shared_store else { return };
        let put = match json {
            Ok(json) => store.put(&path.into(), PutPayload::from(json)).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = put {
            metrics::counter!("vigil_alerting_shared_state_failures_total").increment(1);
            tracing::warn!(error = %e, path, "copying alerting state to the shared store failed");
        }
    }

    /// Replaces alert states, the notification log and silences with the copies in the
    /// shared store (written by the node that held the lease). Done before taking over, and
    /// now and then on standby nodes so that their APIs show current alerts.
    pub async fn load_shared(&self) -> Result<(), AlertingError> {
        let Some(store) = &self.inner.options.shared_store else { return Ok(()) };
        use vigil_storage::store::get_json;
        let state: Option<Snapshot> = get_json(store, &SHARED_STATE.into()).await?;
        let silences: Option<Vec<Silence>> = get_json(store, &SHARED_SILENCES.into()).await?;
        if let Some(snapshot) = state {
            let mut state = self.inner.state.lock();
            state.dispatcher.restore_nflog(snapshot.nflog.into_iter().map(NflogRecord::into_entry).collect());
            for (key, alerts) in snapshot.sources {
                match state.sources.get_mut(&key) {
                    Some(source) => source.alerts = alerts,
                    None => {
                        let source = Source::new(SourceKind::of_key(&key), alerts);
                        state.sources.insert(key, source);
                    }
                }
            }
        }
        if let Some(silences) = silences {
            *self.inner.silences.lock() = Silences::restore(silences);
        }
        Ok(())
    }

    pub(crate) async fn save_silences(&self) {
        let _writing = self.inner.persisting.lock().await;
        let silences = self.inner.silences.lock().all().to_vec();
        self.share(SHARED_SILENCES, serde_json::to_vec(&silences)).await;
        let this = self.clone();
        let saved = tokio::task::spawn_blocking(move || this.inner.files.save_silences(&silences)).await;
        if let Ok(Err(e)) | Err(e) = saved.map_err(std::io::Error::other) {
            tracing::warn!(error = %e, "saving silences failed");
        }
    }
}
