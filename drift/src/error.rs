//! Why a drift request or a scoring run failed, and what to do about it.

use vigil_query::QueryError;
use vigil_storage::StorageError;

use crate::model::FeatureKey;

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("{message}")]
    Invalid { message: String, hint: String },
    #[error("no reference is registered for {0}")]
    NoReference(FeatureKey),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Reading window data or history hit a query limit (time, memory, result size) or a
    /// damaged segment.
    #[error("reading drift data: {0}")]
    Read(#[from] QueryError),
    /// Rows that do not have the shape Vigil writes: a bug, or a damaged table.
    #[error("drift data: {0}")]
    Internal(String),
}

impl DriftError {
    pub fn hint(&self) -> String {
        match self {
            DriftError::Invalid { hint, .. } => hint.clone(),
            DriftError::NoReference(_) => "register one first with POST /api/v1/drift/reference".into(),
            DriftError::Storage(e) => e.write_hint().into(),
            DriftError::Read(e) => e.hint(),
            DriftError::Internal(_) => "this is a bug in Vigil; please report it".into(),
        }
    }
}

/// Plans over the fixed drift tables fail only when they are not what Vigil wrote.
impl From<datafusion::error::DataFusionError> for DriftError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        DriftError::Internal(e.to_string())
    }
}

impl From<datafusion::arrow::error::ArrowError> for DriftError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        DriftError::Internal(e.to_string())
    }
}
