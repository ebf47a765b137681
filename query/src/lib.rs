//! Vigil's query layer: one DataFusion session over every stored table, read-only SQL with
//! time and memory bounds, and the encoders that turn results into JSON, CSV or Arrow IPC.
//! PromQL and SLO evaluation build on the same session.

pub mod distributed;
pub mod duration;
pub mod engine;
pub mod guard;
pub mod logs;
pub mod output;
pub mod promql;
pub mod slo;
pub mod traces;

pub use duration::PromDuration;
pub use engine::{QueryEngine, QueryError, QueryOptions, QueryResult};
