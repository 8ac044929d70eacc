//! A run directory read back as a record of results: the settings of the last run that
//! completed and the lock entries that run left, or an error saying why the directory is not
//! such a record. `compare`, `report` and `sweep` read runs only through [`RunRecord::load`].
//!
//! The executor saves the resolved config (`pipeline.toml`) when a run starts, and records in
//! the lock the config's hash and, stage by stage, the fingerprints that run completed; when
//! every stage completed it copies that progress to the lock's `completed` record. A run
//! directory is finished when the `completed` record names the exact `pipeline.toml` beside
//! it and every one of its stages still has the entry (fingerprint) that run left. A failed or
//! interrupted re-run with other settings rewrites `pipeline.toml`, so its directory is
//! unfinished — old metrics are never shown under new settings — until a run of those
//! settings completes. Entries of stages that are not in the completed config (renamed or
//! removed stages) are never part of a record.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::manifest::RESOLVED_CONFIG_FILE;
use crate::manifest::{self, Manifest, RunProgress, StageEntry, MANIFEST_FILE};
use crate::EngineError;

/// Largest saved settings file read: twice what a pipeline may expand to
/// ([`crate::template::MAX_EXPANDED_BYTES`]), so a run's own settings always fit.
const MAX_SETTINGS_BYTES: u64 = 2 * crate::template::MAX_EXPANDED_BYTES as u64;

/// Why a directory is not a finished run, or an output of it cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No run was ever started there.
    #[error("{}: not an mmflow run directory ({why})", dir.display())]
    NotARun {
        /// The directory.
        dir: PathBuf,
        /// What is missing.
        why: String,
    },
    /// The saved settings cannot be read.
    #[error("{}: the saved settings of the run cannot be read ({message})", path.display())]
    Settings {
        /// `pipeline.toml`.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The lock file cannot be trusted.
    #[error(transparent)]
    Lock(#[from] EngineError),
    /// The last run started on the directory did not complete.
    #[error("{}: unfinished run: {}; run the pipeline to the end first", dir.display(), describe_unfinished(stages))]
    Unfinished {
        /// The run directory.
        dir: PathBuf,
        /// Stages of the saved settings that have not completed with them.
        stages: Vec<String>,
    },
    /// The lock records no completed run at all (written by an earlier mmflow).
    #[error("{}: the lock file records no completed run (it was written by an earlier mmflow); run the pipeline again: stages that are up to date are not re-computed", dir.display())]
    NoCompletedRun {
        /// The run directory.
        dir: PathBuf,
    },
    /// The lock does not record the table kinds of the outputs (written by an earlier
    /// mmflow, before lock format 3).
    #[error("{}: the lock file (format {format}) does not record the kinds of the run's outputs (it was written by an earlier mmflow); run the pipeline again: stages that are up to date are not re-computed", dir.display())]
    UntypedOutputs {
        /// The run directory.
        dir: PathBuf,
        /// The lock's format.
        format: u32,
    },
    /// An output of the record is not what its stage wrote.
    #[error("{}: output `{output}` of stage `{stage}` {why}; re-run the pipeline", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// Its stage.
        stage: String,
        /// The output's name.
        output: String,
        /// What is wrong with it.
        why: String,
    },
}

fn describe_unfinished(stages: &[String]) -> String {
    if stages.is_empty() {
        "its last run was interrupted before it recorded its completion".into()
    } else {
        format!(
            "stage(s) {} have not completed with the settings in {RESOLVED_CONFIG_FILE} (its last run failed or was interrupted)",
            stages.join(", ")
        )
    }
}

/// A finished run: its settings and the lock entries of exactly the run that completed them.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run directory.
    pub dir: PathBuf,
    /// The resolved config the run completed (`pipeline.toml`).
    pub config: toml::Value,
    /// The lock file, holding only the entries of the completed run's stages.
    pub manifest: Manifest,
}

/// Hash of a resolved config's text, as recorded in [`RunProgress::config`].
pub fn config_hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..32].to_string()
}

impl RunRecord {
    /// Reads `dir` as a finished run, or says why it is not one (naming the stages that have
    /// not completed with the saved settings).
    pub fn load(dir: &Path) -> Result<RunRecord, RecordError> {
        if !dir.is_dir() {
            return Err(RecordError::NotARun {
                dir: dir.to_path_buf(),
                why: if dir.exists() {
                    "not a directory".into()
                } else {
                    "it does not exist".into()
                },
            });
        }
        let config_path = dir.join(RESOLVED_CONFIG_FILE);
        // Never through a link, never a FIFO or device (a hang) in place of the settings.
        let read = manifest::refuse_link(&config_path).and_then(|()| {
            mmflow_schemas::files::read_regular_at_most(&config_path, MAX_SETTINGS_BYTES)
        });
        let text = match read {
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| RecordError::Settings {
                path: config_path.clone(),
                message: "not UTF-8 text".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RecordError::NotARun {
                    dir: dir.to_path_buf(),
                    why: format!("it has no {RESOLVED_CONFIG_FILE}"),
                })
            }
            Err(e) => return Err(EngineError::io(&config_path, e).into()),
        };
        if let Some(at) = crate::nesting::too_deep(&text) {
            return Err(RecordError::Settings {
                path: config_path,
                message: format!(
                    "byte {at}: more than {} arrays and inline tables open at once",
                    crate::nesting::MAX_NESTING
                ),
            });
        }
        let config: toml::Value = toml::from_str(&text).map_err(|e| RecordError::Settings {
            path: config_path.clone(),
            message: e.to_string().trim().to_string(),
        })?;
        let mut manifest = Manifest::load(dir)?;
        let hash = config_hash(&text);
        let completed = match &manifest.completed {
            Some(run) if run.config == hash && entries_match(run, &manifest.stages) => run.clone(),
            None if manifest.started.is_none() && !manifest.stages.is_empty() => {
                return Err(RecordError::NoCompletedRun {
                    dir: dir.to_path_buf(),
                })
            }
            _ => {
                return Err(RecordError::Unfinished {
                    dir: dir.to_path_buf(),
                    stages: not_completed(&config, manifest.started.as_ref(), &hash),
                })
            }
        };
        manifest
            .stages
            .retain(|id, _| completed.stages.contains_key(id));
        let untyped = manifest
            .stages
            .values()
            .flat_map(|e| e.outputs.values())
            .any(|o| o.table.is_none());
        if untyped {
            return Err(RecordError::UntypedOutputs {
                dir: dir.to_path_buf(),
                format: manifest.format,
            });
        }
        Ok(RunRecord {
            dir: dir.to_path_buf(),
            config,
            manifest,
        })
    }

    /// The settings the run completed with, defaults filled in, flattened to dotted keys:
    /// `stages.<id>.params.<key>` (canonical params, nested tables flattened),
    /// `stages.<id>.kind`, `.version`, `.seed`, `.device` (stages that use one) and
    /// `.inputs.<slot>` (the references read).
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (id, entry) in &self.manifest.stages {
            let at = |key: &str| format!("stages.{id}.{key}");
            out.insert(at("kind"), format!("{:?}", entry.kind));
            out.insert(at("version"), entry.version.to_string());
            out.insert(at("seed"), entry.seed.to_string());
            if let Some(device) = &entry.device {
                out.insert(at("device"), format!("{device:?}"));
            }
            for (slot, records) in &entry.inputs {
                let refs: Vec<&str> = records.iter().map(|r| r.reference.as_str()).collect();
                out.insert(at(&format!("inputs.{slot}")), refs.join(", "));
            }
            flatten(&at("params"), &entry.params, &mut out);
        }
        out
    }

    /// The outputs of the completed run that hold tables of kind `table` (a table name such
    /// as `mmflow_schemas::evaluation::METRICS`), as `(stage id, output name)` pairs in stage
    /// order, then output order. Read one with [`RunRecord::output`].
    pub fn outputs_of_kind(&self, table: &str) -> Vec<(&str, &str)> {
        self.manifest
            .stages
            .iter()
            .flat_map(|(id, entry)| {
                entry
                    .outputs
                    .iter()
                    .filter(move |(_, record)| record.table.as_deref() == Some(table))
                    .map(move |(name, _)| (id.as_str(), name.as_str()))
            })
            .collect()
    }

    /// The path of `output` of `stage`, after checking that the file is the one the stage
    /// wrote: recorded, inside the run directory, with the recorded size and content hash.
    pub fn output(&self, stage: &str, output: &str) -> Result<PathBuf, RecordError> {
        let entry: &StageEntry =
            self.manifest
                .stages
                .get(stage)
                .ok_or_else(|| RecordError::Output {
                    path: self.dir.join(MANIFEST_FILE),
                    stage: stage.into(),
                    output: output.into(),
                    why: "is not recorded: the stage is not part of the completed run".into(),
                })?;
        let record = entry
            .outputs
            .get(output)
            .ok_or_else(|| RecordError::Output {
                path: self.dir.join(MANIFEST_FILE),
                stage: stage.into(),
                output: output.into(),
                why: "is not recorded in the lock file".into(),
            })?;
        let path = self.dir.join(&record.path);
        let fault = |why: String| RecordError::Output {
            path: path.clone(),
            stage: stage.into(),
            output: output.into(),
            why,
        };
        let inside = match (fs::canonicalize(&self.dir), fs::canonicalize(&path)) {
            (Ok(dir), Ok(file)) => file.starts_with(dir),
            (_, Err(e)) => return Err(fault(format!("cannot be read ({e})"))),
            (Err(e), _) => return Err(EngineError::io(&self.dir, e).into()),
        };
        if !inside {
            return Err(fault("resolves outside the run directory".into()));
        }
        if !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            return Err(fault("is not a regular file".into()));
        }
        let (size, _) =
            manifest::stat(&path).map_err(|e| fault(format!("cannot be read ({e})")))?;
        if size != record.size {
            return Err(fault(format!(
                "has changed since the stage wrote it ({size} bytes, {} recorded)",
                record.size
            )));
        }
        let hash =
            manifest::hash_file(&path).map_err(|e| fault(format!("cannot be read ({e})")))?;
        if hash != record.hash {
            return Err(fault(
                "has changed since the stage wrote it (its content hash differs from the lock file's)"
                    .into(),
            ));
        }
        Ok(path)
    }
}

/// Whether every stage of `run` still has the entry it left, and every table each of them
/// read is the one its upstream stage's entry records now (an upstream stage that re-ran with
/// new output while a later re-run of its dependent failed leaves the dependent's entry a
/// result of the old table).
fn entries_match(run: &RunProgress, entries: &BTreeMap<String, StageEntry>) -> bool {
    run.stages.iter().all(|(id, fp)| {
        entries
            .get(id)
            .is_some_and(|e| &e.fingerprint == fp && inputs_current(e, entries))
    })
}

/// Whether every input `entry` records has the hash its upstream output has now.
fn inputs_current(entry: &StageEntry, entries: &BTreeMap<String, StageEntry>) -> bool {
    entry.inputs.values().flatten().all(|input| {
        input
            .reference
            .split_once('.')
            .and_then(|(stage, output)| entries.get(stage)?.outputs.get(output))
            .is_some_and(|upstream| upstream.hash == input.hash)
    })
}

/// Stages of the saved settings that the run started with them has not completed (every
/// stage when no run with them is recorded as started).
fn not_completed(config: &toml::Value, started: Option<&RunProgress>, hash: &str) -> Vec<String> {
    let done = started
        .filter(|run| run.config == hash)
        .map(|run| &run.stages);
    config
        .get("stages")
        .and_then(|s| s.as_table())
        .map(|stages| {
            stages
                .keys()
                .filter(|id| !done.is_some_and(|d| d.contains_key(*id)))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Flattens a JSON value into `prefix.key…` = value (objects flattened, the rest shown).
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                flatten(&format!("{prefix}.{key}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), show(other));
        }
    }
}

/// A value as a person would write it: numbers held as `f32` shown as the `f32` they are
/// (`0.4`, not `0.4000000059604645`).
fn show(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let narrow = x as f32;
            if f64::from(narrow) == x {
                format!("{narrow:?}")
            } else {
                format!("{x:?}")
            }
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(show).collect::<Vec<_>>().join(", ")
            )
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_written_and_tables_flatten() {
        let params = serde_json::json!({
            "dropout": 0.4f32,
            "weight_decay": 1e-4,
            "epochs": 3,
            "loss": "mse",
            "hidden": [64.0f32, 32.0f32],
            "heads": { "sentiment": { "mse": 1.0 } },
            "empty": {},
            "pin": null,
        });
        let mut out = BTreeMap::new();
        flatten("p", &params, &mut out);
        let shown: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            shown,
            [
                "p.dropout=0.4",
                "p.empty={}",
                "p.epochs=3",
                "p.heads.sentiment.mse=1.0",
                "p.hidden=[64.0, 32.0]",
                "p.loss=\"mse\"",
                "p.pin=null",
                "p.weight_decay=0.0001",
            ]
        );
    }

    /// An entry of stage kind `k` with output `o` of content `hash`, reading `inputs`
    /// (reference, hash).
    fn entry(fingerprint: &str, hash: &str, inputs: &[(&str, &str)]) -> StageEntry {
        let inputs: Vec<serde_json::Value> = inputs
            .iter()
            .map(|(r, h)| serde_json::json!({ "reference": r, "hash": h }))
            .collect();
        serde_json::from_value(serde_json::json!({
            "kind": "k", "version": 1, "fingerprint": fingerprint, "params": {}, "seed": 1,
            "inputs": { "in": inputs }, "duration_s": 0.0, "finished_unix": 0,
            "mmflow_version": "0",
            "outputs": { "o": { "path": "x/o", "size": 1, "mtime_ns": 0, "hash": hash } },
        }))
        .unwrap()
    }

    #[test]
    fn a_stage_whose_upstream_output_changed_since_it_read_it_is_not_a_result() {
        let run = RunProgress {
            config: "c".into(),
            stages: [
                ("a".to_string(), "fa".to_string()),
                ("b".into(), "fb".into()),
            ]
            .into(),
        };
        let mut entries = BTreeMap::new();
        entries.insert("a".to_string(), entry("fa", "h1", &[]));
        entries.insert("b".to_string(), entry("fb", "h9", &[("a.o", "h1")]));
        assert!(entries_match(&run, &entries));
        // `a` re-ran (same fingerprint, new bytes); `b`'s re-run failed: its entry is old.
        entries.insert("a".to_string(), entry("fa", "h2", &[]));
        assert!(!entries_match(&run, &entries));
    }

    /// [`entry`] with its output `o` (recorded in `x/`) of table kind `table`.
    fn typed_entry(table: &str) -> StageEntry {
        let mut e = entry("f", "h", &[]);
        if let Some(o) = e.outputs.get_mut("o") {
            o.table = Some(table.into());
        }
        e
    }

    #[test]
    fn outputs_are_found_by_their_table_kind() {
        let mut manifest = Manifest::default();
        manifest.stages.insert("b".into(), typed_entry("metrics"));
        manifest.stages.insert("a".into(), typed_entry("metrics"));
        manifest.stages.insert("c".into(), typed_entry("history"));
        let record = RunRecord {
            dir: PathBuf::from("run"),
            config: toml::Value::Table(Default::default()),
            manifest,
        };
        assert_eq!(record.outputs_of_kind("metrics"), [("a", "o"), ("b", "o")]);
        assert_eq!(record.outputs_of_kind("history"), [("c", "o")]);
        assert!(record.outputs_of_kind("predictions").is_empty());
    }

    #[test]
    fn a_run_whose_lock_records_no_output_kinds_is_refused_with_the_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let config = "[stages.x]\nkind = \"k\"\n";
        fs::write(dir.path().join(RESOLVED_CONFIG_FILE), config).unwrap();
        let write_lock = |e: StageEntry, format: u32| {
            let mut manifest = Manifest {
                format,
                ..Manifest::default()
            };
            manifest.stages.insert("x".into(), e);
            manifest.completed = Some(RunProgress {
                config: config_hash(config),
                stages: [("x".to_string(), "f".to_string())].into(),
            });
            manifest.save(dir.path()).unwrap();
        };
        write_lock(entry("f", "h", &[]), 2);
        let err = RunRecord::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, RecordError::UntypedOutputs { format: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("run the pipeline again"), "{err}");
        write_lock(typed_entry("metrics"), manifest::LOCK_FORMAT);
        let record = RunRecord::load(dir.path()).unwrap();
        assert_eq!(record.outputs_of_kind("metrics"), [("x", "o")]);
    }

    #[test]
    fn stages_not_completed_are_those_the_started_run_did_not_finish() {
        let config: toml::Value =
            toml::from_str("[stages.a]\nkind = \"x\"\n[stages.b]\nkind = \"x\"\n").unwrap();
        let started = RunProgress {
            config: "h".into(),
            stages: [("a".to_string(), "fp".to_string())].into(),
        };
        assert_eq!(not_completed(&config, Some(&started), "h"), ["b"]);
        assert_eq!(not_completed(&config, Some(&started), "other"), ["a", "b"]);
        assert_eq!(not_completed(&config, None, "h"), ["a", "b"]);
    }
}
