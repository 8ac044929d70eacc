//! Named parameters: seeded initialisation (candle's CPU generator cannot be seeded, so
//! weights are drawn from mmflow's own ChaCha stream), checkpoint loading with shape checks,
//! and safetensors files that carry the model's architecture in their metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use mmflow_pipeline::StageError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::device::err;

/// Parameters by name (sorted, so iteration order — and thus everything built from it — is
/// deterministic).
pub struct ParamStore {
    vars: BTreeMap<String, Var>,
    /// State that is saved and restored with the parameters but not trained (batch
    /// normalisation's running statistics).
    buffers: BTreeMap<String, Var>,
    device: Device,
    rng: ChaCha8Rng,
    /// Parameters loaded from a checkpoint and not yet claimed by the model.
    loaded: BTreeMap<String, Tensor>,
    /// Where loaded parameters came from, for messages.
    source: Option<String>,
}

impl ParamStore {
    /// An empty store drawing initial values from `seed`.
    pub fn new(seed: u64, device: &Device) -> Self {
        ParamStore {
            vars: BTreeMap::new(),
            buffers: BTreeMap::new(),
            device: device.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            loaded: BTreeMap::new(),
            source: None,
        }
    }

    /// A store whose parameters come from a checkpoint (claimed by name as the model is built).
    pub fn from_checkpoint(
        tensors: HashMap<String, Tensor>,
        source: &str,
        device: &Device,
    ) -> Self {
        let mut store = ParamStore::new(0, device);
        store.loaded = tensors.into_iter().collect();
        store.source = Some(source.to_string());
        store
    }

    /// Where loaded parameters come from (a checkpoint's path), if they are loaded.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The device parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Parameter `name` of `shape`: from the checkpoint if loading (its shape must match),
    /// else initialised uniformly in `[-bound, bound]`.
    pub fn uniform(
        &mut self,
        name: &str,
        shape: &[usize],
        bound: f32,
    ) -> Result<Tensor, StageError> {
        self.get_or_init(name, shape, |rng, n| {
            (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
        })
    }

    /// Parameter `name` of `shape`, initialised from the standard normal distribution.
    pub fn normal(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, StageError> {
        self.normal_with_std(name, shape, 1.0)
    }

    /// Parameter `name` of `shape`, initialised from a normal distribution of mean 0 and
    /// standard deviation `std`.
    pub fn normal_with_std(
        &mut self,
        name: &str,
        shape: &[usize],
        std: f32,
    ) -> Result<Tensor, StageError> {
        self.get_or_init(name, shape, |rng, n| {
            (0..n)
                .map(|_| std * rng.sample::<f32, _>(rand_distr::StandardNormal))
                .collect()
        })
    }

    /// Parameter `name` of `shape`, initialised to `value`.
    pub fn constant(
        &mut self,
        name: &str,
        shape: &[usize],
        value: f32,
    ) -> Result<Tensor, StageError> {
        self.get_or_init(name, shape, |_, n| vec![value; n])
    }

    /// Parameter `name` of `shape`: from the checkpoint if loading, else `value()` (pretrained
    /// weights, e.g. a text encoder's), which must have that shape.
    pub fn pretrained(
        &mut self,
        name: &str,
        shape: &[usize],
        value: impl FnOnce() -> Result<Tensor, StageError>,
    ) -> Result<Tensor, StageError> {
        if let Some(var) = self.vars.get(name) {
            return Ok(var.as_tensor().clone());
        }
        let tensor = if self.source.is_some() {
            self.claim_or_init(name, shape, |_, _| Vec::new())?
        } else {
            let t = value()?;
            if t.dims() != shape {
                return Err(StageError::Internal(format!(
                    "pretrained `{name}` has shape {:?}, not {shape:?}",
                    t.dims()
                )));
            }
            t
        };
        let var = Var::from_tensor(&tensor).map_err(err("parameter"))?;
        let t = var.as_tensor().clone();
        self.vars.insert(name.to_string(), var);
        Ok(t)
    }

    /// Untrained state `name` of `shape` (from the checkpoint if loading, else `value`): saved,
    /// snapshot and restored with the parameters, never handed to an optimiser.
    pub fn buffer(&mut self, name: &str, shape: &[usize], value: f32) -> Result<Var, StageError> {
        if let Some(var) = self.buffers.get(name) {
            return Ok(var.clone());
        }
        let tensor = self.claim_or_init(name, shape, |_, n| vec![value; n])?;
        let var = Var::from_tensor(&tensor).map_err(err("buffer"))?;
        self.buffers.insert(name.to_string(), var.clone());
        Ok(var)
    }

    fn get_or_init(
        &mut self,
        name: &str,
        shape: &[usize],
        init: impl FnOnce(&mut ChaCha8Rng, usize) -> Vec<f32>,
    ) -> Result<Tensor, StageError> {
        if let Some(var) = self.vars.get(name) {
            return Ok(var.as_tensor().clone());
        }
        let tensor = self.claim_or_init(name, shape, init)?;
        let var = Var::from_tensor(&tensor).map_err(err("parameter"))?;
        let t = var.as_tensor().clone();
        self.vars.insert(name.to_string(), var);
        Ok(t)
    }

    /// `name` from the checkpoint being loaded (its shape checked), else a fresh value.
    fn claim_or_init(
        &mut self,
        name: &str,
        shape: &[usize],
        init: impl FnOnce(&mut ChaCha8Rng, usize) -> Vec<f32>,
    ) -> Result<Tensor, StageError> {
        let tensor = if let Some(source) = &self.source {
            let t = self.loaded.remove(name).ok_or_else(|| {
                StageError::input(format!("{source}: the checkpoint has no parameter `{name}` (was it trained with another architecture?)"))
            })?;
            if t.dims() != shape {
                return Err(StageError::input(format!(
                    "{source}: parameter `{name}` has shape {:?}, the model needs {shape:?} (feature widths or architecture differ from the checkpoint's)",
                    t.dims()
                )));
            }
            t.to_dtype(DType::F32)
                .and_then(|t| t.to_device(&self.device))
                .map_err(err("load parameter"))?
        } else {
            let n = shape.iter().product();
            Tensor::from_vec(init(&mut self.rng, n), shape, &self.device)
                .map_err(err("init parameter"))?
        };
        Ok(tensor)
    }

    /// Takes over every parameter of `other` (names must not clash: the model's are
    /// `model.*`, adapters' `adapter.*`), so both train and checkpoint together.
    pub fn absorb(&mut self, other: ParamStore) -> Result<(), StageError> {
        for (name, var) in other.vars {
            if self.vars.insert(name.clone(), var).is_some() {
                return Err(StageError::Internal(format!(
                    "parameter `{name}` exists twice"
                )));
            }
        }
        for (name, var) in other.buffers {
            if self.buffers.insert(name.clone(), var).is_some() {
                return Err(StageError::Internal(format!(
                    "buffer `{name}` exists twice"
                )));
            }
        }
        Ok(())
    }

    /// Every parameter, sorted by name.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.values().cloned().collect()
    }

    /// Every parameter with its name, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Parameters whose names start with `prefix`.
    pub fn vars_with_prefix(&self, prefix: &str) -> Vec<Var> {
        self.vars
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Parameters whose names do not start with `prefix`.
    pub fn vars_without_prefix(&self, prefix: &str) -> Vec<Var> {
        self.vars
            .iter()
            .filter(|(k, _)| !k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Number of scalar parameters.
    pub fn count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Parameters and buffers, by name.
    fn saved(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter().chain(&self.buffers)
    }

    /// Copies of the current values, buffers included (to restore the best epoch later).
    pub fn snapshot(&self) -> Result<BTreeMap<String, Tensor>, StageError> {
        self.saved()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy().map_err(err("snapshot"))?)))
            .collect()
    }

    /// Restores values saved by [`ParamStore::snapshot`].
    pub fn restore(&self, snapshot: &BTreeMap<String, Tensor>) -> Result<(), StageError> {
        for (k, v) in self.saved() {
            if let Some(t) = snapshot.get(k) {
                v.set(t).map_err(err("restore"))?;
            }
        }
        Ok(())
    }

    /// Writes every parameter (and buffer) to a safetensors file with `metadata` (a JSON object) stored
    /// under the one key `mmflow`: safetensors writes its metadata map in hash order, and one
    /// key keeps the file byte-identical between identical runs.
    pub fn save(&self, path: &Path, metadata: &str) -> Result<(), StageError> {
        self.save_prefixed(path, &[""], metadata)
    }

    /// Writes the parameters whose names start with one of `prefixes` (see
    /// [`ParamStore::save`]).
    pub fn save_prefixed(
        &self,
        path: &Path,
        prefixes: &[&str],
        metadata: &str,
    ) -> Result<(), StageError> {
        let metadata = HashMap::from([(METADATA_KEY.to_string(), metadata.to_string())]);
        let tensors: Vec<(String, Tensor)> = self
            .saved()
            .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    v.as_tensor().to_device(&Device::Cpu).map_err(err("save"))?,
                ))
            })
            .collect::<Result<_, StageError>>()?;
        safetensors::serialize_to_file(
            tensors.iter().map(|(k, t)| (k.as_str(), t)),
            Some(metadata),
            path,
        )
        .map_err(|e| StageError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    }
}

/// A checkpoint's tensors by name and its metadata (the JSON under `mmflow`, if any).
pub type Checkpoint = (HashMap<String, Tensor>, Option<String>);

/// The safetensors metadata key holding mmflow's metadata.
const METADATA_KEY: &str = "mmflow";

/// Reads a safetensors checkpoint: its tensors and its metadata.
pub fn read_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint, StageError> {
    let bytes = mmflow_schemas::files::read_regular(path).map_err(|source| StageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        StageError::input(format!(
            "{}: not a safetensors checkpoint ({e})",
            path.display()
        ))
    })?;
    let metadata = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .cloned();
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| StageError::input(format!("{}: cannot read tensors ({e})", path.display())))?;
    Ok((tensors, metadata))
}
