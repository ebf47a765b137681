//! The corrections in force: those of the definition files (replaced on every reload) and
//! those made through the API (kept in `<data_dir>/slo/corrections.json`, rewritten whole
//! on each change, to a temporary file then renamed).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::correction::{self, Correction, CorrectionYaml};
use super::yaml::{LoadError, Place, documents};

/// Corrections the API keeps at most.
pub const MAX_API_CORRECTIONS: usize = 1_000;
/// A correction document the API takes at most.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CorrectionError {
    #[error("invalid correction: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<LoadError>),
    #[error("a correction named {0:?} exists")]
    Exists(String),
    #[error("no correction named {0:?}")]
    NotFound(String),
    #[error("correction {name:?} is defined in {origin}: edit or remove it there")]
    FromFile { name: String, origin: String },
    #[error("at most {MAX_API_CORRECTIONS} corrections can be made through the API")]
    TooMany,
    #[error("corrections file {path}: {message}")]
    Store { path: PathBuf, message: String },
}

/// How an API-made correction is stored: its document and who made it when.
#[derive(Serialize, Deserialize)]
struct Stored {
    text: String,
    created_by: String,
    created_at_ms: i64,
}

#[derive(Default)]
pub struct CorrectionBook {
    path: Option<PathBuf>,
    from_files: Vec<Arc<Correction>>,
    from_api: Vec<Arc<Correction>>,
}

/// Reads one correction document sent to the API (YAML, or JSON, which is YAML too); with
/// `known_slos`, the SLOs its scope names must be among them.
pub fn parse_document(
    text: &str,
    created_by: &str,
    created_at_ms: i64,
    known_slos: Option<&BTreeSet<String>>,
) -> Result<Correction, CorrectionError> {
    let invalid = |message: String, hint: Option<String>| {
        CorrectionError::Invalid(vec![LoadError { file: "request".into(), line: 1, column: 1, message, hint }])
    };
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(invalid(format!("the document is over {MAX_DOCUMENT_BYTES} bytes"), None));
    }
    let docs = documents(text);
    let [doc] = docs.as_slice() else {
        return Err(invalid(
            format!("expected one document, got {}", docs.len()),
            Some("send one apiVersion: vigil/v1, kind: Correction document".into()),
        ));
    };
    let place = Place { file: "request", line_offset: doc.line_offset };
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "apiVersion", default)]
        api_version: Option<String>,
        #[serde(default)]
        kind: Option<String>,
    }
    let probe: Probe = place.parse(doc.text).map_err(|e| CorrectionError::Invalid(vec![e]))?;
    if probe.api_version.as_deref() != Some("vigil/v1") || probe.kind.as_deref() != Some("Correction") {
        return Err(invalid("not a correction".into(), Some("apiVersion: vigil/v1 and kind: Correction".into())));
    }
    let parsed: CorrectionYaml = place.parse(doc.text).map_err(|e| CorrectionError::Invalid(vec![e]))?;
    let (mut loaded, named) = correction::convert(&place, parsed, doc.text, created_at_ms, "api".into())
        .map_err(|e| CorrectionError::Invalid(vec![e]))?;
    let unknown: Vec<LoadError> = named
        .iter()
        .filter(|_| known_slos.is_some())
        .flat_map(|n| {
            correction::unknown_slos([&n.value], known_slos.unwrap_or(&BTreeSet::new()))
                .into_iter()
                .map(|(name, hint)| place.at(n, format!("the correction's scope names no SLO {name:?}"), hint))
        })
        .collect();
    if !unknown.is_empty() {
        return Err(CorrectionError::Invalid(unknown));
    }
    if loaded.created_by.is_empty() {
        loaded.created_by = created_by.to_string();
    }
    Ok(loaded)
}

impl CorrectionBook {
    /// Every correction in force: the files' then the API's.
    pub fn all(&self) -> Vec<Arc<Correction>> {
        self.from_files.iter().chain(&self.from_api).cloned().collect()
    }

    pub fn set_from_files(&mut self, corrections: Vec<Correction>) {
        self.from_files = corrections.into_iter().map(Arc::new).collect();
    }

    /// Reads the API's corrections stored at `path` and keeps them there from now on. One
    /// naming an SLO that is gone stays (it applies again if the SLO comes back).
    pub fn open(&mut self, path: &Path) -> Result<usize, CorrectionError> {
        self.path = Some(path.to_path_buf());
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(CorrectionError::Store { path: path.into(), message: e.to_string() }),
        };
        let stored: Vec<Stored> = serde_json::from_str(&text)
            .map_err(|e| CorrectionError::Store { path: path.into(), message: e.to_string() })?;
        self.from_api.clear();
        for entry in stored {
            match parse_document(&entry.text, &entry.created_by, entry.created_at_ms, None) {
                Ok(loaded) => self.from_api.push(Arc::new(loaded)),
                Err(error) => tracing::warn!(%error, "a stored correction no longer applies; dropped"),
            }
        }
        Ok(self.from_api.len())
    }

    /// Adds an API correction (its name unique among all) and stores the set.
    pub fn add(&mut self, correction: Correction) -> Result<Arc<Correction>, CorrectionError> {
        if self.all().iter().any(|c| c.name == correction.name) {
            return Err(CorrectionError::Exists(correction.name));
        }
        if self.from_api.len() >= MAX_API_CORRECTIONS {
            return Err(CorrectionError::TooMany);
        }
        let added = Arc::new(correction);
        self.from_api.push(added.clone());
        if let Err(e) = self.save() {
            self.from_api.pop();
            return Err(e);
        }
        Ok(added)
    }

    /// Removes an API correction and stores the set; a file's correction stays in its file.
    pub fn remove(&mut self, name: &str) -> Result<Arc<Correction>, CorrectionError> {
        if let Some(c) = self.from_files.iter().find(|c| c.name == name) {
            return Err(CorrectionError::FromFile { name: name.into(), origin: c.origin.clone() });
        }
        let index =
            self.from_api.iter().position(|c| c.name == name).ok_or_else(|| CorrectionError::NotFound(name.into()))?;
        let removed = self.from_api.remove(index);
        if let Err(e) = self.save() {
            self.from_api.insert(index, removed);
            return Err(e);
        }
        Ok(removed)
    }

    fn save(&self) -> Result<(), CorrectionError> {
        let Some(path) = &self.path else { return Ok(()) };
        let fail = |e: std::io::Error| CorrectionError::Store { path: path.clone(), message: e.to_string() };
        let stored: Vec<Stored> = self
            .from_api
            .iter()
            .map(|c| Stored { text: c.text.clone(), created_by: c.created_by.clone(), created_at_ms: c.created_at_ms })
            .collect();
        let text = serde_json::to_vec_pretty(&stored).map_err(|e| fail(std::io::Error::other(e)))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let temporary = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary).map_err(fail)?;
            file.write_all(&text).map_err(fail)?;
            file.sync_all().map_err(fail)?;
        }
        std::fs::rename(&temporary, path).map_err(fail)
    }
}

pub fn book_path(data_dir: &Path) -> PathBuf {
    data_dir.join("slo").join("corrections.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "{apiVersion: vigil/v1, kind: Correction, metadata: {name: n1}, spec: {reason: upgrade, start: '2026-11-28T02:00:00Z', duration: 1h, scope: {slos: [pay]}}}";

    #[test]
    fn api_corrections_are_kept_across_a_reopen_and_file_ones_are_not_removable() {
        let dir = tempfile::tempdir().unwrap();
        let path = book_path(dir.path());
        let known: BTreeSet<String> = ["pay".to_string()].into();
        let mut book = CorrectionBook::default();
        book.open(&path).unwrap();
        book.add(parse_document(DOC, "alice", 5, Some(&known)).unwrap()).unwrap();
        assert!(matches!(
            book.add(parse_document(DOC, "bob", 6, Some(&known)).unwrap()),
            Err(CorrectionError::Exists(_))
        ));
        let mut reopened = CorrectionBook::default();
        assert_eq!(reopened.open(&path).unwrap(), 1);
        let kept = &reopened.all()[0];
        assert_eq!((kept.name.as_str(), kept.created_by.as_str(), kept.created_at_ms), ("n1", "alice", 5));

        let mut file = parse_document(&DOC.replace("n1", "f1"), "", 0, Some(&known)).unwrap();
        file.origin = "slo.yaml:3".into();
        reopened.set_from_files(vec![file]);
        assert!(matches!(reopened.remove("f1"), Err(CorrectionError::FromFile { .. })));
        reopened.remove("n1").unwrap();
        assert!(matches!(reopened.remove("n1"), Err(CorrectionError::NotFound(_))));
        let mut again = CorrectionBook::default();
        assert_eq!(again.open(&path).unwrap(), 0);
    }

    #[test]
    fn a_document_naming_an_unknown_slo_or_not_a_correction_is_refused() {
        let known: BTreeSet<String> = ["pays".to_string()].into();
        let Err(CorrectionError::Invalid(errors)) = parse_document(DOC, "", 0, Some(&known)) else { panic!() };
        assert!(errors[0].message.contains("names no SLO \"pay\""), "{errors:?}");
        assert_eq!(errors[0].hint.as_deref(), Some("did you mean `pays`?"));
        let Err(CorrectionError::Invalid(errors)) =
            parse_document("{apiVersion: vigil/v1, kind: SLO}", "", 0, Some(&known))
        else {
            panic!()
        };
        assert!(errors[0].message.contains("not a correction"));
    }
}
