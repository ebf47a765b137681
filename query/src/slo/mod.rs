//! SLOs: definitions in three dialects mapped to one model, and their evaluation.
//!
//! ```text
//!  YAML (vigil/v1 · openslo/v1 · Sloth) ──load──► SloDefinition
//!                                                     │ every 30 s
//!   stored samples / spans / drift scores ──source──► per-minute good & total (new data only)
//!                                                     ▼
//!   rollups (minute buckets for 3 days, hour buckets for the window, prefix sums)
//!                                                     ▼
//!   SLI, error budget, burn rates (5m … 3d), state ──► slo_status rows + vigil_slo_* series
//! ```

pub mod attribution;
pub mod correction;
pub mod correction_book;
pub mod evaluate;
pub mod history;
pub mod load;
pub mod model;
mod openslo;
pub mod persist;
pub mod policy;
pub mod replay;
pub mod report;
pub mod rollup;
pub mod scans;
pub mod schedule;
mod sloth;
mod sources;
mod vigil;
pub mod yaml;

pub use correction::Correction;
pub use evaluate::{SloEvaluator, SloState, SloStatus};
pub use load::{
    Definitions, FileKind, PatternError, expand, file_kind, load_definition_files, load_definitions, load_files,
    load_texts,
};
pub use model::SloDefinition;
pub use yaml::LoadError;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod eval_tests;
