//! AdamW with gradient clipping, and learning-rate schedules.
//!
//! candle-nn's AdamW builds about ten temporary tensors per parameter per step; on the CPU
//! this one updates each parameter, its first and second moments in one pass, in place (a
//! candle in-place custom op, large parameters split across threads), and reads the gradient
//! norm from the gradients in place, which matters at the small batch sizes these models
//! train with. On other devices it falls back to candle-nn's AdamW (same update rule).
//!
//! Follows PyTorch 2.15.0 (commit `d0f2af8b66b20da4baa50644c0cd3f887a2eae2e`): AdamW is
//! `torch.optim.AdamW` (`torch/optim/adamw.py`), which runs `_single_tensor_adam` of
//! `torch/optim/adam.py` with `decoupled_weight_decay=True` and no `amsgrad`; the plateau schedule
//! is `ReduceLROnPlateau` (`torch/optim/lr_scheduler.py`, `step` and `_is_better`) in mode `min`
//! with the relative threshold 1e-4 and no cooldown. Adam is `torch.optim.Adam` (the same
//! function with `decoupled_weight_decay=False`: `grad + weight_decay × param`). The tests below hold PyTorch's numbers.

use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Layout, Tensor, Var};
use candle_nn::Optimizer as _;
use mmflow_pipeline::StageError;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::device::err;
use super::fused_linear::with_values;

/// Which optimiser: how weight decay enters the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// AdamW (`torch.optim.AdamW`): the weights shrink by `lr × weight_decay` apart from the
    /// gradient step.
    #[default]
    Adamw,
    /// Adam (`torch.optim.Adam`): `weight_decay × weight` is added to the gradient (L2), as
    /// MMSA's trainers use it.
    Adam,
}

impl Optimizer {
    /// True for AdamW (the default, skipped in the canonical params).
    pub fn is_adamw(&self) -> bool {
        *self == Optimizer::Adamw
    }
}

/// AdamW settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// Weight decay (decoupled for AdamW, added to the gradient for Adam).
    pub weight_decay: f64,
    /// AdamW or Adam.
    pub optimizer: Optimizer,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator term.
    pub eps: f64,
}

impl AdamWConfig {
    /// PyTorch's defaults with the given learning rate and weight decay.
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        AdamWConfig {
            lr,
            weight_decay,
            optimizer: Optimizer::Adamw,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// One fused AdamW step for one parameter (in place on its storage).
struct FusedStep<'a> {
    m: &'a Mutex<Vec<f32>>,
    v: &'a Mutex<Vec<f32>>,
    config: AdamWConfig,
    step: i32,
    grad_scale: f32,
}

impl candle_core::InplaceOp2 for FusedStep<'_> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        grad: &CpuStorage,
        grad_l: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(theta), CpuStorage::F32(g)) = (dst, grad) else {
            candle_core::bail!("adamw: float32 parameters only")
        };
        let (Some((t0, t1)), Some((g0, g1))) =
            (dst_l.contiguous_offsets(), grad_l.contiguous_offsets())
        else {
            candle_core::bail!("adamw: non-contiguous parameter or gradient")
        };
        let theta = &mut theta[t0..t1];
        let g = &g[g0..g1];
        let mut m = self
            .m
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw state poisoned".into()))?;
        let mut v = self
            .v
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw state poisoned".into()))?;
        if theta.len() != g.len() || m.len() != g.len() || v.len() != g.len() {
            candle_core::bail!("adamw: parameter, gradient and moments differ in size")
        }
        if g.len() > CHUNK {
            theta
                .par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .for_each(|(((t, g), m), v)| self.update(t, g, m, v));
        } else {
            self.update(theta, g, &mut m, &mut v);
        }
        Ok(())
    }
}

/// Values per piece of work when a step or a gradient norm is split across threads (large
/// enough that a piece outweighs handing it to another thread).
const CHUNK: usize = 1 << 14;

impl FusedStep<'_> {
    /// The update of one stretch of a parameter, its gradient and moments.
    fn update(&self, theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let c = self.config;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let scale_m = 1.0 / (1.0 - c.beta1.powi(self.step)) as f32;
        let scale_v = 1.0 / (1.0 - c.beta2.powi(self.step)) as f32;
        let (decay, l2) = match c.optimizer {
            Optimizer::Adamw => ((1.0 - c.lr * c.weight_decay) as f32, 0.0),
            Optimizer::Adam => (1.0, c.weight_decay as f32),
        };
        let (lr, eps, gs) = (c.lr as f32, c.eps as f32, self.grad_scale);
        for (((t, &gi), mi), vi) in theta.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let gi = gi * gs + l2 * *t;
            *mi = b1 * *mi + (1.0 - b1) * gi;
            *vi = b2 * *vi + (1.0 - b2) * gi * gi;
            let update = (*mi * scale_m) / ((*vi * scale_v).sqrt() + eps);
            *t = *t * decay - lr * update;
        }
    }
}

/// The sum of squares of a CPU gradient, accumulated in f64 over fixed stretches (so the
/// result does not depend on the number of threads).
fn squared_norm(g: &Tensor) -> candle_core::Result<f64> {
    let g = g.contiguous()?;
    with_values(&g, "gradient", |values| {
        let stretch = |s: &[f32]| s.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        if values.len() > CHUNK {
            let parts: Vec<f64> = values.par_chunks(CHUNK).map(stretch).collect();
            parts.iter().sum()
        } else {
            stretch(values)
        }
    })
}

/// Parameters optimised at `lr_scale` × the learning rate, with their own weight decay and
/// warm-up where they have them (PyTorch's parameter groups with their own `lr` and
/// `weight_decay`, and a `LambdaLR` on them).
pub struct ParamGroup {
    /// The parameters.
    pub vars: Vec<Var>,
    /// Their share of the learning rate.
    pub lr_scale: f64,
    /// Their weight decay (the optimiser's where `None`).
    pub weight_decay: Option<f64>,
    /// A factor on their learning rate at every step.
    pub warmup: Option<LinearWarmup>,
}

impl From<Vec<Var>> for ParamGroup {
    fn from(vars: Vec<Var>) -> ParamGroup {
        ParamGroup {
            vars,
            lr_scale: 1.0,
            weight_decay: None,
            warmup: None,
        }
    }
}

/// transformers' `get_linear_schedule_with_warmup` (`src/transformers/optimization.py`): the
/// factor rises linearly from 0 over the first `warmup` steps, then falls linearly to 0 at
/// step `total`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearWarmup {
    /// Steps of warm-up.
    pub warmup: usize,
    /// Steps in all.
    pub total: usize,
}

impl LinearWarmup {
    /// The factor of the step taken after `done` steps (the scheduler's `current_step`).
    pub fn factor(&self, done: usize) -> f64 {
        if done < self.warmup {
            done as f64 / self.warmup.max(1) as f64
        } else {
            (self.total.saturating_sub(done)) as f64
                / self.total.saturating_sub(self.warmup).max(1) as f64
        }
    }
}

struct Slot {
    var: Var,
    lr_scale: f64,
    weight_decay: Option<f64>,
    warmup: Option<LinearWarmup>,
    m: Mutex<Vec<f32>>,
    v: Mutex<Vec<f32>>,
}

enum Engine {
    Fused(Vec<Slot>),
    Candle(Vec<(Box<candle_nn::AdamW>, ParamGroup)>),
}

/// AdamW over a set of parameters.
pub struct AdamW {
    engine: Engine,
    config: AdamWConfig,
    step: i32,
}

impl AdamW {
    /// Optimises `vars` (all on one device): fused and in place on the CPU, with candle-nn's
    /// AdamW (tensor ops on the device) elsewhere.
    pub fn new(vars: Vec<Var>, config: AdamWConfig) -> Result<AdamW, StageError> {
        Self::grouped(vec![vars.into()], config)
    }

    /// Optimises each group at its share of the learning rate (as PyTorch's parameter groups
    /// with their own `lr`).
    pub fn grouped(groups: Vec<ParamGroup>, config: AdamWConfig) -> Result<AdamW, StageError> {
        let fused = groups
            .iter()
            .flat_map(|g| &g.vars)
            .all(|v| v.device().is_cpu());
        Self::with_engine(groups, config, fused)
    }

    fn with_engine(
        groups: Vec<ParamGroup>,
        config: AdamWConfig,
        fused: bool,
    ) -> Result<AdamW, StageError> {
        let engine = if fused {
            Engine::Fused(
                groups
                    .into_iter()
                    .flat_map(|g| {
                        let (lr_scale, weight_decay, warmup) =
                            (g.lr_scale, g.weight_decay, g.warmup);
                        g.vars.into_iter().map(move |var| {
                            let n = var.elem_count();
                            Slot {
                                var,
                                lr_scale,
                                weight_decay,
                                warmup,
                                m: Mutex::new(vec![0.0; n]),
                                v: Mutex::new(vec![0.0; n]),
                            }
                        })
                    })
                    .collect(),
            )
        } else {
            let engines = groups
                .into_iter()
                .map(|g| {
                    let params = candle_nn::ParamsAdamW {
                        lr: config.lr * g.lr_scale,
                        beta1: config.beta1,
                        beta2: config.beta2,
                        eps: config.eps,
                        // Adam's L2 term is added to the gradients in `step`.
                        weight_decay: match config.optimizer {
                            Optimizer::Adamw => g.weight_decay.unwrap_or(config.weight_decay),
                            Optimizer::Adam => 0.0,
                        },
                    };
                    let opt =
                        candle_nn::AdamW::new(g.vars.clone(), params).map_err(err("optimizer"))?;
                    Ok((Box::new(opt), g))
                })
                .collect::<Result<Vec<_>, StageError>>()?;
            Engine::Candle(engines)
        };
        Ok(AdamW {
            engine,
            config,
            step: 0,
        })
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Changes the learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
        if let Engine::Candle(engines) = &mut self.engine {
            for (opt, group) in engines {
                opt.set_learning_rate(lr * group.lr_scale);
            }
        }
    }

    /// The parameters it optimises.
    pub fn vars(&self) -> Vec<&Var> {
        match &self.engine {
            Engine::Fused(slots) => slots.iter().map(|s| &s.var).collect(),
            Engine::Candle(engines) => engines.iter().flat_map(|(_, g)| &g.vars).collect(),
        }
    }

    /// One update from `grads`, with the global gradient norm clipped to `clip` (if given).
    /// Returns the gradient norm before clipping.
    pub fn step(&mut self, mut grads: GradStore, clip: Option<f64>) -> Result<f64, StageError> {
        let vars = self.vars();
        let sum_sq = match &self.engine {
            // Read in place on the CPU.
            Engine::Fused(_) => vars
                .iter()
                .filter_map(|var| grads.get(var))
                .map(squared_norm)
                .sum::<candle_core::Result<f64>>()
                .map_err(err("gradient norm"))?,
            // The squared norms stay on the device; one value per step comes back.
            Engine::Candle(..) => {
                let squares = vars
                    .iter()
                    .filter_map(|var| grads.get(var))
                    .map(|g| g.sqr().and_then(|s| s.sum_all()))
                    .collect::<candle_core::Result<Vec<_>>>()
                    .map_err(err("gradient norm"))?;
                if squares.is_empty() {
                    0.0
                } else {
                    Tensor::stack(&squares, 0)
                        .and_then(|s| s.to_dtype(candle_core::DType::F64))
                        .and_then(|s| s.sum_all())
                        .and_then(|s| s.to_scalar::<f64>())
                        .map_err(err("gradient norm"))?
                }
            }
        };
        let norm = sum_sq.sqrt();
        if !norm.is_finite() {
            return Err(StageError::Internal("non-finite gradient".into()));
        }
        let scale = match clip {
            Some(c) if norm > c && norm > 0.0 => c / norm,
            _ => 1.0,
        };
        self.step += 1;
        match &mut self.engine {
            Engine::Fused(slots) => {
                for slot in slots.iter() {
                    let Some(g) = grads.get(&slot.var) else {
                        continue;
                    };
                    let warmup = slot
                        .warmup
                        .map_or(1.0, |w| w.factor(self.step as usize - 1));
                    let op = FusedStep {
                        m: &slot.m,
                        v: &slot.v,
                        config: AdamWConfig {
                            lr: self.config.lr * slot.lr_scale * warmup,
                            weight_decay: slot.weight_decay.unwrap_or(self.config.weight_decay),
                            ..self.config
                        },
                        step: self.step,
                        grad_scale: scale as f32,
                    };
                    slot.var
                        .as_tensor()
                        .inplace_op2(g, &op)
                        .map_err(err("optimizer step"))?;
                }
            }
            Engine::Candle(engines) => {
                for (_, group) in engines.iter() {
                    let l2 = match self.config.optimizer {
                        Optimizer::Adamw => 0.0,
                        Optimizer::Adam => group.weight_decay.unwrap_or(self.config.weight_decay),
                    };
                    if scale == 1.0 && l2 == 0.0 {
                        continue;
                    }
                    for var in &group.vars {
                        if let Some(g) = grads.get(var) {
                            let scaled = g
                                .affine(scale, 0.0)
                                .and_then(|g| g + (var.as_tensor() * l2)?)
                                .map_err(err("clip"))?;
                            grads.insert(var, scaled);
                        }
                    }
                }
                let done = self.step as usize - 1;
                for (opt, group) in engines.iter_mut() {
                    if let Some(w) = group.warmup {
                        opt.set_learning_rate(self.config.lr * group.lr_scale * w.factor(done));
                    }
                    opt.step(&grads).map_err(err("optimizer step"))?;
                }
            }
        }
        Ok(norm)
    }
}

/// How the learning rate changes over epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant.
    #[default]
    Constant,
    /// Multiply by `factor` when the validation loss has not improved for `patience` epochs
    /// (PyTorch's `ReduceLROnPlateau`).
    Plateau,
    /// Cosine decay from the initial rate to 0 over the epochs.
    Cosine,
}

/// The state of a schedule.
pub struct Scheduler {
    schedule: Schedule,
    base: f64,
    factor: f64,
    patience: usize,
    epochs: usize,
    best: f64,
    bad_epochs: usize,
}

impl Scheduler {
    /// A schedule starting at `base`.
    pub fn new(schedule: Schedule, base: f64, factor: f64, patience: usize, epochs: usize) -> Self {
        Scheduler {
            schedule,
            base,
            factor,
            patience,
            epochs,
            best: f64::INFINITY,
            bad_epochs: 0,
        }
    }

    /// The learning rate for the epoch after `epoch` (1-based), given that epoch's
    /// validation loss and the current rate.
    pub fn next(&mut self, epoch: usize, valid_loss: f64, current: f64) -> f64 {
        match self.schedule {
            Schedule::Constant => current,
            Schedule::Cosine => {
                0.5 * self.base
                    * (1.0
                        + (std::f64::consts::PI * epoch as f64 / self.epochs.max(1) as f64).cos())
            }
            Schedule::Plateau => {
                // PyTorch's default threshold: relative 1e-4.
                if valid_loss < self.best * (1.0 - 1e-4) {
                    self.best = valid_loss;
                    self.bad_epochs = 0;
                    current
                } else {
                    self.bad_epochs += 1;
                    if self.bad_epochs > self.patience {
                        self.bad_epochs = 0;
                        current * self.factor
                    } else {
                        current
                    }
                }
            }
        }
    }
}

/// Detaches a scalar loss to f64.
pub fn scalar(t: &Tensor) -> Result<f64, StageError> {
    t.to_dtype(candle_core::DType::F64)
        .and_then(|t| t.to_scalar::<f64>())
        .map_err(err("loss value"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// One AdamW step against PyTorch:
    /// ```python
    /// w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    /// opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.01)
    /// (w ** 2).sum().backward(); opt.step()
    /// w  # tensor([ 0.8990, -1.8980,  2.8970])
    /// ```
    fn adamw_matches_pytorch(device: &Device) {
        let w = Var::new(&[1.0f32, -2.0, 3.0], device).unwrap();
        let mut opt = AdamW::new(vec![w.clone()], AdamWConfig::new(0.1, 0.01)).unwrap();
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(grads, None).unwrap();
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        for (g, want) in got.iter().zip([0.8990f32, -1.8980, 2.8970]) {
            assert!((g - want).abs() < 1e-4, "{got:?}");
        }
    }

    test_device!(
        adamw_matches_pytorch,
        adamw_matches_pytorch_cpu,
        adamw_matches_pytorch_cuda
    );

    /// The optimizer used on GPUs (candle-nn's AdamW, with clipping by scaled gradients) on
    /// `device` follows the fused CPU one step for step.
    fn the_device_optimizer_matches_the_fused_one(device: &Device) {
        let start = [0.5f32, -1.5, 2.0, 0.25, -0.75, 3.0];
        let run = |fused: bool| {
            let on = if fused { &Device::Cpu } else { device };
            let w = Var::new(&start, on).unwrap();
            let config = AdamWConfig::new(0.05, 0.01);
            let mut opt = AdamW::with_engine(vec![vec![w.clone()].into()], config, fused).unwrap();
            let mut norms = Vec::new();
            for step in 0..5 {
                let cube = w.as_tensor().sqr().unwrap().mul(w.as_tensor()).unwrap();
                let loss = cube.sum_all().unwrap();
                let clip = (step % 2 == 0).then_some(1.0);
                norms.push(opt.step(loss.backward().unwrap(), clip).unwrap());
                opt.set_lr(opt.lr() * 0.9);
            }
            (w.as_tensor().to_vec1::<f32>().unwrap(), norms)
        };
        let ((fused, fused_norms), (device, device_norms)) = (run(true), run(false));
        for (a, b) in fused_norms.iter().zip(&device_norms) {
            assert!(
                (a - b).abs() < 1e-5 * a,
                "{fused_norms:?} vs {device_norms:?}"
            );
        }
        for (a, b) in fused.iter().zip(&device) {
            assert!((a - b).abs() < 1e-5, "{fused:?} vs {device:?}");
        }
        assert_ne!(fused, start.to_vec());
    }

    test_device!(
        the_device_optimizer_matches_the_fused_one,
        the_device_optimizer_matches_the_fused_one_cpu,
        the_device_optimizer_matches_the_fused_one_cuda
    );

    #[test]
    fn plateau_halves_after_patience() {
        let mut s = Scheduler::new(Schedule::Plateau, 1.0, 0.5, 1, 10);
        let mut lr = 1.0;
        for (epoch, loss) in [1.0, 0.9, 0.95, 0.95, 0.95].into_iter().enumerate() {
            lr = s.next(epoch + 1, loss, lr);
        }
        assert_eq!(lr, 0.5);
    }
}
