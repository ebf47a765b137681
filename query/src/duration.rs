//! Durations as Prometheus writes them, for every config and definition file.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written the Prometheus way: `30s`, `5m`, `1h30m`, `30d`, `1w`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PromDuration(pub Duration);

impl PromDuration {
    pub const fn days(n: u64) -> Self {
        PromDuration(Duration::from_secs(n * 86400))
    }
}

impl fmt::Debug for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", promql_parser::util::duration::display_duration(&self.0))
    }
}

impl std::str::FromStr for PromDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim_end_matches(|c: char| c.is_ascii_alphabetic()).chars().all(|c| c == '0')
            && !text.is_empty()
            && text.starts_with('0')
        {
            return Ok(PromDuration(Duration::ZERO));
        }
        promql_parser::util::duration::parse_duration(text).map(PromDuration).map_err(|_| {
            format!("invalid duration {text:?}: use a number and a unit (ms, s, m, h, d, w, y), e.g. 30s or 1h30m")
        })
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
