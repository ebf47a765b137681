//! Prometheus's relabelling, as `relabel_configs` (a scrape target's labels, before it is
//! scraped) and `metric_relabel_configs` (each scraped sample's, before it is stored) apply
//! it: each rule in turn sees what the one before left. Regexes are anchored at both ends;
//! `$1`, `${1}`, `$name` in `replacement` and `target_label` expand as Go's `Regexp.Expand`;
//! a label set to the empty value is removed.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;

/// One rule as the config writes it (Prometheus's `relabel_config`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default)]
    pub source_labels: Vec<String>,
    #[serde(default = "RelabelConfig::default_separator")]
    pub separator: String,
    #[serde(default)]
    pub target_label: String,
    #[serde(default = "RelabelConfig::default_regex")]
    pub regex: String,
    #[serde(default = "RelabelConfig::default_replacement")]
    pub replacement: String,
    #[serde(default)]
    pub action: RelabelAction,
    /// `hashmod`'s divisor.
    #[serde(default)]
    pub modulus: u64,
}

impl RelabelConfig {
    fn default_separator() -> String {
        ";".into()
    }

    fn default_regex() -> String {
        "(.*)".into()
    }

    fn default_replacement() -> String {
        "$1".into()
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RelabelAction {
    #[default]
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    Lowercase,
    Uppercase,
    LabelMap,
    LabelDrop,
    LabelKeep,
    /// `target_label` = the MD5 of the joined source values, modulo `modulus` (sharding
    /// targets over several scrapers).
    HashMod,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RelabelError {
    #[error("invalid regex {regex:?}: {message}")]
    Regex { regex: String, message: String },
    #[error("action {0:?} needs a target_label")]
    NoTarget(RelabelAction),
    #[error("action hashmod needs a modulus above 0")]
    NoModulus,
}

/// A rule with its regex compiled.
#[derive(Clone, Debug)]
pub struct Rule {
    config: RelabelConfig,
    regex: Regex,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl Rule {
    pub fn compile(config: &RelabelConfig) -> Result<Rule, RelabelError> {
        use RelabelAction::*;
        if config.action == HashMod && config.modulus == 0 {
            return Err(RelabelError::NoModulus);
        }
        let needs_target = matches!(config.action, Replace | KeepEqual | DropEqual | Lowercase | Uppercase | HashMod);
        if needs_target && config.target_label.is_empty() {
            return Err(RelabelError::NoTarget(config.action));
        }
        let regex = Regex::new(&format!("^(?:{})$", config.regex))
            .map_err(|e| RelabelError::Regex { regex: config.regex.clone(), message: e.to_string() })?;
        Ok(Rule { config: config.clone(), regex })
    }

    /// Applies the rule; `false` when it drops the label set.
    fn apply(&self, labels: &mut BTreeMap<String, String>) -> bool {
        use RelabelAction::*;
        let config = &self.config;
        let value = config
            .source_labels
            .iter()
            .map(|name| labels.get(name).map_or("", String::as_str))
            .collect::<Vec<_>>()
            .join(&config.separator);
        let target_value = || labels.get(&config.target_label).map_or("", String::as_str);
        match config.action {
            Keep => return self.regex.is_match(&value),
            Drop => return !self.regex.is_match(&value),
            KeepEqual => return target_value() == value,
            DropEqual => return target_value() != value,
            Replace => {
                if let Some(captures) = self.regex.captures(&value) {
                    let mut target = String::new();
                    captures.expand(&config.target_label, &mut target);
                    if vigil_storage::write::is_valid_label_name(&target) {
                        let mut replaced = String::new();
                        captures.expand(&config.replacement, &mut replaced);
                        set(labels, target, replaced);
                    }
                }
            }
            Lowercase => set(labels, config.target_label.clone(), value.to_lowercase()),
            Uppercase => set(labels, config.target_label.clone(), value.to_uppercase()),
            LabelMap => {
                let mapped: Vec<(String, String)> = labels
                    .iter()
                    .filter(|(name, _)| self.regex.is_match(name))
                    .map(|(name, v)| (self.regex.replace(name, config.replacement.as_str()).into_owned(), v.clone()))
                    .collect();
                for (name, v) in mapped {
                    set(labels, name, v);
                }
            }
            LabelDrop => labels.retain(|name, _| !self.regex.is_match(name)),
            LabelKeep => labels.retain(|name, _| self.regex.is_match(name)),
            HashMod => {
                let digest = <md5::Md5 as md5::Digest>::digest(value.as_bytes());
                // Prometheus's `sum64`: the digest's last eight bytes, big-endian.
                let mut low = [0u8; 8];
                low.copy_from_slice(&digest[8..]);
                set(labels, config.target_label.clone(), (u64::from_be_bytes(low) % config.modulus).to_string());
            }
        }
        true
    }
}

/// Sets a label; the empty value removes it.
fn set(labels: &mut BTreeMap<String, String>, name: String, value: String) {
    if value.is_empty() {
        labels.remove(&name);
    } else {
        labels.insert(name, value);
    }
}

/// Applies `rules` in order; `None` when one drops the label set.
pub fn relabel(mut labels: BTreeMap<String, String>, rules: &[Rule]) -> Option<BTreeMap<String, String>> {
    rules.iter().all(|rule| rule.apply(&mut labels)).then_some(labels)
}

/// Compiles a list of rules, naming the first bad one by its place.
pub fn compile_all(configs: &[RelabelConfig]) -> Result<Vec<Rule>, (usize, RelabelError)> {
    configs.iter().enumerate().map(|(i, c)| Rule::compile(c).map_err(|e| (i, e))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Vec<Rule> {
        let configs: Vec<RelabelConfig> = serde_saphyr::from_str(yaml).unwrap();
        compile_all(&configs).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_common_actions_do_what_prometheus_does() {
        let set = labels(&[("__name__", "http_requests_total"), ("job", "api"), ("code", "500"), ("Path", "/A")]);
        // replace with capture groups in the target and the replacement; the default regex.
        let out = relabel(
            set.clone(),
            &rules(
                "- {source_labels: [job, code], regex: '(.+);(5..)', target_label: 'err_$1', replacement: '${2}x'}\n- {source_labels: [Path], target_label: path}\n",
            ),
        )
        .unwrap();
        assert_eq!(out.get("err_api").map(String::as_str), Some("500x"));
        assert_eq!(out.get("path").map(String::as_str), Some("/A"));
        // A regex that does not match leaves the set; an empty replacement removes the target.
        let out = relabel(set.clone(), &rules("- {source_labels: [code], regex: '2..', target_label: code, replacement: ''}\n- {source_labels: [job], target_label: code, replacement: ''}\n")).unwrap();
        assert!(!out.contains_key("code"));
        // keep / drop on the joined value, anchored.
        assert!(
            relabel(set.clone(), &rules("- {source_labels: [__name__], regex: 'http_.*', action: keep}\n")).is_some()
        );
        assert!(relabel(set.clone(), &rules("- {source_labels: [__name__], regex: 'http', action: keep}\n")).is_none());
        assert!(relabel(set.clone(), &rules("- {source_labels: [code], regex: '5..', action: drop}\n")).is_none());
        // keepequal / dropequal compare with the target label.
        assert!(
            relabel(set.clone(), &rules("- {source_labels: [code], target_label: code, action: keepequal}\n"))
                .is_some()
        );
        assert!(
            relabel(set.clone(), &rules("- {source_labels: [job], target_label: code, action: keepequal}\n")).is_none()
        );
        // case, labelmap, labeldrop, labelkeep.
        let out = relabel(set.clone(), &rules("- {source_labels: [Path], target_label: lower, action: lowercase}\n- {regex: '(P)ath', replacement: 'x_$1', action: labelmap}\n- {regex: 'code', action: labeldrop}\n")).unwrap();
        assert_eq!(out.get("lower").map(String::as_str), Some("/a"));
        assert_eq!(out.get("x_P").map(String::as_str), Some("/A"));
        assert!(!out.contains_key("code") && out.contains_key("Path"));
        let out = relabel(set, &rules("- {regex: '__name__|job', action: labelkeep}\n")).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["__name__", "job"]);
    }

    #[test]
    fn bad_rules_are_refused_with_their_place() {
        let configs: Vec<RelabelConfig> =
            serde_saphyr::from_str("- {action: keep, source_labels: [a]}\n- {regex: '(', action: drop}\n").unwrap();
        assert!(matches!(compile_all(&configs), Err((1, RelabelError::Regex { .. }))));
        let configs: Vec<RelabelConfig> = serde_saphyr::from_str("- {source_labels: [a]}\n").unwrap();
        assert_eq!(compile_all(&configs).unwrap_err(), (0, RelabelError::NoTarget(RelabelAction::Replace)));
        let configs: Vec<RelabelConfig> = serde_saphyr::from_str("- {action: hashmod, target_label: s}\n").unwrap();
        assert_eq!(compile_all(&configs).unwrap_err(), (0, RelabelError::NoModulus));
        let configs: Vec<RelabelConfig> = serde_saphyr::from_str("- {action: hashmod, modulus: 4}\n").unwrap();
        assert_eq!(compile_all(&configs).unwrap_err(), (0, RelabelError::NoTarget(RelabelAction::HashMod)));
    }

    /// Prometheus's own cases (model/relabel/relabel_test.go, v2.42.0), and sharding by it.
    #[test]
    fn hashmod_gives_prometheus_s_shards() {
        let set = labels(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
        let out =
            relabel(set, &rules("- {source_labels: [c], target_label: d, action: hashmod, modulus: 1000}\n")).unwrap();
        assert_eq!(out.get("d").map(String::as_str), Some("976"));
        let out = relabel(
            labels(&[("a", "foo\nbar")]),
            &rules("- {source_labels: [a], target_label: b, action: hashmod, modulus: 1000}\n"),
        )
        .unwrap();
        assert_eq!(out.get("b").map(String::as_str), Some("734"));
        // hashmod then keep: each of two scrapers takes its share of the targets, together all.
        let shard = |n: u32| {
            rules(&format!(
                "- {{source_labels: [__address__], target_label: __tmp_shard, action: hashmod, modulus: 2}}\n- {{source_labels: [__tmp_shard], regex: '{n}', action: keep}}\n"
            ))
        };
        let targets: Vec<String> = (0..20).map(|i| format!("10.0.0.{i}:9100")).collect();
        let kept = |n: u32| -> Vec<&String> {
            targets.iter().filter(|t| relabel(labels(&[("__address__", t)]), &shard(n)).is_some()).collect()
        };
        let (zero, one) = (kept(0), kept(1));
        assert!(!zero.is_empty() && !one.is_empty());
        assert_eq!(zero.len() + one.len(), targets.len());
        assert!(zero.iter().all(|t| !one.contains(t)));
    }
}
