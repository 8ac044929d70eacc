//! A trained model put back to work on (possibly other) data: its checkpoint read, its
//! architecture rebuilt, the features inputs ordered as it expects, adapters in front, and
//! every width checked before anything runs. Shared by `evaluate` and `finetune`.

use std::path::Path;

use candle_core::Device;
use mmflow_pipeline::{ResolvedInput, RunContext, StageError};

use super::adapters::{load_adapters, LoadedAdapters};
use super::data::Dataset;
use super::model::{Architecture, Model};
use super::params::{read_checkpoint, ParamStore};

/// A model checkpoint and its data, ready to predict or train.
pub struct Restored {
    /// The model's parameters (`model.*`).
    pub store: ParamStore,
    /// The model, built from the checkpoint's architecture.
    pub model: Model,
    /// Adapters in front of modalities, if the stage has an `adapters` input.
    pub adapters: Option<LoadedAdapters>,
    /// The data, modalities in the model's order.
    pub data: Dataset,
    /// Which modalities are fed as sequences.
    pub frames: Vec<bool>,
    /// The epoch whose weights the checkpoint holds, as recorded by its trainer.
    pub best_epoch: Option<usize>,
}

impl Restored {
    /// Loads the stage's `model` (and optional `adapters`) inputs and its `segments` and
    /// `features` inputs.
    pub fn load(ctx: &RunContext<'_>, device: &Device) -> Result<Restored, StageError> {
        let model_input = ctx.input("model")?.clone();
        let (mut store, arch, best_epoch) = load_model(&model_input.path, device)?;
        let adapters = match ctx.optional_input("adapters") {
            Some(input) => Some(load_adapters(&input.path, device)?),
            None => None,
        };
        let features = order_features(
            ctx.inputs("features"),
            &arch,
            &model_input.reference.to_string(),
        )?;
        let model = Model::build(&mut store, &arch)?;
        let frames = model.needs_frames();
        let data = Dataset::load(ctx.input("segments")?, &features, &frames)?;
        for m in &data.modalities {
            let width = adapters
                .as_ref()
                .map(|a| a.adapters.output_width(&m.name, m.dim))
                .unwrap_or(m.dim);
            let (_, want) = arch
                .modalities
                .iter()
                .find(|(n, _)| *n == m.name)
                .expect("ordered above");
            if width != *want {
                return Err(StageError::input(format!(
                    "modality `{}` is {width} wide{} but {} was trained on {want}-wide features",
                    m.name,
                    if width != m.dim {
                        " after its adapter"
                    } else {
                        ""
                    },
                    model_input.reference
                )));
            }
        }
        Ok(Restored {
            store,
            model,
            adapters,
            data,
            frames,
            best_epoch,
        })
    }
}

/// Reads a model checkpoint: its parameters (not yet claimed), architecture and best epoch.
pub fn load_model(
    path: &Path,
    device: &Device,
) -> Result<(ParamStore, Architecture, Option<usize>), StageError> {
    let (tensors, meta) = read_checkpoint(path, device)?;
    if meta.get("mmflow.kind").map(String::as_str) != Some("model") {
        return Err(StageError::input(format!(
            "{}: not a model checkpoint",
            path.display()
        )));
    }
    let arch: Architecture = serde_json::from_str(
        meta.get("mmflow.architecture")
            .map(String::as_str)
            .unwrap_or("{}"),
    )
    .map_err(|e| StageError::input(format!("{}: unreadable architecture ({e})", path.display())))?;
    let best_epoch = meta.get("mmflow.best_epoch").and_then(|e| e.parse().ok());
    Ok((
        ParamStore::from_checkpoint(tensors, &path.display().to_string(), device),
        arch,
        best_epoch,
    ))
}

/// The features inputs in the model's modality order; every modality must be given.
pub fn order_features(
    given: &[ResolvedInput],
    arch: &Architecture,
    model: &str,
) -> Result<Vec<ResolvedInput>, StageError> {
    arch.modalities
        .iter()
        .map(|(name, _)| {
            given
                .iter()
                .find(|f| f.reference.output == *name)
                .cloned()
                .ok_or_else(|| {
                    StageError::config(format!(
                        "{model} needs modality `{name}`; the `features` inputs are {}",
                        given
                            .iter()
                            .map(|f| f.reference.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        })
        .collect()
}
