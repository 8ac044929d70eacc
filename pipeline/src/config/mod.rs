//! The pipeline file: one TOML document with a `[pipeline]` table, one `[stages.<id>]`
//! table per stage and `[templates.<name>]` of stages written once for several items (see
//! [`crate::template`]). Loading it collects *every* problem (syntax, unknown keys, unknown
//! kinds, bad params, dangling inputs, cycles, kind mismatches) with its file:line:column
//! before anything runs; `--set key=value` overrides are applied first and validated the same
//! way, then templates are expanded, then overrides of expanded stages are applied.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::collect::deserialize_collecting;
use crate::names::suggest;
use crate::nesting::{self, MAX_NESTING};
use crate::problem::{Found, KeyPath, Location, Problem, Problems, SourceMap};
use crate::run_cache::RunCacheSetting;
use crate::stage::{
    BoundInputs, DeviceChoice, DeviceResolver, DynStage, OutputPort, ParsedParams, Registry,
};
use crate::template::{self, Locator, MatrixOrders, INSTANCE_MARK};

mod checks;

/// The file as written (before stage params are interpreted).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Settings of the whole pipeline.
    #[serde(default)]
    pub pipeline: PipelineSection,
    /// The stages, keyed by id (letters, digits, `_` and `-`; a template's stages are
    /// `<name>@<item>`).
    #[serde(default)]
    pub stages: BTreeMap<String, StageDecl>,
    /// `[templates.<name>]`: stages written once for several items. Loading expands them
    /// into `stages` (see [`crate::template`]), so a loaded file never holds any.
    #[serde(default)]
    pub templates: Option<toml::Table>,
    /// Variations of this pipeline run by `mmflow sweep` (ignored by `mmflow run`).
    #[serde(default)]
    pub sweep: Option<crate::sweep::SweepSection>,
}

/// The `[pipeline]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Name of the pipeline; names the default run directory. Default: the file's stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Pipeline seed; each stage derives its own seed from it and its id (unless pinned).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Compute device for stages that use one: `cpu` (default), `cuda` or `auto`.
    #[serde(default)]
    pub device: DeviceChoice,
    /// Most stages run at once; 0 = one per CPU core.
    #[serde(default)]
    pub jobs: usize,
    /// Run directory. Default: `data/runs/<name>` under the current directory.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// The run-cache shared by run directories: `true` (default: `.mmflow-cache` beside the
    /// run directory), `false` (off), or its folder.
    #[serde(default)]
    pub run_cache: RunCacheSetting,
}

fn default_seed() -> u64 {
    42
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            name: None,
            description: None,
            seed: default_seed(),
            device: DeviceChoice::Cpu,
            jobs: 0,
            run_dir: None,
            run_cache: RunCacheSetting::default(),
        }
    }
}

/// One `[stages.<id>]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageDecl {
    /// The stage kind (`mmflow kinds` lists them).
    pub kind: String,
    /// Input slots: `slot = "<stage>.<output>"` or a list of such references.
    #[serde(default)]
    pub inputs: BTreeMap<String, toml::Value>,
    /// The kind's parameters (see its documentation); omitted ones take their defaults.
    #[serde(default)]
    pub params: toml::Table,
    /// Pins this stage's seed instead of deriving it from the pipeline seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
}

/// A validated pipeline, stages in topological order.
pub struct Pipeline {
    /// Pipeline name.
    pub name: String,
    /// The config file it was loaded from.
    pub file: PathBuf,
    /// Pipeline seed.
    pub seed: u64,
    /// Requested device.
    pub device: DeviceChoice,
    /// How the requested device is opened (the registry's).
    pub device_resolver: DeviceResolver,
    /// Most stages run at once (resolved: never 0).
    pub jobs: usize,
    /// Run directory.
    pub run_dir: PathBuf,
    /// Where stages' outputs are kept for every run directory (see [`crate::run_cache`]).
    pub run_cache: RunCacheSetting,
    /// Stages in a topological order (ties broken by id).
    pub stages: Vec<PlannedStage>,
    /// The document after `--set` overrides and the expansion of templates (which it no
    /// longer holds), as it will be saved beside the outputs.
    pub resolved: toml::Table,
    /// The `[sweep]` section, if any.
    pub sweep: Option<crate::sweep::SweepSection>,
}

/// A stage after validation.
#[derive(Clone)]
pub struct PlannedStage {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub stage: Arc<dyn DynStage>,
    /// Its parsed params.
    pub params: ParsedParams,
    /// Its seed (0 for kinds that draw nothing at random, see [`StageKind::uses_seed`]).
    ///
    /// [`StageKind::uses_seed`]: crate::StageKind::uses_seed
    pub seed: u64,
    /// The references bound to each input slot.
    pub inputs: BoundInputs,
    /// Its outputs.
    pub outputs: Vec<OutputPort>,
    /// Source files it reads from outside the run directory.
    pub external_files: Vec<PathBuf>,
    /// Whether the device is part of its fingerprint.
    pub uses_device: bool,
    /// Stages it reads from.
    pub upstream: BTreeSet<String>,
}

impl Pipeline {
    /// A stage by id.
    pub fn stage(&self, id: &str) -> Option<&PlannedStage> {
        self.stages.iter().find(|s| s.id == id)
    }
}

/// The largest pipeline file read (1 MiB: hand-written files are a few KiB).
pub const MAX_PIPELINE_FILE: u64 = 1 << 20;

/// Loads and validates a pipeline file with `--set` overrides (`a.b.c=value`).
pub fn load(path: &Path, overrides: &[String], registry: &Registry) -> Result<Pipeline, Problems> {
    // Regular files only: a FIFO would hang the read, `/dev/zero` would never end. A
    // pipeline file is written by hand: one over MAX_PIPELINE_FILE is not one.
    let text = mmflow_schemas::files::regular_file_size(path)
        .and_then(|size| {
            if size > MAX_PIPELINE_FILE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{size} bytes; a pipeline file is at most {MAX_PIPELINE_FILE} bytes (is this the right file?)"),
                ));
            }
            mmflow_schemas::files::read_regular(path)
        })
        .and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
        })
        .map_err(|e| {
            Problems::one(Problem {
                location: crate::problem::Location::WholeFile(path.to_path_buf()),
                key: KeyPath::default(),
                message: format!("cannot read the pipeline file: {e}"),
            })
        })?;
    if let Some(at) = nesting::too_deep(&text) {
        let map = SourceMap::new(path, text, None);
        return Err(Problems::one(map.problem_at_span(
            at..at,
            format!("invalid TOML: more than {MAX_NESTING} arrays and inline tables open at once"),
        )));
    }
    let doc = match toml_edit::Document::parse(text.clone()) {
        Ok(doc) => doc,
        Err(e) => {
            let map = SourceMap::new(path, text, None);
            let span = e.span().unwrap_or(0..0);
            let message = e.message().to_string();
            return Err(Problems::one(
                map.problem_at_span(span, format!("invalid TOML: {message}")),
            ));
        }
    };
    let mut table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            let map = SourceMap::new(path, text, None);
            let span = e.span().unwrap_or(0..0);
            return Err(Problems::one(
                map.problem_at_span(span, format!("invalid TOML: {}", e.message())),
            ));
        }
    };
    let mut orders = MatrixOrders::of_document(&doc);
    let mut map = SourceMap::new(path, text, Some(doc));
    let mut found = Found::default();
    let mut of_instances = Vec::new();
    for arg in overrides {
        match parse_override(arg) {
            Ok(o) if o.instance().is_some() => of_instances.push(o),
            Ok(o) => match set_override(&mut table, &o) {
                Ok(()) => {
                    orders.note_override(&o.keys, &o.raw);
                    map.add_override(KeyPath::keys(o.keys.iter().cloned()), o.arg);
                }
                Err(message) => found.add(|| override_problem(arg, message)),
            },
            Err(message) => found.add(|| override_problem(arg, message)),
        }
    }
    let before = found.reports();
    let expansion = template::expand(&mut table, &orders, &map, &mut found);
    let expanded = found.reports() == before;
    let mut map = Locator::new(map, expansion);
    // Instances exist only when the templates expanded (their problems are reported).
    for o in of_instances.into_iter().filter(|_| expanded) {
        if !has_instance(&table, &o) {
            found.add(|| override_problem(&o.arg, no_instance(&table, &o)));
            continue;
        }
        match set_override(&mut table, &o) {
            Ok(()) => map.add_instance_override(KeyPath::keys(o.keys.iter().cloned()), o.arg),
            Err(message) => found.add(|| override_problem(&o.arg, message)),
        }
    }
    let resolved = table.clone();
    let pipeline = read_file(table, &map, &mut found)
        .and_then(|file| checks::validate(path, file, resolved, registry, &map, &mut found));
    match pipeline {
        Some(p) if found.is_empty() => Ok(p),
        _ => Err(found.into_problems()),
    }
}

/// Deserialises the document, each stage on its own (a stage's problems are retried
/// within the stage, not the whole document), collecting every problem.
fn read_file(mut table: toml::Table, map: &Locator, found: &mut Found) -> Option<PipelineFile> {
    let mut report = |key: KeyPath, message: String, unknown_key: bool| {
        found.add(|| {
            if unknown_key {
                map.problem(key, message)
            } else {
                map.value_problem(key, message)
            }
        });
        found.keep_checking()
    };
    let stages = match table.remove("stages") {
        Some(toml::Value::Table(stages)) => stages,
        Some(other) => {
            // Not a table: deserialising it with the rest says so.
            table.insert("stages".into(), other);
            toml::Table::new()
        }
        None => toml::Table::new(),
    };
    let mut file: PipelineFile =
        deserialize_collecting(toml::Value::Table(table), &KeyPath::default(), &mut report)?;
    for (id, decl) in stages {
        let at = KeyPath::keys(["stages", id.as_str()]);
        if let Some(decl) = deserialize_collecting(decl, &at, &mut report) {
            file.stages.insert(id, decl);
        }
    }
    Some(file)
}

/// One `--set a.b.c=value`.
struct Override {
    /// The argument as given.
    arg: String,
    /// The key path, split at its dots.
    keys: Vec<String>,
    /// The value as written.
    raw: String,
    /// The value: a TOML value when it parses as one, else the text.
    value: toml::Value,
}

impl Override {
    /// The stage it changes when that is a template's instance (`stages.<name>@<item>…`):
    /// such overrides apply after templates are expanded.
    fn instance(&self) -> Option<&str> {
        match self.keys.as_slice() {
            [top, id, ..] if top == "stages" && id.contains(INSTANCE_MARK) => Some(id.as_str()),
            _ => None,
        }
    }
}

/// A problem with a `--set` argument as a whole.
fn override_problem(arg: &str, message: String) -> Problem {
    Problem {
        location: Location::Override(arg.to_string()),
        key: KeyPath::default(),
        message,
    }
}

/// Reads one `a.b.c=value` override. The value is read as a TOML value when it parses as
/// one (`3`, `0.5`, `true`, `"x"`, `[1, 2]`, `{ a = 1 }`), else taken as a plain string.
fn parse_override(arg: &str) -> Result<Override, String> {
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| "expected `path.to.key=value`".to_string())?;
    let keys = crate::problem::dotted_keys(key.trim())?;
    let value = match nesting::too_deep(raw) {
        Some(_) => None,
        None => toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v")),
    }
    .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    Ok(Override {
        arg: arg.to_string(),
        keys,
        raw: raw.to_string(),
        value,
    })
}

/// Applies an override to the document, creating the tables on its path.
fn set_override(table: &mut toml::Table, o: &Override) -> Result<(), String> {
    let Some((last, parents)) = o.keys.split_last() else {
        return Err(format!("`{}` is not a dotted key path", o.arg));
    };
    let mut cursor = table;
    let mut walked = Vec::new();
    for k in parents {
        walked.push(k.as_str());
        let entry = cursor
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = entry.as_table_mut().ok_or_else(|| {
            format!(
                "cannot set `{}`: `{}` is not a table",
                o.keys.join("."),
                walked.join(".")
            )
        })?;
    }
    cursor.insert(last.clone(), o.value.clone());
    Ok(())
}

/// Whether the expanded stage an override changes exists (applied after expansion, an
/// override changes a stage but does not add one).
fn has_instance(table: &toml::Table, o: &Override) -> bool {
    let id = o.instance().unwrap_or_default();
    table
        .get("stages")
        .and_then(toml::Value::as_table)
        .is_some_and(|s| s.contains_key(id))
}

/// Why an override of an expanded stage that does not exist is refused.
fn no_instance(table: &toml::Table, o: &Override) -> String {
    let id = o.instance().unwrap_or_default();
    let stages = table.get("stages").and_then(toml::Value::as_table);
    let ids = stages
        .into_iter()
        .flat_map(|s| s.keys().map(String::as_str));
    let unquoted = id.trim_matches(|c| c == '"' || c == '\'');
    let hint = if unquoted != id {
        format!(" (`--set` keys are written without quotes: `stages.{unquoted}…`)")
    } else {
        suggest(id, ids)
    };
    format!("no stage `{id}`{hint}: `--set` changes an expanded stage, it does not add one")
}

/// A stage's seed derived from the pipeline seed and its id.
pub fn derive_seed(pipeline_seed: u64, stage_id: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"mmflow stage seed\0");
    h.update(&pipeline_seed.to_le_bytes());
    h.update(stage_id.as_bytes());
    let bytes = h.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"))
}
