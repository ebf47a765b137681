//! `POST /-/reload`: re-reads definition files; a set that fails to load never replaces the
//! running one.

use axum::Json;
use axum::extract::State;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Value, json};

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
    /// Top-level settings changed in the config that take effect at the next restart.
    pub restart_needed: Vec<String>,
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

/// 200 with the settings that still need a restart, or 400 with every error.
pub async fn reload(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    match app.reloader.reload().await {
        Ok(()) => Ok(Json(json!({"status": "success", "restart_needed": app.reloader.status().restart_needed}))),
        Err(error) => Err(ApiError::bad_request(error.0, "fix the files; the previous definitions stay in force")),
    }
}
