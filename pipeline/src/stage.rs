//! What a stage kind is to the engine: typed params, declared inputs and outputs, and a
//! `run` that reads its inputs and writes its outputs. The engine knows nothing else.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mmflow_schemas::TableMeta;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::problem::{KeyPath, ParamProblem};
use crate::progress::Progress;

/// A kind of table (or file) flowing between stages. The engine only compares kinds; what a
/// kind means is up to the stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableKind {
    /// Name of the kind (`segments`, `features`, …).
    pub name: &'static str,
    /// File extension of its files (`parquet`, `safetensors`).
    pub extension: &'static str,
}

impl TableKind {
    /// A kind stored as a Parquet file.
    pub const fn parquet(name: &'static str) -> Self {
        TableKind {
            name,
            extension: "parquet",
        }
    }
}

/// How many tables an input slot takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly one.
    One,
    /// Zero or one.
    Optional,
    /// One or more.
    Many,
    /// Zero or more (a list, or the input left out).
    AnyNumber,
}

/// The name of one of a stage kind's inputs or fixed outputs: the key under a stage's
/// `inputs`, or the `<output>` of `"<stage>.<output>"`. A kind declares each once, as a
/// constant, and uses the constant both where it declares its slots
/// ([`StageKind::inputs`], [`StageKind::outputs`]) and where it reads or writes them
/// ([`RunContext::input`], [`RunContext::output`]): a misspelt slot does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(&'static str);

impl Slot {
    /// The slot called `name`.
    pub const fn new(name: &'static str) -> Slot {
        Slot(name)
    }

    /// Its name as written in pipeline files.
    pub const fn name(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl From<Slot> for String {
    fn from(slot: Slot) -> String {
        slot.0.to_string()
    }
}

/// An input slot a stage declares.
#[derive(Debug, Clone)]
pub struct InputSlot {
    /// Slot name, the key under the stage's `inputs`.
    pub name: Slot,
    /// The kind of table it accepts.
    pub kind: TableKind,
    /// How many tables it takes.
    pub arity: Arity,
    /// One line for `plan` and errors.
    pub about: &'static str,
}

/// An output a stage declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPort {
    /// Output name; other stages refer to it as `<stage id>.<name>`.
    pub name: String,
    /// Its kind.
    pub kind: TableKind,
}

impl OutputPort {
    /// An output called `name` of kind `kind`.
    pub fn new(name: impl Into<String>, kind: TableKind) -> Self {
        OutputPort {
            name: name.into(),
            kind,
        }
    }

    /// The file name of this output inside its stage directory.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.name, self.kind.extension)
    }
}

/// A reference from an input slot to another stage's output, as written `"<stage>.<output>"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InputRef {
    /// The producing stage.
    pub stage: String,
    /// The output of that stage.
    pub output: String,
}

impl std::fmt::Display for InputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.stage, self.output)
    }
}

/// The references bound to each input slot of a stage.
pub type BoundInputs = BTreeMap<String, Vec<InputRef>>;

/// A stage kind: typed, documented params and a `run` over files.
///
/// Implementations are plain data + code; the engine handles caching, temp files, renames,
/// the lock file and concurrency around them.
pub trait StageKind: Send + Sync + 'static {
    /// The stage's parameters: `deny_unknown_fields`, a doc comment and a default per field.
    type Params: Serialize + DeserializeOwned + Default + JsonSchema + Send + Sync + 'static;
    /// The name used in `kind = "…"`.
    const KIND: &'static str;
    /// Bumped whenever the stage's output for the same params changes; part of the fingerprint.
    const VERSION: u32;
    /// One line describing the stage.
    const ABOUT: &'static str;

    /// Params that moved elsewhere in the config format: `validate` names their new place.
    const MOVED: &'static [Moved] = &[];

    /// Semantic checks of the params (ranges, combinations). Paths are relative to `params`.
    fn check(&self, _params: &Self::Params) -> Vec<ParamProblem> {
        Vec::new()
    }

    /// The input slots, given the params.
    fn inputs(&self, params: &Self::Params) -> Vec<InputSlot>;

    /// The outputs, given the params and what the inputs are bound to.
    fn outputs(
        &self,
        params: &Self::Params,
        inputs: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>>;

    /// Files or directories outside the run directory that the stage reads (source files);
    /// their content is part of the fingerprint.
    fn external_files(&self, _params: &Self::Params) -> Vec<PathBuf> {
        Vec::new()
    }

    /// True if results depend on the compute device (the device joins the fingerprint).
    fn uses_device(&self, _params: &Self::Params) -> bool {
        false
    }

    /// False if the stage draws nothing at random: it is then given seed 0 whatever the
    /// pipeline seed, so its fingerprint (and run-cache entry) is the same for every seed.
    fn uses_seed(&self, _params: &Self::Params) -> bool {
        true
    }

    /// Does the work: reads `ctx`'s inputs, writes every declared output to `ctx.output(…)`.
    fn run(&self, params: &Self::Params, ctx: &mut RunContext<'_>) -> Result<(), StageError>;
}

/// A param that moved to another place when the config format changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The table it was in: dotted keys below `params`, `*` for every element of an array or
    /// value of a table (`""` is `params` itself, `"phases.*"` every phase).
    pub at: &'static str,
    /// Its old key.
    pub key: &'static str,
    /// Where it is now, as a user writes it relative to `at` (`optim.learning_rate`).
    pub now: &'static str,
}

/// Reports (and removes, so they are not also reported as unknown) every moved param.
fn moved_params(params: &mut toml::Value, moved: &[Moved]) -> Vec<ParamProblem> {
    let mut problems = Vec::new();
    for m in moved {
        let at: Vec<&str> = m.at.split('.').filter(|s| !s.is_empty()).collect();
        remove_moved(params, &at, KeyPath::default(), m, &mut problems);
    }
    problems
}

fn remove_moved(
    value: &mut toml::Value,
    at: &[&str],
    path: KeyPath,
    moved: &Moved,
    problems: &mut Vec<ParamProblem>,
) {
    match at.split_first() {
        None => {
            if value
                .as_table_mut()
                .is_some_and(|t| t.remove(moved.key).is_some())
            {
                problems.push(ParamProblem {
                    path: path.key(moved.key),
                    message: format!("`{}` has moved: write it as `{}`", moved.key, moved.now),
                    at_key: true,
                });
            }
        }
        Some((&"*", rest)) => match value {
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    remove_moved(item, rest, path.index(i), moved, problems);
                }
            }
            toml::Value::Table(table) => {
                for (key, item) in table.iter_mut() {
                    remove_moved(item, rest, path.key(key.clone()), moved, problems);
                }
            }
            _ => {}
        },
        Some((key, rest)) => {
            if let Some(inner) = value.as_table_mut().and_then(|t| t.get_mut(*key)) {
                remove_moved(inner, rest, path.key(*key), moved, problems);
            }
        }
    }
}

/// Params after parsing: the typed value and its canonical JSON form (defaults filled in).
#[derive(Clone)]
pub struct ParsedParams {
    pub(crate) value: Arc<dyn Any + Send + Sync>,
    /// Canonical JSON of the params, defaults included: what the fingerprint hashes.
    pub canonical: serde_json::Value,
}

impl std::fmt::Debug for ParsedParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.canonical)
    }
}

/// The object-safe face of a [`StageKind`], used by the engine.
pub trait DynStage: Send + Sync {
    /// `KIND`.
    fn kind(&self) -> &'static str;
    /// `VERSION`.
    fn version(&self) -> u32;
    /// `ABOUT`.
    fn about(&self) -> &'static str;
    /// Deserialises (collecting every problem) and checks params. The params come back even
    /// when there are problems (offending keys replaced by their defaults), so that the rest
    /// of the pipeline can still be checked against this stage's outputs.
    fn parse_params(&self, params: toml::Value) -> (Option<ParsedParams>, Vec<ParamProblem>);
    /// The params' JSON Schema (types, docs, defaults): what `mmflow kinds --params` prints.
    fn params_schema(&self) -> serde_json::Value;
    /// See [`StageKind::inputs`].
    fn inputs(&self, params: &ParsedParams) -> Vec<InputSlot>;
    /// See [`StageKind::outputs`].
    fn outputs(
        &self,
        params: &ParsedParams,
        inputs: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>>;
    /// See [`StageKind::external_files`].
    fn external_files(&self, params: &ParsedParams) -> Vec<PathBuf>;
    /// See [`StageKind::uses_device`].
    fn uses_device(&self, params: &ParsedParams) -> bool;
    /// See [`StageKind::uses_seed`].
    fn uses_seed(&self, params: &ParsedParams) -> bool;
    /// See [`StageKind::run`].
    fn run(&self, params: &ParsedParams, ctx: &mut RunContext<'_>) -> Result<(), StageError>;
}

impl<S: StageKind> DynStage for S {
    fn kind(&self) -> &'static str {
        S::KIND
    }
    fn version(&self) -> u32 {
        S::VERSION
    }
    fn about(&self) -> &'static str {
        S::ABOUT
    }
    fn parse_params(&self, params: toml::Value) -> (Option<ParsedParams>, Vec<ParamProblem>) {
        let mut params = params;
        let mut problems = moved_params(&mut params, S::MOVED);
        let typed: Option<S::Params> = crate::collect::deserialize_collecting(
            params,
            &KeyPath::default(),
            &mut |p, m, key| {
                problems.push(ParamProblem {
                    path: p,
                    message: m,
                    at_key: key,
                });
                std::ops::ControlFlow::Continue(())
            },
        );
        let Some(typed) = typed else {
            return (None, problems);
        };
        problems.extend(self.check(&typed));
        match serde_json::to_value(&typed) {
            Ok(canonical) => (
                Some(ParsedParams {
                    value: Arc::new(typed),
                    canonical,
                }),
                problems,
            ),
            Err(e) => {
                problems.push(ParamProblem::new(
                    "",
                    format!("params cannot be represented canonically: {e}"),
                ));
                (None, problems)
            }
        }
    }
    fn params_schema(&self) -> serde_json::Value {
        schemars::schema_for!(S::Params).to_value()
    }
    fn inputs(&self, params: &ParsedParams) -> Vec<InputSlot> {
        StageKind::inputs(self, typed::<S>(params))
    }
    fn outputs(
        &self,
        params: &ParsedParams,
        inputs: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        StageKind::outputs(self, typed::<S>(params), inputs)
    }
    fn external_files(&self, params: &ParsedParams) -> Vec<PathBuf> {
        StageKind::external_files(self, typed::<S>(params))
    }
    fn uses_device(&self, params: &ParsedParams) -> bool {
        StageKind::uses_device(self, typed::<S>(params))
    }
    fn uses_seed(&self, params: &ParsedParams) -> bool {
        StageKind::uses_seed(self, typed::<S>(params))
    }
    fn run(&self, params: &ParsedParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        StageKind::run(self, typed::<S>(params), ctx)
    }
}

fn typed<S: StageKind>(params: &ParsedParams) -> &S::Params {
    params
        .value
        .downcast_ref::<S::Params>()
        .expect("params are always parsed by the stage kind that uses them")
}

/// The stage kinds a pipeline can use, by name, and how the pipeline's `device` is opened.
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn DynStage>>,
    device_resolver: DeviceResolver,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            kinds: BTreeMap::new(),
            device_resolver: cpu_only,
        }
    }
}

impl Registry {
    /// An empty registry whose only device is the CPU.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how a [`DeviceChoice`] becomes the device stages compute on.
    pub fn set_device_resolver(&mut self, resolver: DeviceResolver) -> &mut Self {
        self.device_resolver = resolver;
        self
    }

    /// How a [`DeviceChoice`] becomes the device stages compute on.
    pub fn device_resolver(&self) -> DeviceResolver {
        self.device_resolver
    }

    /// Adds a stage kind.
    pub fn register<S: StageKind>(&mut self, stage: S) -> &mut Self {
        self.kinds.insert(S::KIND, Arc::new(stage));
        self
    }

    /// A stage kind by name.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn DynStage>> {
        self.kinds.get(kind).cloned()
    }

    /// Every registered kind, by name.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn DynStage>> {
        self.kinds.values()
    }
}

/// An input of a running stage: the reference and the file it resolved to.
#[derive(Debug, Clone)]
pub struct ResolvedInput {
    /// `"<stage>.<output>"` as configured.
    pub reference: InputRef,
    /// The file to read.
    pub path: PathBuf,
}

/// Which compute device the pipeline asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The CPU (default; always available).
    #[default]
    Cpu,
    /// A CUDA GPU (needs a build with `--features cuda`).
    Cuda,
    /// CUDA when available, else the CPU.
    Auto,
}

impl DeviceChoice {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
            DeviceChoice::Auto => "auto",
        }
    }
}

/// The device a stage computes on: what a [`DeviceChoice`] resolved to on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedDevice {
    /// The CPU.
    Cpu,
    /// The CUDA GPU with this ordinal.
    Cuda(usize),
}

impl std::fmt::Display for ResolvedDevice {
    /// `cpu` or `cuda:<ordinal>`, as recorded in the lock file and fingerprints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolvedDevice::Cpu => f.write_str("cpu"),
            ResolvedDevice::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// Opens the device a [`DeviceChoice`] asks for on this machine, or says why it cannot.
pub type DeviceResolver = fn(DeviceChoice) -> Result<ResolvedDevice, String>;

/// The resolver of a registry with no GPU support: `auto` is the CPU, `cuda` an error.
fn cpu_only(choice: DeviceChoice) -> Result<ResolvedDevice, String> {
    match choice {
        DeviceChoice::Cpu | DeviceChoice::Auto => Ok(ResolvedDevice::Cpu),
        DeviceChoice::Cuda => {
            Err("device = \"cuda\" but these stage kinds run on the CPU only".into())
        }
    }
}

/// Everything a running stage gets from the engine.
pub struct RunContext<'a> {
    /// The stage's id in the pipeline.
    pub stage_id: &'a str,
    /// The stage's seed: pinned in its config, or derived from the pipeline seed and its id.
    pub seed: u64,
    /// The device to compute on: the pipeline's `device` as resolved on this machine for a
    /// stage that uses one ([`StageKind::uses_device`]), the CPU for any other stage.
    pub device: ResolvedDevice,
    /// Progress reporting for long loops.
    pub progress: &'a Progress,
    pub(crate) inputs: &'a BTreeMap<String, Vec<ResolvedInput>>,
    pub(crate) outputs: BTreeMap<String, PathBuf>,
    pub(crate) meta: TableMeta,
    pub(crate) report: BTreeMap<String, serde_json::Value>,
}

impl<'a> RunContext<'a> {
    /// The single table bound to slot `slot`.
    pub fn input(&self, slot: Slot) -> Result<&ResolvedInput, StageError> {
        match self.inputs.get(slot.name()).map(Vec::as_slice) {
            Some([one]) => Ok(one),
            _ => Err(StageError::Internal(format!(
                "input slot `{slot}` is not bound to exactly one table"
            ))),
        }
    }

    /// The table bound to an optional slot, if any.
    pub fn optional_input(&self, slot: Slot) -> Option<&ResolvedInput> {
        self.inputs.get(slot.name()).and_then(|v| v.first())
    }

    /// Every table bound to slot `slot` (in configured order).
    pub fn inputs(&self, slot: Slot) -> &[ResolvedInput] {
        self.inputs
            .get(slot.name())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Where to write the fixed output `slot` (a temporary path; the engine moves it into
    /// place).
    pub fn output(&self, slot: Slot) -> Result<&Path, StageError> {
        self.output_named(slot.name())
    }

    /// Where to write the output called `name`, for outputs named after the data (one per
    /// modality); fixed outputs go through [`RunContext::output`].
    pub fn output_named(&self, name: &str) -> Result<&Path, StageError> {
        self.outputs
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| StageError::Internal(format!("`{name}` is not a declared output")))
    }

    /// Provenance to stamp into every table written.
    pub fn table_meta(&self) -> &TableMeta {
        &self.meta
    }

    /// Records a fact for the run report and the lock file (counts, sizes, warnings).
    pub fn report(&mut self, key: impl Into<String>, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.report.insert(key.into(), value);
    }
}

/// Another library's error, kept whole as the source of a [`StageError`].
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a stage failed: who is at fault, and what happened. An error that wraps another keeps
/// it as its [`source`](std::error::Error::source), and a failure is told apart by its type
/// (the device running out of memory is [`StageError::OutOfMemory`], found from the tensor
/// library's error type, not its message).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The input data is unusable (the message names file, key or segment).
    #[error("input data: {0}")]
    Input(String),
    /// A parameter is unusable for this data (found only at run time).
    #[error("config: {0}")]
    Config(String),
    /// Reading or writing a table failed.
    #[error("{0}")]
    Table(#[from] mmflow_schemas::SchemaError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// The device ran out of memory: the user's to fix, with a smaller batch or model.
    #[error("{step}: the GPU ran out of memory; lower `batch_size` (or the model's size) and run again ({source})")]
    OutOfMemory {
        /// What was being done (`forward pass`, `epoch 3, batch 7: optimizer step`).
        step: String,
        /// The tensor library's error.
        source: Cause,
    },
    /// A computation failed for another reason (a tensor operation, the clustering, encoding
    /// a description): a bug in mmflow or a library it uses, not in the input.
    #[error("internal error: {step}: {source}")]
    Compute {
        /// What was being done.
        step: String,
        /// The library's error.
        source: Cause,
    },
    /// A bug in mmflow: an invariant that did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StageError {
    /// An input-data error.
    pub fn input(message: impl Into<String>) -> Self {
        StageError::Input(message.into())
    }

    /// A failed computation in `step`, keeping the library's error.
    pub fn compute(step: impl Into<String>, source: impl Into<Cause>) -> Self {
        StageError::Compute {
            step: step.into(),
            source: source.into(),
        }
    }

    /// The same error, its step (or message) preceded by `context` (`epoch 3, batch 7`); its
    /// kind and source stay.
    pub fn during(self, context: impl std::fmt::Display) -> Self {
        match self {
            StageError::Input(m) => StageError::Input(format!("{context}: {m}")),
            StageError::Config(m) => StageError::Config(format!("{context}: {m}")),
            StageError::OutOfMemory { step, source } => StageError::OutOfMemory {
                step: format!("{context}: {step}"),
                source,
            },
            StageError::Compute { step, source } => StageError::Compute {
                step: format!("{context}: {step}"),
                source,
            },
            StageError::Internal(m) => StageError::Internal(format!("{context}: {m}")),
            other @ (StageError::Table(_) | StageError::Io { .. }) => other,
        }
    }

    /// A config error found at run time.
    pub fn config(message: impl Into<String>) -> Self {
        StageError::Config(message.into())
    }
}
