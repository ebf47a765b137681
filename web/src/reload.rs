//! `POST /-/reload`: re-reads definition files; a set that fails to load never replaces the
//! running one.

use axum::extract::State;
use axum::http::StatusCode;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;

/// The outcome of the last reload.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ReloadStatus {
    pub successful: bool,
    pub at_ms: i64,
    /// Every error, one `file:line:col: message` per line.
    pub error: Option<String>,
    pub slos: usize,
}

/// Why a reload was refused: every error, one `file:line:col: message` per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReloadRefused(pub String);

/// Reloads definitions; implemented by the binary, which knows the files.
pub trait Reload: Send + Sync {
    fn reload(&self) -> BoxFuture<'_, Result<(), ReloadRefused>>;
    fn status(&self) -> ReloadStatus;
}

pub async fn reload(State(app): State<AppState>) -> Result<StatusCode, ApiError> {
    match app.reloader.reload().await {
        Ok(()) => Ok(StatusCode::OK),
        Err(error) => Err(ApiError::bad_request(error.0, "fix the files; the previous definitions stay in force")),
    }
}
