//! The manifest: the list of live Parquet segments and how far the WAL has been persisted.
//!
//! It is one JSON object in the object store, replaced whole (an object-store `put` is atomic)
//! after every flush, compaction or retention pass. A segment file that no manifest names
//! (left by a crash between the Parquet write and the manifest write) is never read.

use std::sync::Arc;

use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use serde::{Deserialize, Serialize};

use crate::StorageError;

pub const MANIFEST_PATH: &str = "manifest.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub next_segment_id: u64,
    /// WAL files with this sequence or lower are fully contained in segments.
    pub wal_persisted_through: u64,
    pub segments: Vec<SegmentMeta>,
    /// Files replaced by compaction or expired by retention, deleted once no query can still
    /// be reading them.
    #[serde(default)]
    pub pending_deletes: Vec<PendingDelete>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub id: u64,
    pub table: String,
    pub path: String,
    pub partition_start_ns: i64,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    pub rows: u64,
    pub size_bytes: u64,
    /// Column names; for metric tables they give the table's schema without opening files.
    pub columns: Vec<String>,
    /// 0 for a flushed segment, 1 and up for compaction outputs.
    pub level: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingDelete {
    pub path: String,
    pub not_before_unix_ms: i64,
}

impl Manifest {
    pub fn segments_of<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a SegmentMeta> + 'a {
        self.segments.iter().filter(move |s| s.table == table)
    }

    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map(|s| s.table.as_str())
    }
}

pub async fn load(store: &Arc<dyn ObjectStore>) -> Result<Manifest, StorageError> {
    match store.get(&Path::from(MANIFEST_PATH)).await {
        Ok(result) => {
            let bytes = result.bytes().await?;
            serde_json::from_slice(&bytes).map_err(|e| StorageError::Manifest(e.to_string()))
        }
        Err(datafusion::object_store::Error::NotFound { .. }) => {
            Ok(Manifest { version: 1, next_segment_id: 1, ..Manifest::default() })
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn save(store: &Arc<dyn ObjectStore>, manifest: &Manifest) -> Result<(), StorageError> {
    let json = serde_json::to_vec(manifest).map_err(|e| StorageError::Manifest(e.to_string()))?;
    store.put(&Path::from(MANIFEST_PATH), PutPayload::from(json)).await?;
    Ok(())
}
