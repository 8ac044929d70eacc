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
use crate::graph::{shown_cycle, Graph};
use crate::names::{suggest, valid_id, MAX_STAGE_ID};
use crate::nesting::{self, MAX_NESTING};
use crate::problem::{listed, Found, KeyPath, Location, Problem, Problems, SourceMap};
use crate::run_cache::RunCacheSetting;
use crate::stage::{
    Arity, BoundInputs, DeviceChoice, DeviceResolver, DynStage, InputRef, OutputPort, ParsedParams,
    Registry, TableKind,
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
        .and_then(|file| validate(path, file, resolved, registry, &map, &mut found));
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

/// A checked stage's outputs: as it declares them, and the kind of each name (the first
/// output of a name), so that a reference is checked without a search.
struct StageOutputs {
    ports: Vec<OutputPort>,
    kinds: BTreeMap<String, TableKind>,
}

impl StageOutputs {
    fn new(ports: &[OutputPort]) -> Self {
        let mut kinds = BTreeMap::new();
        for port in ports {
            kinds.entry(port.name.clone()).or_insert(port.kind);
        }
        StageOutputs {
            ports: ports.to_vec(),
            kinds,
        }
    }
}

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
    found: &mut Found,
) -> Option<Pipeline> {
    let name = file.pipeline.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into())
    });
    if !valid_id(&name) {
        found.add(|| {
            map.problem(
                KeyPath::keys(["pipeline", "name"]),
                format!("`{name}` is not a valid name (letters, digits, `_`, `-`)"),
            )
        });
    }
    if file.stages.is_empty() {
        found.add(|| map.problem(KeyPath::keys(["stages"]), "the pipeline has no stages"));
    }

    // 1. Each stage on its own: id, kind, params, input references' syntax.
    let mut drafts: BTreeMap<String, Draft> = BTreeMap::new();
    for (id, decl) in &file.stages {
        let at = KeyPath::keys(["stages", id.as_str()]);
        if !valid_stage_id(id) {
            found.add(|| map.problem(
                at.clone(),
                format!("stage ids may only hold letters, digits, `_` and `-` (a template's stages are `<name>{INSTANCE_MARK}<item>`), at most {MAX_STAGE_ID} bytes"),
            ));
            continue;
        }
        let Some(stage) = registry.get(&decl.kind) else {
            let known: Vec<&str> = registry.kinds().map(|k| k.kind()).collect();
            found.add(|| {
                map.value_problem(
                    at.key("kind"),
                    format!(
                        "unknown stage kind `{}`{}; known kinds: {}",
                        decl.kind,
                        suggest(&decl.kind, known.iter().copied()),
                        known.join(", ")
                    ),
                )
            });
            continue;
        };
        let (params, list) = stage.parse_params(toml::Value::Table(decl.params.clone()));
        for p in list {
            found.add(|| map.param_problem(p, &at.key("params")));
        }
        let Some(params) = params else { continue };
        let slots = stage.inputs(&params);
        let mut inputs = BoundInputs::new();
        for (slot_name, value) in &decl.inputs {
            let slot_at = at.key("inputs").key(slot_name.as_str());
            let Some(slot) = slots.iter().find(|s| s.name == slot_name) else {
                let names: Vec<&str> = slots.iter().map(|s| s.name).collect();
                found.add(|| {
                    map.problem(
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
                    )
                });
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
                found
                    .add(|| map.value_problem(slot_at.clone(), "takes a single table, not a list"));
                continue;
            }
            if refs.is_empty() {
                found.add(|| {
                    map.value_problem(
                    slot_at.clone(),
                    match slot.arity {
                        Arity::Many => "takes at least one table",
                        Arity::One => "takes one table; `[]` names none",
                        Arity::Optional => {
                            "takes one table; `[]` names none (leave the input out to give none)"
                        }
                    },
                )
                });
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
                    _ => found.add(|| {
                        map.value_problem(
                            ref_at,
                            format!("expected a reference \"<stage>.<output>\", found {v}"),
                        )
                    }),
                }
            }
            inputs.insert(slot_name.clone(), parsed);
        }
        for slot in &slots {
            if matches!(slot.arity, Arity::One | Arity::Many)
                && !decl.inputs.contains_key(slot.name)
            {
                found.add(|| {
                    map.problem(
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
                    )
                });
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
                    found.add(|| {
                        suggestions += 1;
                        let hint = if suggestions <= MAX_SUGGESTIONS {
                            suggest(&r.stage, file.stages.keys().map(String::as_str))
                        } else {
                            String::new()
                        };
                        map.value_problem(
                            ref_path(&file, &draft.id, slot, i),
                            format!("no stage `{}`{hint}", r.stage),
                        )
                    });
                }
            }
        }
    }

    // 3. Topological order; stages on a cycle are reported.
    let order = topological_order(&drafts, map, found);

    // 4. In that order, each stage's outputs, and each reference checked against them.
    let mut outputs: BTreeMap<String, StageOutputs> = BTreeMap::new();
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
                let Some(upstream) = outputs.get(&r.stage) else {
                    refs_ok = false; // upstream invalid: already reported
                    continue;
                };
                match upstream.kinds.get(&r.output) {
                    None => {
                        refs_ok = false;
                        found.add(|| {
                            let names = upstream.ports.iter().map(|p| p.name.as_str());
                            map.value_problem(
                                ref_path(&file, &id, slot_name, i),
                                format!(
                                    "stage `{}` has no output `{}`{}; its outputs: {}",
                                    r.stage,
                                    r.output,
                                    suggest(&r.output, names.clone()),
                                    listed(names, upstream.ports.len())
                                ),
                            )
                        });
                    }
                    Some(kind) if *kind != slot.kind => {
                        refs_ok = false;
                        found.add(|| {
                            map.value_problem(
                                ref_path(&file, &id, slot_name, i),
                                format!(
                                    "input `{slot_name}` takes `{}` tables, but `{r}` is a `{}` table",
                                    slot.kind.name, kind.name
                                ),
                            )
                        });
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
                        found.add(|| {
                            map.problem(
                                at.clone(),
                                format!("output name `{}` is duplicated or invalid", p.name),
                            )
                        });
                    }
                }
                outputs.insert(id.clone(), StageOutputs::new(&ports));
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
                    found.add(|| map.param_problem(p, &at.key("params")));
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
    if let Some(why) = file.pipeline.run_cache.problem(&run_dir) {
        found.add(|| map.value_problem(KeyPath::keys(["pipeline", "run_cache"]), why));
    }
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

/// The stages in a topological order, ties broken by id; one cycle of each group of stages
/// that read from one another in a circle is reported, located at its first stage's inputs.
fn topological_order(
    drafts: &BTreeMap<String, Draft>,
    map: &Locator,
    found: &mut Found,
) -> Vec<String> {
    let ids: Vec<&str> = drafts.keys().map(String::as_str).collect();
    let upstream = drafts
        .values()
        .map(|d| {
            d.upstream
                .iter()
                .filter_map(|u| ids.binary_search(&u.as_str()).ok())
                .collect()
        })
        .collect();
    let graph = Graph::new(upstream);
    for cycle in graph.cycles() {
        let names: Vec<&str> = cycle.iter().map(|&v| ids[v]).collect();
        found.add(|| {
            map.problem(
                KeyPath::keys(["stages", names[0], "inputs"]),
                format!("inputs form a cycle: {}", shown_cycle(&names)),
            )
        });
    }
    graph
        .order()
        .into_iter()
        .map(|v| ids[v].to_string())
        .collect()
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
