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
use crate::names::{suggest, valid_id};
use crate::problem::{KeyPath, Location, Problem, Problems, SourceMap};
use crate::run_cache::RunCacheSetting;
use crate::stage::{
    Arity, BoundInputs, DeviceChoice, DeviceResolver, DynStage, InputRef, OutputPort, ParsedParams,
    Registry,
};
use crate::template::{self, Locator, MatrixOrders, INSTANCE_MARK};

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
    let text = crate::files::regular_file_size(path)
        .and_then(|size| {
            if size > MAX_PIPELINE_FILE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{size} bytes; a pipeline file is at most {MAX_PIPELINE_FILE} bytes (is this the right file?)"),
                ));
            }
            crate::files::read_regular(path)
        })
        .and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
        })
        .map_err(|e| {
            Problems(vec![Problem {
                location: crate::problem::Location::WholeFile(path.to_path_buf()),
                key: KeyPath::default(),
                message: format!("cannot read the pipeline file: {e}"),
            }])
        })?;
    let doc = match toml_edit::Document::parse(text.clone()) {
        Ok(doc) => doc,
        Err(e) => {
            let map = SourceMap::new(path, text, None);
            let span = e.span().unwrap_or(0..0);
            let message = e.message().to_string();
            return Err(Problems(vec![
                map.problem_at_span(span, format!("invalid TOML: {message}"))
            ]));
        }
    };
    let mut table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            let map = SourceMap::new(path, text, None);
            let span = e.span().unwrap_or(0..0);
            return Err(Problems(vec![
                map.problem_at_span(span, format!("invalid TOML: {}", e.message()))
            ]));
        }
    };
    let mut orders = MatrixOrders::of_document(&doc);
    let mut map = SourceMap::new(path, text, Some(doc));
    let mut problems = Vec::new();
    let mut of_instances = Vec::new();
    for arg in overrides {
        match parse_override(arg) {
            Ok(o) if o.instance().is_some() => of_instances.push(o),
            Ok(o) => match set_override(&mut table, &o) {
                Ok(()) => {
                    orders.note_override(&o.keys, &o.raw);
                    map.add_override(KeyPath::keys(o.keys.iter().cloned()), o.arg);
                }
                Err(message) => problems.push(override_problem(arg, message)),
            },
            Err(message) => problems.push(override_problem(arg, message)),
        }
    }
    let before = problems.len();
    let expansion = template::expand(&mut table, &orders, &map, &mut problems);
    let expanded = problems.len() == before;
    let mut map = Locator::new(map, expansion);
    // Instances exist only when the templates expanded (their problems are reported).
    for o in of_instances.into_iter().filter(|_| expanded) {
        match set_instance_override(&mut table, &o) {
            Ok(()) => map.add_instance_override(KeyPath::keys(o.keys.iter().cloned()), o.arg),
            Err(message) => problems.push(override_problem(&o.arg, message)),
        }
    }
    let resolved = table.clone();
    let file: Option<PipelineFile> = deserialize_collecting(
        toml::Value::Table(table),
        &KeyPath::default(),
        &mut |key, message, unknown_key| {
            problems.push(if unknown_key {
                map.problem(key, message)
            } else {
                map.value_problem(key, message)
            })
        },
    );
    let pipeline =
        file.and_then(|file| validate(path, file, resolved, registry, &map, &mut problems));
    match pipeline {
        Some(p) if problems.is_empty() => Ok(p),
        _ => {
            problems.sort();
            problems.dedup();
            Err(Problems(problems))
        }
    }
}

/// Most keys a `--set` key path may hold (the deepest key a pipeline has holds under 10); the
/// tables it creates are walked recursively later, so their depth must stay small.
const MAX_OVERRIDE_DEPTH: usize = 32;
/// Longest `--set` key path, in bytes.
const MAX_OVERRIDE_KEY_LEN: usize = 1024;

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
    let key = key.trim();
    if key.len() > MAX_OVERRIDE_KEY_LEN {
        return Err(format!(
            "the key path is {} bytes long; at most {MAX_OVERRIDE_KEY_LEN}",
            key.len()
        ));
    }
    let depth = key.split('.').count();
    if depth > MAX_OVERRIDE_DEPTH {
        return Err(format!(
            "the key path holds {depth} keys; at most {MAX_OVERRIDE_DEPTH}"
        ));
    }
    let keys: Vec<String> = key.split('.').map(str::to_string).collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(format!("`{key}` is not a dotted key path"));
    }
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
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

/// Applies an override of an expanded stage (after expansion): the stage must exist, an
/// override changes a stage but does not add one.
fn set_instance_override(table: &mut toml::Table, o: &Override) -> Result<(), String> {
    let id = o.instance().unwrap_or_default();
    let stages = table.get("stages").and_then(toml::Value::as_table);
    if stages.is_some_and(|s| s.contains_key(id)) {
        return set_override(table, o);
    }
    let ids = stages
        .into_iter()
        .flat_map(|s| s.keys().map(String::as_str));
    let unquoted = id.trim_matches(|c| c == '"' || c == '\'');
    let hint = if unquoted != id {
        format!(" (`--set` keys are written without quotes: `stages.{unquoted}…`)")
    } else {
        suggest(id, ids)
    };
    Err(format!(
        "no stage `{id}`{hint}: `--set` changes an expanded stage, it does not add one"
    ))
}

/// Longest stage id, in bytes: an id names the stage's folder in the run directory, and a file
/// name holds at most 255 bytes.
pub const MAX_STAGE_ID: usize = 200;

/// A stage id: a name, or a template instance's `<name>@<item>`, at most [`MAX_STAGE_ID`]
/// bytes.
fn valid_stage_id(id: &str) -> bool {
    id.len() <= MAX_STAGE_ID
        && match id.split_once(INSTANCE_MARK) {
            Some((name, item)) => valid_id(name) && valid_id(item),
            None => valid_id(id),
        }
}

/// The key path of the `i`-th reference of an input slot (the slot itself when it holds a
/// single reference rather than a list).
fn ref_path(file: &PipelineFile, stage: &str, slot: &str, i: usize) -> KeyPath {
    let at = KeyPath::keys(["stages", stage, "inputs", slot]);
    let is_list = file
        .stages
        .get(stage)
        .and_then(|d| d.inputs.get(slot))
        .is_some_and(|v| v.is_array());
    if is_list {
        at.index(i)
    } else {
        at
    }
}

/// Most references to a missing stage given a "did you mean": each search compares the name
/// with every stage id, and a template can put one dangling reference in thousands of stages.
const MAX_SUGGESTIONS: usize = 100;

struct Draft {
    id: String,
    stage: Arc<dyn DynStage>,
    params: ParsedParams,
    seed: u64,
    inputs: BoundInputs,
    upstream: BTreeSet<String>,
}

fn validate(
    path: &Path,
    file: PipelineFile,
    resolved: toml::Table,
    registry: &Registry,
    map: &Locator,
    problems: &mut Vec<Problem>,
) -> Option<Pipeline> {
    let name = file.pipeline.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into())
    });
    if !valid_id(&name) {
        problems.push(map.problem(
            KeyPath::keys(["pipeline", "name"]),
            format!("`{name}` is not a valid name (letters, digits, `_`, `-`)"),
        ));
    }
    if file.stages.is_empty() {
        problems.push(map.problem(KeyPath::keys(["stages"]), "the pipeline has no stages"));
    }

    // 1. Each stage on its own: id, kind, params, input references' syntax.
    let mut drafts: BTreeMap<String, Draft> = BTreeMap::new();
    for (id, decl) in &file.stages {
        let at = KeyPath::keys(["stages", id.as_str()]);
        if !valid_stage_id(id) {
            problems.push(map.problem(
                at.clone(),
                format!("stage ids may only hold letters, digits, `_` and `-` (a template's stages are `<name>{INSTANCE_MARK}<item>`), at most {MAX_STAGE_ID} bytes"),
            ));
            continue;
        }
        let Some(stage) = registry.get(&decl.kind) else {
            let known: Vec<&str> = registry.kinds().map(|k| k.kind()).collect();
            problems.push(map.value_problem(
                at.key("kind"),
                format!(
                    "unknown stage kind `{}`{}; known kinds: {}",
                    decl.kind,
                    suggest(&decl.kind, known.iter().copied()),
                    known.join(", ")
                ),
            ));
            continue;
        };
        let (params, list) = stage.parse_params(toml::Value::Table(decl.params.clone()));
        for p in list {
            problems.push(map.param_problem(p, &at.key("params")));
        }
        let Some(params) = params else { continue };
        let slots = stage.inputs(&params);
        let mut inputs = BoundInputs::new();
        for (slot_name, value) in &decl.inputs {
            let slot_at = at.key("inputs").key(slot_name.as_str());
            let Some(slot) = slots.iter().find(|s| s.name == slot_name) else {
                let names: Vec<&str> = slots.iter().map(|s| s.name).collect();
                problems.push(map.problem(
                    slot_at,
                    format!(
                        "stage kind `{}` has no input `{slot_name}`{}; its inputs: {}",
                        decl.kind,
                        suggest(slot_name, names.iter().copied()),
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ),
                ));
                continue;
            };
            let refs: Vec<(KeyPath, &toml::Value)> = match value {
                toml::Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (slot_at.index(i), v))
                    .collect(),
                other => vec![(slot_at.clone(), other)],
            };
            if slot.arity != Arity::Many && refs.len() > 1 {
                problems
                    .push(map.value_problem(slot_at.clone(), "takes a single table, not a list"));
                continue;
            }
            if refs.is_empty() {
                problems.push(map.value_problem(
                    slot_at.clone(),
                    match slot.arity {
                        Arity::Many => "takes at least one table",
                        Arity::One => "takes one table; `[]` names none",
                        Arity::Optional => {
                            "takes one table; `[]` names none (leave the input out to give none)"
                        }
                    },
                ));
                continue;
            }
            let mut parsed = Vec::new();
            for (ref_at, v) in refs {
                match v.as_str().and_then(|s| s.split_once('.')) {
                    Some((stage_id, output)) if !stage_id.is_empty() && !output.is_empty() => {
                        parsed.push(InputRef {
                            stage: stage_id.to_string(),
                            output: output.to_string(),
                        })
                    }
                    _ => problems.push(map.value_problem(
                        ref_at,
                        format!("expected a reference \"<stage>.<output>\", found {v}"),
                    )),
                }
            }
            inputs.insert(slot_name.clone(), parsed);
        }
        for slot in &slots {
            if matches!(slot.arity, Arity::One | Arity::Many)
                && !decl.inputs.contains_key(slot.name)
            {
                problems.push(map.problem(
                    at.key("inputs"),
                    format!(
                        "input `{}` is required ({} `{}` table{})",
                        slot.name,
                        if slot.arity == Arity::Many {
                            "one or more"
                        } else {
                            "a"
                        },
                        slot.kind.name,
                        if slot.arity == Arity::Many { "s" } else { "" }
                    ),
                ));
            }
        }
        let seed = decl
            .seed
            .unwrap_or_else(|| derive_seed(file.pipeline.seed, id));
        drafts.insert(
            id.clone(),
            Draft {
                id: id.clone(),
                stage,
                params,
                seed,
                inputs,
                upstream: BTreeSet::new(),
            },
        );
    }

    // 2. Edges: references must name a declared stage.
    let mut suggestions = 0;
    for draft in drafts.values_mut() {
        for (slot, refs) in &draft.inputs {
            for (i, r) in refs.iter().enumerate() {
                if file.stages.contains_key(&r.stage) {
                    draft.upstream.insert(r.stage.clone());
                } else {
                    suggestions += 1;
                    let hint = if suggestions <= MAX_SUGGESTIONS {
                        suggest(&r.stage, file.stages.keys().map(String::as_str))
                    } else {
                        String::new()
                    };
                    problems.push(map.value_problem(
                        ref_path(&file, &draft.id, slot, i),
                        format!("no stage `{}`{hint}", r.stage),
                    ));
                }
            }
        }
    }

    // 3. Topological order; stages on a cycle are reported.
    let order = topological_order(&drafts, map, problems);

    // 4. In that order, each stage's outputs, and each reference checked against them.
    let mut outputs: BTreeMap<String, Vec<OutputPort>> = BTreeMap::new();
    let mut stages = Vec::new();
    for id in order {
        let draft = &drafts[&id];
        let at = KeyPath::keys(["stages", id.as_str()]);
        let slots = draft.stage.inputs(&draft.params);
        let mut refs_ok = true;
        for (slot_name, refs) in &draft.inputs {
            let slot = slots
                .iter()
                .find(|s| s.name == slot_name)
                .expect("checked in step 1");
            for (i, r) in refs.iter().enumerate() {
                let Some(ports) = outputs.get(&r.stage) else {
                    refs_ok = false; // upstream invalid: already reported
                    continue;
                };
                match ports.iter().find(|p| p.name == r.output) {
                    None => {
                        refs_ok = false;
                        let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
                        problems.push(map.value_problem(
                            ref_path(&file, &id, slot_name, i),
                            format!(
                                "stage `{}` has no output `{}`{}; its outputs: {}",
                                r.stage,
                                r.output,
                                suggest(&r.output, names.iter().copied()),
                                names.join(", ")
                            ),
                        ));
                    }
                    Some(port) if port.kind != slot.kind => {
                        refs_ok = false;
                        problems.push(map.value_problem(
                            ref_path(&file, &id, slot_name, i),
                            format!(
                                "input `{slot_name}` takes `{}` tables, but `{r}` is a `{}` table",
                                slot.kind.name, port.kind.name
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        if !refs_ok {
            continue;
        }
        match draft.stage.outputs(&draft.params, &draft.inputs) {
            Ok(ports) => {
                let mut seen = BTreeSet::new();
                for p in &ports {
                    if !seen.insert(p.name.as_str()) || !valid_id(&p.name) {
                        problems.push(map.problem(
                            at.clone(),
                            format!("output name `{}` is duplicated or invalid", p.name),
                        ));
                    }
                }
                outputs.insert(id.clone(), ports.clone());
                stages.push(PlannedStage {
                    id: id.clone(),
                    stage: draft.stage.clone(),
                    params: draft.params.clone(),
                    // A kind that draws nothing at random gets the same seed for every
                    // pipeline seed: its outputs, fingerprint and run-cache entry are shared
                    // by every seed of a sweep.
                    seed: if draft.stage.uses_seed(&draft.params) {
                        draft.seed
                    } else {
                        0
                    },
                    inputs: draft.inputs.clone(),
                    outputs: ports,
                    external_files: draft.stage.external_files(&draft.params),
                    uses_device: draft.stage.uses_device(&draft.params),
                    upstream: draft.upstream.clone(),
                });
            }
            Err(list) => {
                for p in list {
                    problems.push(map.param_problem(p, &at.key("params")));
                }
            }
        }
    }

    let jobs = match file.pipeline.jobs {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let run_dir = file
        .pipeline
        .run_dir
        .clone()
        .unwrap_or_else(|| Path::new("data").join("runs").join(&name));
    Some(Pipeline {
        name,
        file: path.to_path_buf(),
        seed: file.pipeline.seed,
        device: file.pipeline.device,
        device_resolver: registry.device_resolver(),
        jobs,
        run_dir,
        run_cache: file.pipeline.run_cache.clone(),
        stages,
        resolved,
        sweep: file.sweep,
    })
}

/// Kahn's algorithm with ties broken by id; reports each cycle once.
fn topological_order(
    drafts: &BTreeMap<String, Draft>,
    map: &Locator,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let mut indegree: BTreeMap<&str, usize> = drafts
        .values()
        .map(|d| {
            (
                d.id.as_str(),
                d.upstream
                    .iter()
                    .filter(|u| drafts.contains_key(*u))
                    .count(),
            )
        })
        .collect();
    let mut ready: BTreeSet<&str> = indegree
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| *id)
        .collect();
    let mut downstream: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for d in drafts.values() {
        for u in d.upstream.iter().filter(|u| drafts.contains_key(*u)) {
            downstream
                .entry(u.as_str())
                .or_default()
                .push(d.id.as_str());
        }
    }
    let mut order = Vec::new();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    while let Some(id) = ready.pop_first() {
        order.push(id.to_string());
        placed.insert(id);
        for d in downstream.get(id).into_iter().flatten() {
            let n = indegree.get_mut(d).expect("every draft has an entry");
            *n -= 1;
            if *n == 0 {
                ready.insert(*d);
            }
        }
    }
    // What is left sits on or behind a cycle: walk upstream from each leftover to find one.
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let left: BTreeSet<&str> = indegree
        .keys()
        .copied()
        .filter(|id| !placed.contains(id))
        .collect();
    for start in &left {
        let mut path = vec![*start];
        let mut current = *start;
        loop {
            let next = drafts[current]
                .upstream
                .iter()
                .map(String::as_str)
                .find(|u| left.contains(u));
            let Some(next) = next else { break };
            if let Some(pos) = path.iter().position(|p| *p == next) {
                let mut cycle: Vec<&str> = path[pos..].to_vec();
                // Report from the smallest id so that each cycle is reported once.
                let min = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, id)| **id)
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                cycle.rotate_left(min);
                let key = cycle.join(",");
                if reported.insert(key) {
                    let mut shown: Vec<&str> = cycle.iter().rev().copied().collect();
                    shown.rotate_right(1);
                    let first = shown[0];
                    shown.push(first);
                    problems.push(map.problem(
                        KeyPath::keys(["stages", cycle[0], "inputs"]),
                        format!("inputs form a cycle: {}", shown.join(" → ")),
                    ));
                }
                break;
            }
            path.push(next);
            current = next;
        }
    }
    order
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
