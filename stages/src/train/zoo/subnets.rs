//! MMSA's sub-networks (`MMSA/models/subNets/FeatureNets.py`, MMSA 2.2.1): `SubNet` (batch
//! normalisation, dropout, three ReLU layers) for the pooled audio and video vectors, and
//! `TextSubNet` (an LSTM's final state, then a linear layer) for the text sequence; with
//! PyTorch's `nn.BatchNorm1d` (`torch/nn/modules/batchnorm.py`, PyTorch 2.15.0) beneath.

use candle_core::{Tensor, Var};
use mmflow_pipeline::StageError;

use super::super::device::err;
use super::super::nn::{dropout, Linear, Lstm, Pass};
use super::super::weights::ParamStore;

type Result<T> = std::result::Result<T, StageError>;

/// PyTorch's `nn.BatchNorm1d(dim)` on B × dim, or on B × dim × L (statistics per channel over
/// the batch and the L positions): batch statistics while training (the running ones updated
/// with momentum 0.1 and the unbiased variance), the running ones in evaluation.
pub struct BatchNorm1d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
}

/// PyTorch's defaults.
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

impl BatchNorm1d {
    /// `name.weight` (1), `name.bias` (0), buffers `name.running_mean` (0) and
    /// `name.running_var` (1).
    pub fn new(store: &mut ParamStore, name: &str, dim: usize) -> Result<BatchNorm1d> {
        Ok(BatchNorm1d {
            weight: store.constant(&format!("{name}.weight"), &[dim], 1.0)?,
            bias: store.constant(&format!("{name}.bias"), &[dim], 0.0)?,
            running_mean: store.buffer(&format!("{name}.running_mean"), &[dim], 0.0)?,
            running_var: store.buffer(&format!("{name}.running_var"), &[dim], 1.0)?,
        })
    }

    /// Normalises `x` (B × dim, or B × dim × L).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.normalise(x, train).map_err(err("batch norm"))
    }

    fn normalise(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        // Per-channel values shaped to broadcast over `x`: 1 × dim (× 1).
        let positions = x.rank() == 3;
        let channels = |t: &Tensor| -> candle_core::Result<Tensor> {
            let t = t.unsqueeze(0)?;
            if positions {
                t.unsqueeze(2)
            } else {
                Ok(t)
            }
        };
        let over_batch = |t: &Tensor| -> candle_core::Result<Tensor> {
            let t = if positions {
                t.mean_keepdim(2)?
            } else {
                t.clone()
            };
            t.mean_keepdim(0)
        };
        let (mean, var) = if train {
            let n = x.dim(0)? * if positions { x.dim(2)? } else { 1 };
            let mean = over_batch(x)?;
            let var = over_batch(&x.broadcast_sub(&mean)?.sqr()?)?;
            // A batch of one value per channel has no unbiased variance (PyTorch refuses
            // it): the running statistics are then left as they are.
            if n > 1 {
                self.update_running(
                    &mean.detach().flatten_all()?,
                    &var.detach().flatten_all()?,
                    n,
                )?;
            }
            (mean, var)
        } else {
            (
                channels(self.running_mean.as_tensor())?,
                channels(self.running_var.as_tensor())?,
            )
        };
        x.broadcast_sub(&mean)?
            .broadcast_div(&(var + EPS)?.sqrt()?)?
            .broadcast_mul(&channels(&self.weight)?)?
            .broadcast_add(&channels(&self.bias)?)
    }

    /// The running statistics blended with a batch's (`mean`, `var`: one per channel, over
    /// `n` values each).
    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> candle_core::Result<()> {
        let unbiased = (var * (n as f64 / (n - 1) as f64))?;
        let blend = |running: &Var, batch: &Tensor| -> candle_core::Result<()> {
            let next = ((running.as_tensor() * (1.0 - MOMENTUM))? + (batch * MOMENTUM)?)?;
            running.set(&next)
        };
        blend(&self.running_mean, mean)?;
        blend(&self.running_var, &unbiased)
    }
}

/// MMSA's `SubNet`: `relu(linear_3(relu(linear_2(relu(linear_1(dropout(norm(x))))))))`.
pub struct SubNet {
    norm: BatchNorm1d,
    dropout: f32,
    layers: [Linear; 3],
}

impl SubNet {
    /// `name.norm`, `name.linear_1` … `name.linear_3`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        hidden: usize,
        dropout: f32,
    ) -> Result<SubNet> {
        Ok(SubNet {
            norm: BatchNorm1d::new(store, &format!("{name}.norm"), input)?,
            dropout,
            layers: [
                Linear::new(store, &format!("{name}.linear_1"), input, hidden)?,
                Linear::new(store, &format!("{name}.linear_2"), hidden, hidden)?,
                Linear::new(store, &format!("{name}.linear_3"), hidden, hidden)?,
            ],
        })
    }

    /// B × input → B × hidden.
    pub fn forward(&self, x: &Tensor, pass: &mut Pass<'_>) -> Result<Tensor> {
        let mut y = dropout(&self.norm.forward(x, pass.train)?, self.dropout, pass)?;
        for layer in &self.layers {
            y = layer.forward_relu(&y)?;
        }
        Ok(y)
    }
}

/// MMSA's `TextSubNet` with one LSTM layer (its dropout is then 0, as MMSA sets it): the
/// LSTM's state after the last step of the padded sequence, then `linear_1`.
pub struct TextSubNet {
    rnn: Lstm,
    linear: Linear,
}

impl TextSubNet {
    /// `name.rnn` (PyTorch's LSTM names), `name.linear_1`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        hidden: usize,
        output: usize,
    ) -> Result<TextSubNet> {
        Ok(TextSubNet {
            rnn: Lstm::pytorch(store, &format!("{name}.rnn"), input, hidden)?,
            linear: Linear::new(store, &format!("{name}.linear_1"), hidden, output)?,
        })
    }

    /// B × T × input (every step run, padding included, as `nn.LSTM` on a padded batch does)
    /// → B × output.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, t, _) = x.dims3().map_err(err("text subnet"))?;
        let state = self.rnn.forward(x, &vec![t; b], train)?;
        self.linear.forward(&state)
    }
}
