//! Distributed SQL on Ballista, DataFusion's distributed engine.
//!
//! A query whose time range is at least `min_range` (or unbounded) is planned here against
//! `ListingTable`s over the Parquet segments every node has flushed (own and peers', by URL
//! in the shared store), and run by a Ballista scheduler on its executors. Ballista sees
//! segments only: rows still in a node's write buffer are missing for up to one flush
//! interval, plus the peer refresh for other nodes' files.

#[cfg(feature = "distributed")]
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{LogicalPlan, TableScan};
use datafusion::prelude::SessionContext;
use url::Url;
use vigil_storage::Storage;

#[cfg(feature = "distributed")]
mod segment_files;

/// Whether this build has Ballista (the `distributed` feature, on by default).
pub const AVAILABLE: bool = cfg!(feature = "distributed");

/// Where distributed queries go.
#[derive(Clone, Debug)]
pub struct BallistaOptions {
    /// The scheduler, `df://host:port`.
    pub scheduler: String,
    /// Queries spanning at least this much time (or unbounded) run on Ballista.
    pub min_range: Duration,
    /// The store's base URL as executors reach it (`file:///...`, `s3://bucket/prefix/`).
    pub store_url: Url,
}

/// A Ballista session whose default schema holds every table.
#[cfg(feature = "distributed")]
pub(crate) async fn session(storage: &Storage, options: &BallistaOptions) -> DfResult<SessionContext> {
    use ballista::prelude::SessionContextExt;
    let ctx = SessionContext::remote(&options.scheduler).await?;
    let tables = segment_files::SegmentFiles { storage: storage.clone(), store_url: options.store_url.clone() };
    vigil_storage::catalog::set_default_schema(&ctx, Arc::new(tables))?;
    Ok(ctx)
}

/// Without Ballista in the build, a configured scheduler is refused at start (`Config`
/// checks it); a query that still gets here says why.
#[cfg(not(feature = "distributed"))]
pub(crate) async fn session(_storage: &Storage, _options: &BallistaOptions) -> DfResult<SessionContext> {
    Err(datafusion::error::DataFusionError::Configuration(
        "distributed queries need a build with the `distributed` feature (on by default)".into(),
    ))
}

/// The time each scan of `plan` covers, in nanoseconds; `None` when some scan is unbounded.
pub(crate) fn scanned_span_ns(plan: &LogicalPlan) -> Option<i64> {
    let mut widest = Some(0i64);
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(TableScan { table_name, filters, .. }) = node {
            let span = vigil_storage::catalog::time_span_ns(table_name.table(), filters.as_slice());
            widest = match (widest, span) {
                (Some(w), Some(s)) => Some(w.max(s)),
                _ => None,
            };
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    widest
}
