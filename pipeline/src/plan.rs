//! Fingerprints, and the decision to run or skip a stage.
//!
//! fingerprint = blake3(kind, kind version, canonical params, seed, device as resolved on
//! this machine (`cpu`, `cuda:0`; for stages that use one), content hash of every input table, content hash of every external source file).
//! A stage is skipped when its fingerprint equals the lock file's and every output recorded
//! there is on disk unchanged; otherwise it runs, and the reason is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Pipeline, PlannedStage};
use crate::manifest::{
    self, FileRecord, Hashing, InputRecord, ListedFile, Manifest, OutputRecord, StageEntry,
};
use crate::run_cache::{CachedEntry, RunCache};
use crate::stage::ResolvedDevice;
use crate::EngineError;

/// A stage's fingerprint and what went into it.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    /// The hash (hex).
    pub hash: String,
    /// Inputs and their content hashes.
    pub inputs: BTreeMap<String, Vec<InputRecord>>,
    /// External source files and their hashes.
    pub external_files: Vec<FileRecord>,
    /// The resolved device (`cpu`, `cuda:0`), if the stage uses one.
    pub device: Option<String>,
}

/// Computes a stage's fingerprint; upstream outputs' hashes come from `manifest`, which
/// must already hold the upstream stages' current entries. `device` is the pipeline's
/// device as resolved on this machine; it counts only for a stage that uses one, so a model
/// trained on the CPU is never taken for one trained on a GPU, and the reverse. `None` if an
/// upstream output is not recorded yet. Source files' hashes known to `cache` are not read
/// again.
pub fn fingerprint(
    stage: &PlannedStage,
    device: ResolvedDevice,
    manifest: &Manifest,
    cache: Option<&RunCache>,
) -> Result<Option<Fingerprint>, EngineError> {
    prepare(stage, device, manifest, cache)?
        .map(|p| p.hash_sources(Hashing::EveryCore))
        .transpose()
}

/// Everything of a stage's fingerprint but the hashes of the source files neither its lock
/// entry nor the run-cache knows (at their size and modification time): those take reading
/// the files, which [`Prepared::hash_sources`] does.
#[derive(Debug, Clone)]
pub struct Prepared {
    kind: &'static str,
    version: u32,
    params: serde_json::Value,
    seed: u64,
    device: Option<String>,
    inputs: BTreeMap<String, Vec<InputRecord>>,
    sources: Vec<ListedFile>,
}

impl Prepared {
    /// Whether finishing the fingerprint reads a source file.
    pub fn has_unhashed_sources(&self) -> bool {
        self.sources.iter().any(|f| f.known_hash.is_none())
    }

    /// The fingerprint, reading and hashing (on the threads `hashing` says) the source files
    /// whose hash is not known.
    pub fn hash_sources(self, hashing: Hashing) -> Result<Fingerprint, EngineError> {
        let external_files = self
            .sources
            .into_iter()
            .map(|f| f.hashed(hashing))
            .collect::<Result<Vec<_>, _>>()?;
        let canonical = serde_json::json!({
            "kind": self.kind,
            "version": self.version,
            "params": self.params,
            "seed": self.seed,
            "device": self.device,
            "inputs": self.inputs,
            "external_files": external_files.iter().map(|f| (f.path.to_string_lossy(), &f.hash)).collect::<Vec<_>>(),
        });
        let hash = blake3::hash(canonical.to_string().as_bytes()).to_hex()[..32].to_string();
        Ok(Fingerprint {
            hash,
            inputs: self.inputs,
            external_files,
            device: self.device,
        })
    }
}

/// What [`fingerprint`] computes before it reads source files (see [`Prepared`]).
pub fn prepare(
    stage: &PlannedStage,
    device: ResolvedDevice,
    manifest: &Manifest,
    cache: Option<&RunCache>,
) -> Result<Option<Prepared>, EngineError> {
    let mut inputs = BTreeMap::new();
    for (slot, refs) in &stage.inputs {
        let mut records = Vec::new();
        for r in refs {
            let Some(out) = manifest
                .stages
                .get(&r.stage)
                .and_then(|e| e.outputs.get(&r.output))
            else {
                return Ok(None);
            };
            records.push(InputRecord {
                reference: r.to_string(),
                hash: out.hash.clone(),
            });
        }
        inputs.insert(slot.clone(), records);
    }
    let previous: &[FileRecord] = manifest
        .stages
        .get(&stage.id)
        .map(|e| e.external_files.as_slice())
        .unwrap_or(&[]);
    // A source file's hash is read again only when neither this run directory's lock nor the
    // run-cache (any run sharing it) knows the file at its size and modification time.
    let known = |file: &Path, size: u64, mtime_ns: u128| {
        previous
            .iter()
            .find(|r| r.path == file && r.size == size && r.mtime_ns == mtime_ns)
            .map(|r| r.hash.clone())
            .or_else(|| cache?.known_hash(file, size, mtime_ns))
    };
    let mut sources = Vec::new();
    for path in &stage.external_files {
        sources.extend(manifest::list_files(path, known)?);
    }
    Ok(Some(Prepared {
        kind: stage.stage.kind(),
        version: stage.stage.version(),
        params: stage.params.canonical.clone(),
        seed: stage.seed,
        device: stage.uses_device.then(|| device.to_string()),
        inputs,
        sources,
    }))
}

/// The pipeline's device, resolved when the first stage that uses one asks (opening a GPU
/// takes a moment, and every stage of a run must see the same answer).
pub(crate) struct DeviceSlot<'a> {
    pipeline: &'a Pipeline,
    resolved: Option<Result<ResolvedDevice, String>>,
}

impl<'a> DeviceSlot<'a> {
    pub(crate) fn new(pipeline: &'a Pipeline) -> Self {
        DeviceSlot {
            pipeline,
            resolved: None,
        }
    }

    /// The device `stage` computes on: the resolved device if it uses one, else the CPU.
    /// The error says why the requested device cannot be used.
    pub(crate) fn for_stage(&mut self, stage: &PlannedStage) -> Result<ResolvedDevice, String> {
        if !stage.uses_device {
            return Ok(ResolvedDevice::Cpu);
        }
        let pipeline = self.pipeline;
        self.resolved
            .get_or_insert_with(|| (pipeline.device_resolver)(pipeline.device))
            .clone()
    }
}

/// What to do with a stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Up to date. `refreshed` holds output records whose mtime changed but content did not.
    Skip {
        /// Updated records, if any.
        refreshed: Option<BTreeMap<String, OutputRecord>>,
    },
    /// Must run, because…
    Run(String),
}

/// Decides whether a stage with fingerprint `fp` must run.
pub fn decide(
    stage: &PlannedStage,
    fp: &Fingerprint,
    previous: Option<&StageEntry>,
    run_dir: &Path,
    forced: bool,
) -> Decision {
    if forced {
        return Decision::Run("forced (--force)".into());
    }
    let Some(prev) = previous else {
        return Decision::Run("never ran".into());
    };
    if prev.fingerprint != fp.hash {
        return Decision::Run(why_changed(stage, fp, prev));
    }
    let declared: BTreeSet<&str> = stage.outputs.iter().map(|o| o.name.as_str()).collect();
    if let Some(missing) = declared.iter().find(|n| !prev.outputs.contains_key(**n)) {
        return Decision::Run(format!("output `{missing}` was never written"));
    }
    let mut refreshed = None;
    for (name, record) in &prev.outputs {
        let path = run_dir.join(&record.path);
        match manifest::stat(&path) {
            Err(_) => return Decision::Run(format!("output `{name}` is missing")),
            Ok((size, mtime)) if size == record.size && mtime == record.mtime_ns => {}
            Ok((size, mtime)) => match manifest::hash_file(&path) {
                Ok(h) if h == record.hash && size == record.size => {
                    let map = refreshed.get_or_insert_with(|| prev.outputs.clone());
                    if let Some(r) = map.get_mut(name) {
                        r.mtime_ns = mtime;
                    }
                }
                _ => return Decision::Run(format!("output `{name}` was modified on disk")),
            },
        }
    }
    Decision::Skip { refreshed }
}

fn why_changed(stage: &PlannedStage, fp: &Fingerprint, prev: &StageEntry) -> String {
    if prev.kind != stage.stage.kind() || prev.version != stage.stage.version() {
        return format!(
            "stage kind changed ({} v{} → {} v{})",
            prev.kind,
            prev.version,
            stage.stage.kind(),
            stage.stage.version()
        );
    }
    if prev.params != stage.params.canonical {
        return format!(
            "params changed: {}",
            diff_params(&prev.params, &stage.params.canonical)
        );
    }
    if prev.seed != stage.seed {
        return "seed changed".into();
    }
    if prev.device != fp.device {
        return "device changed".into();
    }
    for (slot, records) in &fp.inputs {
        if prev.inputs.get(slot) != Some(records) {
            let changed: Vec<&str> = records
                .iter()
                .filter(|r| !prev.inputs.get(slot).is_some_and(|p| p.contains(r)))
                .map(|r| r.reference.as_str())
                .collect();
            return if changed.is_empty() {
                format!("inputs of `{slot}` changed")
            } else {
                format!("input {} changed", changed.join(", "))
            };
        }
    }
    if prev.inputs.len() != fp.inputs.len() {
        return "inputs changed".into();
    }
    if prev.external_files != fp.external_files {
        let changed = fp
            .external_files
            .iter()
            .find(|f| {
                !prev
                    .external_files
                    .iter()
                    .any(|p| p.path == f.path && p.hash == f.hash)
            })
            .map(|f| format!("source file {} changed", f.path.display()));
        return changed.unwrap_or_else(|| "source files changed".into());
    }
    "fingerprint changed".into()
}

/// A short description of which params differ, e.g. `clip: 5.0 → 3.0`.
fn diff_params(old: &serde_json::Value, new: &serde_json::Value) -> String {
    let mut out = Vec::new();
    diff_into("", old, new, &mut out);
    if out.is_empty() {
        "(representation)".into()
    } else {
        out.join(", ")
    }
}

fn diff_into(
    prefix: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value::Object;
    match (old, new) {
        (Object(a), Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let null = serde_json::Value::Null;
                diff_into(
                    &key,
                    a.get(k).unwrap_or(&null),
                    b.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(format!("{prefix}: {a} → {b}")),
        _ => {}
    }
}

/// The status of a stage in a plan (no stage is run to compute it).
#[derive(Debug, Clone, PartialEq)]
pub enum PlanStatus {
    /// Will be skipped.
    UpToDate,
    /// Will run, because…
    WillRun(String),
    /// Must be brought up to date, because…, and the run-cache holds its outputs: will be
    /// restored (unless the entry's files turn out not to match their record).
    Restore(String),
    /// Will run if these upstream stages (which will run) change their outputs.
    AfterUpstream(Vec<String>),
    /// Will fail before it starts, because… (its device cannot be used).
    CannotRun(String),
}

/// Every stage's status, in topological order, without running anything.
pub fn plan(
    pipeline: &Pipeline,
    manifest: &Manifest,
    forced: &BTreeSet<String>,
) -> Result<Vec<(String, PlanStatus)>, EngineError> {
    let mut statuses: Vec<(String, PlanStatus)> = Vec::new();
    let mut device = DeviceSlot::new(pipeline);
    let cache = pipeline
        .run_cache
        .folder(&pipeline.run_dir)
        .map(RunCache::at);
    // The lock as it will be once restored stages are in place: their outputs' hashes are
    // known from the run-cache, so the stages after them are planned exactly too.
    let mut known = manifest.clone();
    for stage in &pipeline.stages {
        let running_upstream: Vec<String> = stage
            .upstream
            .iter()
            .filter(|u| {
                statuses.iter().any(|(id, s)| {
                    id == *u && !matches!(s, PlanStatus::UpToDate | PlanStatus::Restore(_))
                })
            })
            .cloned()
            .collect();
        let status = if forced.contains(&stage.id) {
            PlanStatus::WillRun("forced (--force)".into())
        } else if !running_upstream.is_empty() {
            PlanStatus::AfterUpstream(running_upstream)
        } else {
            match device.for_stage(stage) {
                Err(why) => PlanStatus::CannotRun(why),
                Ok(resolved) => match fingerprint(stage, resolved, &known, cache.as_ref())? {
                    None => PlanStatus::WillRun("never ran".into()),
                    Some(fp) => match decide(
                        stage,
                        &fp,
                        manifest.stages.get(&stage.id),
                        &pipeline.run_dir,
                        false,
                    ) {
                        Decision::Skip { .. } => PlanStatus::UpToDate,
                        Decision::Run(why) => {
                            let key = RunCache::key(&fp.hash, &stage.id);
                            match cache.as_ref().and_then(|c| c.peek(&key, &stage.outputs)) {
                                Some(cached) => {
                                    let entry = restorable_entry(stage, fp, cached);
                                    known.stages.insert(stage.id.clone(), entry);
                                    PlanStatus::Restore(why)
                                }
                                None => PlanStatus::WillRun(why),
                            }
                        }
                    },
                },
            }
        };
        statuses.push((stage.id.clone(), status));
    }
    Ok(statuses)
}

/// The lock entry a stage restored from the run-cache will have, as far as planning the
/// stages after it needs (their inputs' hashes).
fn restorable_entry(stage: &PlannedStage, fp: Fingerprint, cached: CachedEntry) -> StageEntry {
    let outputs = cached
        .outputs
        .into_iter()
        .map(|(name, output)| {
            let record = OutputRecord {
                path: Path::new(&stage.id).join(&output.file),
                size: output.size,
                mtime_ns: 0,
                hash: output.hash,
                rows: output.rows,
                table: output.table,
            };
            (name, record)
        })
        .collect();
    stage_entry(stage, fp, outputs, cached.report, cached.duration_s)
}

/// A stage's lock entry: what it is, the fingerprint it was computed under, its outputs.
pub(crate) fn stage_entry(
    stage: &PlannedStage,
    fp: Fingerprint,
    outputs: BTreeMap<String, OutputRecord>,
    report: BTreeMap<String, serde_json::Value>,
    duration_s: f64,
) -> StageEntry {
    StageEntry {
        kind: stage.stage.kind().to_string(),
        version: stage.stage.version(),
        fingerprint: fp.hash,
        params: stage.params.canonical.clone(),
        seed: stage.seed,
        device: fp.device,
        inputs: fp.inputs,
        external_files: fp.external_files,
        outputs,
        report,
        duration_s,
        finished_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        mmflow_version: mmflow_schemas::MMFLOW_VERSION.to_string(),
    }
}
