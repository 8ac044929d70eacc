//! The two checkpoint formats, as types: a trained model and a set of feature adapters.
//! Both are safetensors files — parameters by name plus one metadata entry `mmflow`, the JSON
//! of [`Checkpoint`] (`{"kind": "model", "architecture": {…}, "best_epoch": 7, "stopped": null}`
//! or `{"kind": "adapters", "adapters": {"visual": {"input": 65, "output": 713, "mlp": {…}}}}`).
//! Written by `train_model`, `train_adapters` and `finetune`; read by `evaluate`, `finetune`,
//! `apply_adapters` and `train_model` (frozen adapters in front of a new model).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use mmflow_pipeline::StageError;
use serde::{Deserialize, Serialize};

use super::model::{Adapters, Architecture};
use super::nn::{Mlp, MlpConfig};
use super::text_bert;
use super::weights::{read_checkpoint, ParamStore};

/// What a checkpoint file describes, recorded in its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Checkpoint {
    /// A sentiment model: parameters under `model.*`.
    Model(ModelCheckpoint),
    /// Feature adapters: parameters under `adapter.<modality>.*`.
    Adapters(AdaptersCheckpoint),
}

/// A trained model's description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCheckpoint {
    /// How to rebuild the model.
    pub architecture: Architecture,
    /// The epoch whose weights the file holds (1-based; 0: the starting weights were kept).
    pub best_epoch: usize,
    /// Why training ended early, if it did.
    pub stopped: Option<String>,
}

/// Feature adapters' description: one MLP per adapted modality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptersCheckpoint {
    /// Modality → its adapter.
    pub adapters: BTreeMap<String, AdapterSpec>,
}

/// One modality's adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterSpec {
    /// Source width.
    pub input: usize,
    /// Target width.
    pub output: usize,
    /// The MLP.
    pub mlp: MlpConfig,
}

/// The parameter-name prefix of the model's parameters.
pub const MODEL_PREFIX: &str = "model.";
/// The parameter-name prefix of every adapter's parameters.
pub const ADAPTER_PREFIX: &str = "adapter.";

/// The parameter-name prefix of one modality's adapter (`adapter.<modality>`, no dot).
pub fn adapter_prefix(modality: &str) -> String {
    format!("{ADAPTER_PREFIX}{modality}")
}

impl Checkpoint {
    fn to_json(&self) -> Result<String, StageError> {
        serde_json::to_string(self).map_err(|e| StageError::compute("describing the checkpoint", e))
    }

    /// Reads `path`: its parameters (not yet claimed by a model) and its description.
    fn read(path: &Path, device: &Device) -> Result<(ParamStore, Checkpoint), StageError> {
        let (tensors, metadata) = read_checkpoint(path, device)?;
        let json = metadata.ok_or_else(|| {
            StageError::input(format!(
                "{}: not an mmflow checkpoint (no `mmflow` metadata)",
                path.display()
            ))
        })?;
        let checkpoint: Checkpoint = serde_json::from_str(&json).map_err(|e| {
            StageError::input(format!(
                "{}: unreadable checkpoint description ({e}); a checkpoint written by an older mmflow is re-made by re-running its stage",
                path.display()
            ))
        })?;
        let store = ParamStore::from_checkpoint(tensors, &path.display().to_string(), device);
        Ok((store, checkpoint))
    }
}

impl ModelCheckpoint {
    /// Writes the store's `model.*` parameters with this description.
    pub fn save(self, store: &ParamStore, path: &Path) -> Result<(), StageError> {
        store.save_prefixed(
            path,
            &[MODEL_PREFIX, text_bert::PREFIX],
            &Checkpoint::Model(self).to_json()?,
        )
    }

    /// Reads a model checkpoint: its parameters (claimed as the model is built) and description.
    pub fn load(path: &Path, device: &Device) -> Result<(ParamStore, ModelCheckpoint), StageError> {
        match Checkpoint::read(path, device)? {
            (store, Checkpoint::Model(model)) => Ok((store, model)),
            (_, Checkpoint::Adapters(_)) => Err(StageError::input(format!(
                "{}: an adapters checkpoint where a model is expected",
                path.display()
            ))),
        }
    }
}

/// An adapters checkpoint, loaded.
pub struct LoadedAdapters {
    /// Its parameters (`adapter.<modality>.*`).
    pub store: ParamStore,
    /// The MLPs.
    pub adapters: Adapters,
    /// Its description (to save a fine-tuned copy with the same shapes).
    pub checkpoint: AdaptersCheckpoint,
}

impl AdaptersCheckpoint {
    /// Writes the store's `adapter.*` parameters with this description.
    pub fn save(self, store: &ParamStore, path: &Path) -> Result<(), StageError> {
        store.save_prefixed(
            path,
            &[ADAPTER_PREFIX],
            &Checkpoint::Adapters(self).to_json()?,
        )
    }

    /// Reads an adapters checkpoint and builds its MLPs.
    pub fn load(path: &Path, device: &Device) -> Result<LoadedAdapters, StageError> {
        let (mut store, checkpoint) = match Checkpoint::read(path, device)? {
            (store, Checkpoint::Adapters(adapters)) => (store, adapters),
            (_, Checkpoint::Model(_)) => {
                return Err(StageError::input(format!(
                    "{}: a model checkpoint where adapters are expected",
                    path.display()
                )))
            }
        };
        let mut mlps = BTreeMap::new();
        for (m, spec) in &checkpoint.adapters {
            let mlp = Mlp::new(
                &mut store,
                &adapter_prefix(m),
                spec.input,
                &spec.mlp,
                Some(spec.output),
            )?;
            mlps.insert(m.clone(), (spec.input, spec.output, mlp));
        }
        Ok(LoadedAdapters {
            store,
            adapters: Adapters { mlps },
            checkpoint,
        })
    }
}
