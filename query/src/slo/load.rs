//! Loading SLO files: each YAML document is recognised by `apiVersion` (Sloth's plain files
//! by `version`), parsed in its dialect, and mapped to [`SloDefinition`]s. OpenSLO
//! references and Sloth AlertWindows resolve across all files of one load. Every error is
//! collected, not just the first.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::correction::{self, Correction, CorrectionYaml};
use super::model::SloDefinition;
use super::openslo::Catalog;
use super::yaml::{LoadError, Place, documents};
use super::{sloth, vigil};

/// The keys that tell a document's dialect.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<Spanned<String>>,
    #[serde(default)]
    version: Option<Spanned<String>>,
    #[serde(default)]
    kind: Option<Spanned<String>>,
}

/// What a definition file holds, judged by its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Slo,
    Rules,
    Config,
}

/// Tells SLO files (apiVersion/version keys) and rule files (`groups`) from config files.
pub fn file_kind(text: &str) -> FileKind {
    let keys: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with([' ', '\t', '#', '-']) && l.contains(':'))
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    if keys.contains("apiVersion") || keys.contains("version") {
        FileKind::Slo
    } else if keys.contains("groups") {
        FileKind::Rules
    } else {
        FileKind::Config
    }
}

/// A file pattern glob cannot read.
#[derive(Debug, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {source}")]
pub struct PatternError {
    pub pattern: String,
    source: glob::PatternError,
}

/// Files matching the patterns (relative ones against `base`), sorted, deduplicated.
pub fn expand(base: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, PatternError> {
    let mut files = BTreeSet::new();
    for pattern in patterns {
        let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base.join(pattern) };
        let text = full.to_string_lossy().to_string();
        let matches = glob::glob(&text).map_err(|source| PatternError { pattern: pattern.clone(), source })?;
        for path in matches.flatten() {
            if path.is_file() {
                files.insert(path);
            }
        }
    }
    Ok(files.into_iter().collect())
}

/// What a set of definition files holds: SLOs and budget corrections.
#[derive(Clone, Debug, Default)]
pub struct Definitions {
    pub slos: Vec<SloDefinition>,
    pub corrections: Vec<Correction>,
}

/// Loads SLO definitions from files. With `receivers`, every receiver an SLO names must be
/// among them.
pub fn load_files(
    paths: &[PathBuf],
    receivers: Option<&BTreeSet<String>>,
) -> Result<Vec<SloDefinition>, Vec<LoadError>> {
    load_definition_files(paths, receivers).map(|d| d.slos)
}

/// Loads SLOs and corrections from files (see [`load_files`]).
pub fn load_definition_files(
    paths: &[PathBuf],
    receivers: Option<&BTreeSet<String>>,
) -> Result<Definitions, Vec<LoadError>> {
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(path) {
            Ok(text) => texts.push((path.display().to_string(), text)),
            Err(e) => errors.push(LoadError {
                file: path.display().to_string(),
                line: 1,
                column: 1,
                message: format!("cannot read the file: {e}"),
                hint: None,
            }),
        }
    }
    match load_definitions(&texts, receivers) {
        Ok(loaded) if errors.is_empty() => Ok(loaded),
        Ok(_) => Err(errors),
        Err(mut more) => {
            errors.append(&mut more);
            Err(errors)
        }
    }
}

/// Loads SLO definitions from (file name, text) pairs.
pub fn load_texts(
    files: &[(String, String)],
    receivers: Option<&BTreeSet<String>>,
) -> Result<Vec<SloDefinition>, Vec<LoadError>> {
    load_definitions(files, receivers).map(|d| d.slos)
}

/// Loads SLOs and corrections from (file name, text) pairs; a correction's scope must name
/// SLOs of the same load.
pub fn load_definitions(
    files: &[(String, String)],
    receivers: Option<&BTreeSet<String>>,
) -> Result<Definitions, Vec<LoadError>> {
    let loaded_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut corrections: Vec<Correction> = Vec::new();
    let mut scoped: Vec<(String, u64, Spanned<String>)> = Vec::new();
    let mut correction_lines: Vec<(String, u64)> = Vec::new();
    let mut errors: Vec<LoadError> = Vec::new();
    let mut slos: Vec<SloDefinition> = Vec::new();
    let mut sloth_slos: Vec<SloDefinition> = Vec::new();
    let mut alert_windows = None;
    let mut catalog = Catalog::default();
    let mut references: Vec<(String, u64, Spanned<String>)> = Vec::new();
    for (file, text) in files {
        for document in documents(text) {
            let place = Place { file, line_offset: document.line_offset };
            let result = (|| -> Result<(), LoadError> {
                let probe: Probe = place.parse(document.text)?;
                match (&probe.api_version, &probe.version, &probe.kind) {
                    (Some(api), _, Some(kind)) if api.value == "vigil/v1" && kind.value == "Correction" => {
                        let parsed: CorrectionYaml = place.parse(document.text)?;
                        let origin = format!("{file}:{}", document.line_offset + 1);
                        let (loaded, named) = correction::convert(&place, parsed, document.text, loaded_at, origin)?;
                        scoped.extend(named.into_iter().map(|n| (file.clone(), document.line_offset, n)));
                        corrections.push(loaded);
                        correction_lines.push((file.clone(), document.line_offset + 1));
                    }
                    (Some(api), _, _) if api.value == "vigil/v1" => {
                        let parsed: vigil::VigilSlo = place.parse(document.text)?;
                        let mut named = Vec::new();
                        slos.push(vigil::convert(&place, parsed, document.text, &mut named)?);
                        references.extend(named.into_iter().map(|r| (file.clone(), document.line_offset, r)));
                    }
                    (Some(api), _, Some(kind)) if api.value == "openslo/v1" => {
                        catalog.add(&place, kind, document.text)?
                    }
                    (Some(api), _, Some(kind)) if api.value == "sloth.slok.dev/v1" => match kind.value.as_str() {
                        "PrometheusServiceLevel" => {
                            let parsed: sloth::ServiceLevel = place.parse(document.text)?;
                            sloth_slos.extend(sloth::convert_crd(&place, document.text, &parsed)?);
                        }
                        "AlertWindows" => {
                            let parsed: sloth::AlertWindows = place.parse(document.text)?;
                            alert_windows = Some(sloth::alert_windows(&place, &parsed)?);
                        }
                        other => {
                            return Err(place.at(
                                kind,
                                format!("unknown Sloth kind {other:?}"),
                                Some("PrometheusServiceLevel or AlertWindows".into()),
                            ));
                        }
                    },
                    (Some(api), _, None) if api.value == "openslo/v1" || api.value == "sloth.slok.dev/v1" => {
                        return Err(place.at(
                            api,
                            "the document has no kind",
                            Some("add kind: SLO (or another kind of this apiVersion)".into()),
                        ));
                    }
                    (Some(api), _, _) => {
                        return Err(place.at(
                            api,
                            format!("unknown apiVersion {:?}", api.value),
                            Some("vigil/v1, openslo/v1 or sloth.slok.dev/v1 (or version: prometheus/v1)".into()),
                        ));
                    }
                    (None, Some(version), _) if version.value == "prometheus/v1" => {
                        let parsed: sloth::PlainSpec = place.parse(document.text)?;
                        sloth_slos.extend(sloth::convert_plain(&place, document.text, &parsed)?);
                    }
                    (None, Some(version), _) => {
                        return Err(place.at(
                            version,
                            format!("unknown Sloth version {:?}", version.value),
                            Some("prometheus/v1".into()),
                        ));
                    }
                    (None, None, _) => {
                        return Err(place.start(
                            "not an SLO document: no apiVersion or version",
                            Some("start with apiVersion: vigil/v1, openslo/v1 or sloth.slok.dev/v1".into()),
                        ));
                    }
                }
                Ok(())
            })();
            if let Err(e) = result {
                errors.push(e);
            }
        }
    }
    match catalog.resolve(&mut references) {
        Ok(mut resolved) => slos.append(&mut resolved),
        Err(mut more) => errors.append(&mut more),
    }
    if let Some((period, conditions)) = &alert_windows {
        for slo in &mut sloth_slos {
            sloth::apply_windows(slo, *period, conditions);
        }
    }
    slos.append(&mut sloth_slos);
    if let Some(known) = receivers {
        for (file, line_offset, reference) in &references {
            if !known.contains(&reference.value) {
                let place = Place { file, line_offset: *line_offset };
                let hint = super::yaml::closest(&reference.value, known, 3).map(|k| format!("did you mean `{k}`?"));
                errors.push(place.at(
                    reference,
                    format!("unknown receiver {:?}", reference.value),
                    hint.or_else(|| Some("define it under receivers: in the config".into())),
                ));
            }
        }
    }
    let mut seen: HashMap<&str, &SloDefinition> = HashMap::new();
    for slo in &slos {
        if let Some(first) = seen.insert(&slo.name, slo) {
            errors.push(LoadError {
                file: slo.source.file.clone(),
                line: slo.source.line,
                column: 1,
                message: format!("duplicate SLO name {:?}", slo.name),
                hint: Some(format!("also defined at {}:{}", first.source.file, first.source.line)),
            });
        }
    }
    errors.extend(resolve_composites(&mut slos));
    let names: BTreeSet<String> = slos.iter().map(|s| s.name.clone()).collect();
    for (file, line_offset, named) in &scoped {
        for (name, hint) in correction::unknown_slos([&named.value], &names) {
            let place = Place { file, line_offset: *line_offset };
            errors.push(place.at(named, format!("the correction's scope names no SLO {name:?}"), hint));
        }
    }
    let mut seen_corrections = BTreeSet::new();
    for (c, (file, line)) in corrections.iter().zip(&correction_lines) {
        if !seen_corrections.insert(c.name.as_str()) {
            errors.push(LoadError {
                file: file.clone(),
                line: *line,
                column: 1,
                message: format!("duplicate correction name {:?}", c.name),
                hint: None,
            });
        }
    }
    if errors.is_empty() {
        Ok(Definitions { slos, corrections })
    } else {
        errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Err(errors)
    }
}

/// Fills each composite's parts with their definitions, loaded in the same set; a part that
/// names no SLO, names a composite, or names a grouped SLO is an error at its place.
fn resolve_composites(slos: &mut [SloDefinition]) -> Vec<LoadError> {
    let by_name: HashMap<String, std::sync::Arc<SloDefinition>> = slos
        .iter()
        .filter(|s| !matches!(s.sli, super::model::Sli::Composite { .. }))
        .map(|s| (s.name.clone(), std::sync::Arc::new(s.clone())))
        .collect();
    let composites: std::collections::HashSet<String> =
        slos.iter().filter(|s| matches!(s.sli, super::model::Sli::Composite { .. })).map(|s| s.name.clone()).collect();
    let mut errors = Vec::new();
    for slo in slos.iter_mut() {
        let super::model::Sli::Composite { parts, .. } = &mut slo.sli else { continue };
        for part in parts {
            match by_name.get(&part.name) {
                Some(found) if !found.group_by.is_empty() => errors.push(LoadError {
                    message: format!("{:?} is grouped; a composite takes ungrouped SLOs", part.name),
                    hint: None,
                    ..part.missing.clone()
                }),
                Some(found) => part.slo = Some(found.clone()),
                None if composites.contains(&part.name) => errors.push(LoadError {
                    message: format!("{:?} is itself composite; compose its parts instead", part.name),
                    hint: None,
                    ..part.missing.clone()
                }),
                None => errors.push(part.missing.clone()),
            }
        }
    }
    errors
}
