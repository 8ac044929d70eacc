//! Sweeps: a pipeline run at several settings, each over several seeds. The `[sweep]` section
//! names the keys to vary (any key `--set` accepts) and their values; the points are either
//! one factor at a time around the file's own settings (the default: change one thing at a
//! time) or the full grid. Every point × seed is an ordinary run, cached like any other, in
//! its own run directory.
//!
//! ```toml
//! [sweep]
//! mode = "one_at_a_time"     # or "grid"
//! seeds = [1, 2, 3]
//! vary = { "stages.model.params.dropout" = [0.2, 0.4], "stages.model.params.user_embedding" = [0, 64] }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How the points of a sweep are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SweepMode {
    /// The base point, then each value of each key with every other key at its base value.
    #[default]
    OneAtATime,
    /// Every combination of the values.
    Grid,
}

/// The `[sweep]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    /// `one_at_a_time` (default) or `grid`.
    #[serde(default)]
    pub mode: SweepMode,
    /// Pipeline seeds each point runs with (default 1, 2, 3).
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Dotted key (as for `--set`) → the values it takes.
    pub vary: BTreeMap<String, Vec<toml::Value>>,
}

fn default_seeds() -> Vec<u64> {
    vec![1, 2, 3]
}

/// One point of a sweep: its name (for its run directories) and its overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// `base`, or the settings joined (`dropout=0.4`).
    pub name: String,
    /// `key=value` overrides, as `--set` takes them.
    pub overrides: Vec<String>,
}

/// Problems of the section itself (keys and values are checked when each point is loaded).
pub fn check(section: &SweepSection) -> Vec<String> {
    let mut problems = Vec::new();
    if section.vary.is_empty() {
        problems.push("`sweep.vary` names no key to vary".to_string());
    }
    for (key, values) in &section.vary {
        if values.is_empty() {
            problems.push(format!("`sweep.vary.{key}` has no values"));
        }
        if key == "pipeline.seed" {
            problems.push("vary seeds with `sweep.seeds`, not `sweep.vary`".to_string());
        }
    }
    if section.seeds.is_empty() {
        problems.push("`sweep.seeds` is empty: each point needs at least one seed".to_string());
    }
    problems
}

/// The points of a sweep, base first.
pub fn points(section: &SweepSection) -> Vec<Point> {
    let setting = |key: &str, value: &toml::Value| {
        (
            format!("{key}={value}"),
            format!("{}={value}", key.rsplit('.').next().unwrap_or(key)),
        )
    };
    let mut out = vec![Point {
        name: "base".into(),
        overrides: Vec::new(),
    }];
    match section.mode {
        SweepMode::OneAtATime => {
            for (key, values) in &section.vary {
                for value in values {
                    let (set, short) = setting(key, value);
                    out.push(Point {
                        name: short,
                        overrides: vec![set],
                    });
                }
            }
        }
        SweepMode::Grid => {
            let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
            for (key, values) in &section.vary {
                combos = combos
                    .into_iter()
                    .flat_map(|combo| {
                        values.iter().map(move |v| {
                            let mut c = combo.clone();
                            c.push(setting(key, v));
                            c
                        })
                    })
                    .collect();
            }
            out.extend(combos.into_iter().map(|c| {
                Point {
                    name: c
                        .iter()
                        .map(|(_, short)| short.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    overrides: c.into_iter().map(|(set, _)| set).collect(),
                }
            }));
        }
    }
    out
}

/// A directory name for a point and seed (characters a file system may reject replaced).
pub fn run_dir_name(point: &Point, seed: u64) -> String {
    let safe: String = point
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-seed{seed}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(mode: SweepMode) -> SweepSection {
        SweepSection {
            mode,
            seeds: vec![1, 2],
            vary: [
                (
                    "stages.m.params.dropout".to_string(),
                    vec![toml::Value::Float(0.2), toml::Value::Float(0.4)],
                ),
                (
                    "stages.m.params.hidden".to_string(),
                    vec![toml::Value::Integer(64)],
                ),
            ]
            .into(),
        }
    }

    #[test]
    fn one_at_a_time_changes_one_key_per_point_and_grid_crosses_them() {
        let p = points(&section(SweepMode::OneAtATime));
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base", "dropout=0.2", "dropout=0.4", "hidden=64"]);
        assert!(p[1..].iter().all(|p| p.overrides.len() == 1));
        assert_eq!(p[3].overrides, ["stages.m.params.hidden=64"]);
        let g = points(&section(SweepMode::Grid));
        assert_eq!(g.len(), 3);
        assert_eq!(
            g[2].overrides,
            ["stages.m.params.dropout=0.4", "stages.m.params.hidden=64"]
        );
        assert_eq!(run_dir_name(&g[2], 7), "dropout=0.4,hidden=64-seed7");
        assert!(check(&section(SweepMode::Grid)).is_empty());
    }
}
