//! Sweeps: a pipeline run at several settings, each over several seeds. The `[sweep]` section
//! names the keys to vary (any key `--set` accepts) and their values; the points are either
//! one factor at a time around the file's own settings (the default: change one thing at a
//! time) or the full grid. Every point × seed is an ordinary run, cached like any other, in
//! its own run directory. Without `vary`, a sweep is the pipeline as it is over each seed.
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
    /// Dotted key (as for `--set`) → the values it takes; none: the pipeline as it is, over
    /// each seed.
    #[serde(default)]
    pub vary: BTreeMap<String, Vec<toml::Value>>,
    /// Where the runs execute: `local` (default) or `slurm` (`--executor` overrides it).
    #[serde(default)]
    pub executor: ExecutorChoice,
    /// Local executor: most runs at once (default 1; `--jobs` overrides it). With more than
    /// one, the stages every run shares are computed first, once.
    #[serde(default = "one")]
    pub jobs: usize,
    /// Slurm executor: the resources of each array task.
    #[serde(default)]
    pub slurm: SlurmSettings,
}

fn one() -> usize {
    1
}

/// Where a sweep's runs execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorChoice {
    /// On this machine, `jobs` runs at once.
    #[default]
    Local,
    /// On a Slurm cluster: one job array, one task per point × seed (`sbatch --array`).
    Slurm,
}

impl std::str::FromStr for ExecutorChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(ExecutorChoice::Local),
            "slurm" => Ok(ExecutorChoice::Slurm),
            other => Err(format!("unknown executor `{other}` (local, slurm)")),
        }
    }
}

/// `[sweep.slurm]`: what each array task asks the scheduler for. Unset keys are left to the
/// cluster's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    /// Partition (`--partition`).
    #[serde(default)]
    pub partition: Option<String>,
    /// Time limit of each task (`--time`, e.g. `"02:00:00"`).
    #[serde(default)]
    pub time: Option<String>,
    /// CPUs of each task (`--cpus-per-task`).
    #[serde(default)]
    pub cpus_per_task: Option<u32>,
    /// Memory of each task (`--mem`, e.g. `"16G"`).
    #[serde(default)]
    pub mem: Option<String>,
    /// GPUs of each task (`--gres=gpu:<n>`).
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Most tasks running at once (`--array=…%<n>`).
    #[serde(default)]
    pub max_parallel: Option<u32>,
    /// Further `sbatch` options as written on its command line (`["--account=lab"]`).
    #[serde(default)]
    pub options: Vec<String>,
}

impl SlurmSettings {
    /// The `sbatch` options they make (the array and output options excepted).
    pub fn sbatch_options(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                out.push(format!("--{flag}={v}"));
            }
        };
        push("partition", self.partition.clone());
        push("time", self.time.clone());
        push("cpus-per-task", self.cpus_per_task.map(|n| n.to_string()));
        push("mem", self.mem.clone());
        push("gres", self.gpus.map(|n| format!("gpu:{n}")));
        out.extend(self.options.iter().cloned());
        out
    }

    /// Problems of the settings (the scheduler judges whether it can satisfy them).
    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let texts = [
            ("partition", &self.partition),
            ("time", &self.time),
            ("mem", &self.mem),
        ];
        for (key, value) in texts {
            if value
                .as_deref()
                .is_some_and(|v| v.is_empty() || v.chars().any(char::is_whitespace))
            {
                problems.push(format!("`sweep.slurm.{key}` must be one word"));
            }
        }
        for option in &self.options {
            if !option.starts_with("--") || option.contains(['\n', '\r']) {
                problems.push(format!(
                    "`sweep.slurm.options`: {option:?} is not an sbatch option (`--name=value`)"
                ));
            }
            if [
                "--array",
                "--output",
                "--error",
                "--wait",
                "--dependency",
                "--parsable",
            ]
            .iter()
            .any(|own| option == own || option.starts_with(&format!("{own}=")))
            {
                problems.push(format!(
                    "`sweep.slurm.options`: {option:?} is set by mmflow itself"
                ));
            }
        }
        if self.max_parallel == Some(0) || self.cpus_per_task == Some(0) {
            problems.push("`sweep.slurm` counts must be at least 1".to_string());
        }
        problems
    }
}

fn default_seeds() -> Vec<u64> {
    vec![1, 2, 3]
}

/// One point of a sweep: its name, its run directories' stem and its overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// `base`, or the settings joined (`stages.model.params.dropout=0.4`).
    pub name: String,
    /// Stem of its run directories, unique within the sweep (see [`points`]).
    pub dir: String,
    /// `key=value` overrides, as `--set` takes them.
    pub overrides: Vec<String>,
}

/// The most runs (points × seeds) one sweep may expand to: every run is validated before any
/// starts, so a grid of many keys must be refused before it is built, not after.
pub const MAX_RUNS: u64 = 10_000;

/// How many runs (points × seeds) the section expands to; `None` past `u64`.
fn run_count(section: &SweepSection) -> Option<u64> {
    let mut lengths = section.vary.values().map(|v| v.len() as u64);
    let points = match section.mode {
        _ if section.vary.is_empty() => 0,
        SweepMode::OneAtATime => lengths.sum::<u64>(),
        SweepMode::Grid => lengths.try_fold(1u64, u64::checked_mul)?,
    };
    points
        .checked_add(1)?
        .checked_mul(section.seeds.len() as u64)
}

/// Problems of the section itself (keys and values are checked when each point is loaded).
pub fn check(section: &SweepSection) -> Vec<String> {
    let mut problems = Vec::new();
    match run_count(section) {
        Some(n) if n <= MAX_RUNS => {}
        n => problems.push(format!(
            "`sweep.vary` expands to {} runs (points × seeds); at most {MAX_RUNS}: vary fewer keys or values, or use `mode = \"one_at_a_time\"`",
            n.map_or("more than 2^64".to_string(), |n| n.to_string())
        )),
    }
    for (key, values) in &section.vary {
        if let Err(why) = crate::problem::dotted_keys(key) {
            problems.push(format!(
                "`sweep.vary` key {why}: vary takes the key paths `--set` takes (`stages.<id>.params.<key>`)"
            ));
        } else if key.trim() != key {
            problems.push(format!(
                "`sweep.vary` key `{key}` has spaces around it: write the key path alone"
            ));
        }
        if values.is_empty() {
            problems.push(format!("`sweep.vary.{key}` has no values"));
        }
        if let Some(twice) = values
            .iter()
            .enumerate()
            .find(|(i, v)| values[..*i].contains(v))
            .map(|(_, v)| v)
        {
            problems.push(format!(
                "`sweep.vary.{key}` lists {twice} twice: each value is one point"
            ));
        }
        if key == "pipeline.seed" {
            problems.push("vary seeds with `sweep.seeds`, not `sweep.vary`".to_string());
        }
    }
    if section.jobs == 0 {
        problems.push("`sweep.jobs` must be at least 1".to_string());
    }
    problems.extend(section.slurm.check());
    if section.seeds.is_empty() {
        problems.push("`sweep.seeds` is empty: each point needs at least one seed".to_string());
    }
    let mut seeds = section.seeds.clone();
    seeds.sort_unstable();
    if let Some(w) = seeds.windows(2).find(|w| w[0] == w[1]) {
        problems.push(format!("`sweep.seeds` lists seed {} twice", w[0]));
    }
    problems
}

/// The points of a sweep, base first. Each point's directory stem is its settings with the
/// full key paths (dots → `_`) and characters a file system may reject replaced by `_`; where
/// that makes two stems equal, or a stem too long for a file name, a short hash of the
/// point's overrides is appended, so no two points ever share a directory.
pub fn points(section: &SweepSection) -> Vec<Point> {
    let mut out = vec![Point {
        name: "base".into(),
        dir: "base".into(),
        overrides: Vec::new(),
    }];
    if section.vary.is_empty() {
        // Seeds only: the base point alone.
        return out;
    }
    let combos: Vec<Vec<String>> = match section.mode {
        SweepMode::OneAtATime => section
            .vary
            .iter()
            .flat_map(|(key, values)| values.iter().map(move |v| vec![format!("{key}={v}")]))
            .collect(),
        SweepMode::Grid => {
            let mut combos: Vec<Vec<String>> = vec![Vec::new()];
            for (key, values) in &section.vary {
                combos = combos
                    .into_iter()
                    .flat_map(|combo| {
                        values.iter().map(move |v| {
                            let mut c = combo.clone();
                            c.push(format!("{key}={v}"));
                            c
                        })
                    })
                    .collect();
            }
            combos
        }
    };
    out.extend(combos.into_iter().map(|overrides| Point {
        name: overrides.join(", "),
        dir: dir_stem(&overrides),
        overrides,
    }));
    disambiguate(&mut out);
    out
}

/// Longest directory stem kept as is (file names are limited to 255 bytes).
const MAX_STEM: usize = 120;

/// `stages_model_params_dropout=0.4,…`: every character outside `[A-Za-z0-9-_.=,]` → `_`,
/// the dots of key paths too.
fn dir_stem(overrides: &[String]) -> String {
    let safe = |text: &str, keep_dots: bool| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_=,".contains(c) || (keep_dots && c == '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    overrides
        .iter()
        .map(|o| match o.split_once('=') {
            Some((key, value)) => format!("{}={}", safe(key, false), safe(value, true)),
            None => safe(o, false),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Appends `-<hash of the overrides>` to stems that are too long or shared by several points.
fn disambiguate(points: &mut [Point]) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for p in points.iter() {
        *counts.entry(p.dir.clone()).or_default() += 1;
    }
    for p in points.iter_mut() {
        if counts[&p.dir] > 1 || p.dir.len() > MAX_STEM {
            let hash = blake3::hash(p.overrides.join("\n").as_bytes()).to_hex();
            // Stems are ASCII (see `dir_stem`): any byte is a character boundary.
            p.dir = format!("{}-{}", &p.dir[..p.dir.len().min(MAX_STEM)], &hash[..10]);
        }
    }
}

/// A directory name for a point and seed.
pub fn run_dir_name(point: &Point, seed: u64) -> String {
    format!("{}-seed{seed}", point.dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(mode: SweepMode) -> SweepSection {
        SweepSection {
            executor: ExecutorChoice::Local,
            jobs: 1,
            slurm: SlurmSettings::default(),
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
        assert_eq!(
            names,
            [
                "base",
                "stages.m.params.dropout=0.2",
                "stages.m.params.dropout=0.4",
                "stages.m.params.hidden=64"
            ]
        );
        assert!(p[1..].iter().all(|p| p.overrides.len() == 1));
        assert_eq!(p[3].overrides, ["stages.m.params.hidden=64"]);
        let g = points(&section(SweepMode::Grid));
        assert_eq!(g.len(), 3);
        assert_eq!(
            g[2].overrides,
            ["stages.m.params.dropout=0.4", "stages.m.params.hidden=64"]
        );
        assert_eq!(
            run_dir_name(&g[2], 7),
            "stages_m_params_dropout=0.4,stages_m_params_hidden=64-seed7"
        );
        assert!(check(&section(SweepMode::Grid)).is_empty());
    }

    fn vary(pairs: &[(&str, toml::Value)]) -> SweepSection {
        SweepSection {
            executor: ExecutorChoice::Local,
            jobs: 1,
            slurm: SlurmSettings::default(),
            mode: SweepMode::OneAtATime,
            seeds: vec![1],
            vary: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.clone()]))
                .collect(),
        }
    }

    fn dirs(section: &SweepSection) -> Vec<String> {
        points(section).iter().map(|p| run_dir_name(p, 1)).collect()
    }

    /// No `vary`: the pipeline as it is over each seed, in either mode.
    #[test]
    fn a_sweep_of_seeds_alone_is_the_base_point() {
        for mode in [SweepMode::OneAtATime, SweepMode::Grid] {
            let section = SweepSection {
                mode,
                seeds: vec![1, 2, 3, 4, 5],
                ..vary(&[])
            };
            assert!(check(&section).is_empty(), "{mode:?}");
            assert_eq!(dirs(&section), ["base-seed1"], "{mode:?}");
            assert_eq!(run_count(&section), Some(5), "{mode:?}");
        }
    }

    #[test]
    fn a_grid_too_large_to_run_is_refused_before_it_is_built() {
        let values: Vec<toml::Value> = (0..100).map(toml::Value::Integer).collect();
        let section = SweepSection {
            executor: ExecutorChoice::Local,
            jobs: 1,
            slurm: SlurmSettings::default(),
            mode: SweepMode::Grid,
            seeds: vec![1, 2, 3],
            vary: (0..5)
                .map(|i| (format!("stages.m.params.k{i}"), values.clone()))
                .collect(),
        };
        let problems = check(&section);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("30000000003 runs") && p.contains("at most 10000")),
            "{problems:?}"
        );
    }

    #[test]
    fn points_with_the_same_last_key_and_value_get_their_own_directories() {
        let d = dirs(&vary(&[
            ("stages.a.params.dropout", toml::Value::Float(0.2)),
            ("stages.b.params.dropout", toml::Value::Float(0.2)),
        ]));
        assert_eq!(
            d,
            [
                "base-seed1",
                "stages_a_params_dropout=0.2-seed1",
                "stages_b_params_dropout=0.2-seed1"
            ]
        );
    }

    #[test]
    fn stems_made_equal_by_sanitizing_or_too_long_get_a_hash_suffix() {
        let d = dirs(&vary(&[
            ("stages.a.params.path", toml::Value::String("x/y".into())),
            ("stages.a.params_path", toml::Value::String("x:y".into())),
        ]));
        let unique: std::collections::BTreeSet<&String> = d.iter().collect();
        assert_eq!(unique.len(), 3, "{d:?}");
        assert!(d[1].starts_with("stages_a_params_path=_x_y_-") && d[1].ends_with("-seed1"));
        assert_ne!(d[1], d[2]);
        let long = "n".repeat(300);
        let d = dirs(&vary(&[(
            "stages.a.params.name",
            toml::Value::String(long),
        )]));
        assert!(d[1].len() < 160, "{}", d[1]);
    }

    #[test]
    fn repeated_values_and_seeds_are_refused() {
        let mut s = section(SweepMode::Grid);
        s.vary
            .insert("stages.m.params.x".into(), vec![1.into(), 1.into()]);
        s.seeds = vec![1, 1];
        let problems = check(&s);
        assert!(
            problems.iter().any(|p| p.contains("lists 1 twice"))
                && problems.iter().any(|p| p.contains("seed 1 twice")),
            "{problems:?}"
        );
    }
}
