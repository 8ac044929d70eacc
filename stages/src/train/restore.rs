//! A trained model put back to work on (possibly other) data: its checkpoint read, its
//! architecture rebuilt, the features inputs ordered as it expects, adapters in front, and
//! every width checked before anything runs. Shared by `evaluate` and `finetune`.

use candle_core::Device;
use mmflow_pipeline::{ResolvedInput, RunContext, StageError};

use super::checkpoint::{AdaptersCheckpoint, LoadedAdapters, ModelCheckpoint};
use super::data::{Dataset, Feed};
use super::model::{Architecture, Model};
use super::text_bert::TextArchitecture;
use super::weights::ParamStore;
use super::zoo::{adapters_refused, check_aligned};
use crate::slots;
use crate::text_encoder::ModelFolder;

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
    /// How each modality is fed.
    pub feeds: Vec<Feed>,
    /// The epoch whose weights the checkpoint holds, as recorded by its trainer.
    pub best_epoch: usize,
}

impl Restored {
    /// Loads the stage's `model` (and optional `adapters`) inputs and its `segments` and
    /// `features` inputs.
    pub fn load(ctx: &RunContext<'_>, device: &Device) -> Result<Restored, StageError> {
        let model_input = ctx.input(slots::MODEL)?.clone();
        let (
            mut store,
            ModelCheckpoint {
                architecture: arch,
                best_epoch,
                ..
            },
        ) = ModelCheckpoint::load(&model_input.path, device)?;
        let adapters = match ctx.optional_input(slots::ADAPTERS) {
            Some(input) => Some(AdaptersCheckpoint::load(&input.path, device)?),
            None => None,
        };
        let features = order_features(
            ctx.inputs(slots::FEATURES),
            &arch,
            &model_input.reference.to_string(),
        )?;
        if let (Some(zoo), Some(_)) = (&arch.zoo, &adapters) {
            return Err(StageError::config(format!(
                "{}: {}",
                model_input.reference,
                adapters_refused(zoo.model)
            )));
        }
        let model = Model::build(&mut store, &arch, None)?;
        let feeds = model.feeds();
        let frames: Vec<bool> = feeds.iter().map(|f| f.needs_frames()).collect();
        let segments = ctx.input(slots::SEGMENTS)?;
        let mut data = Dataset::load(segments, &features, &frames)?;
        if let Some(text) = &arch.text {
            let folder = text_folder(text, &model_input.reference.to_string())?;
            data.tokenize(&folder, &segments.reference.to_string())?;
        }
        if let Some(zoo) = &arch.zoo {
            check_aligned(zoo.model, &data, zoo.roles)?;
        }
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
            feeds,
            best_epoch,
        })
    }
}

/// The model folder of a checkpoint's text encoder, for its tokenizer: it must still describe
/// the network the checkpoint holds.
fn text_folder(text: &TextArchitecture, model: &str) -> Result<ModelFolder, StageError> {
    let folder = ModelFolder::open(&text.model, Some(text.max_length))?;
    if folder.config != text.config {
        return Err(StageError::input(format!(
            "{}: its config.json no longer describes the text encoder {model} was trained with (was the folder replaced?)",
            text.model.display()
        )));
    }
    Ok(folder)
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
                    let given: Vec<String> =
                        given.iter().map(|f| f.reference.to_string()).collect();
                    StageError::config(format!(
                        "{model} needs modality `{name}`; the `features` inputs are {}",
                        if given.is_empty() {
                            "none".to_string()
                        } else {
                            given.join(", ")
                        }
                    ))
                })
        })
        .collect()
}
