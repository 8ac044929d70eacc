//! MMSA's sub-networks (`MMSA/models/subNets/FeatureNets.py`, MMSA 2.2.1): `SubNet` (batch
//! normalisation, dropout, three ReLU layers) for the pooled audio and video vectors, and
//! `TextSubNet` (an LSTM's final state, then a linear layer) for the text sequence; with
//! PyTorch's `nn.BatchNorm1d` (`torch/nn/modules/batchnorm.py`, PyTorch 2.15.0) beneath.

use candle_core::{Tensor, Var};
use mmflow_pipeline::StageError;

use super::super::device::err;
use super::super::fused_batch_norm::{channel_moments, FusedBatchNorm};
use super::super::fused_linear::with_values;
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
        if x.device().is_cpu() {
            self.normalise_fused(&x.contiguous()?, train)
        } else {
            self.normalise_composed(x, train)
        }
    }

    /// [`Self::normalise`] from candle's ops (any device).
    fn normalise_composed(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
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

    /// [`Self::normalise`] as one op (see [`FusedBatchNorm`]), `x` contiguous on the CPU.
    fn normalise_fused(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (channels, positions) = match x.dims() {
            [_, c] => (*c, 1),
            [_, c, l] => (*c, *l),
            _ => candle_core::bail!(
                "batch norm: input {:?} is not B × C or B × C × L",
                x.shape()
            ),
        };
        let (mean, var) = if train {
            let (mean, var) = with_values(x, "batch norm input", |v| {
                channel_moments(v, channels, positions)
            })?;
            let as_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
            let (mean, var) = (as_f32(mean), as_f32(var));
            let n = x.dim(0)? * positions;
            // A batch of one value per channel has no unbiased variance (PyTorch refuses
            // it): the running statistics are then left as they are.
            if n > 1 {
                let device = x.device();
                self.update_running(
                    &Tensor::from_slice(&mean, channels, device)?,
                    &Tensor::from_slice(&var, channels, device)?,
                    n,
                )?;
            }
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().to_vec1::<f32>()?,
                self.running_var.as_tensor().to_vec1::<f32>()?,
            )
        };
        let op = FusedBatchNorm {
            mean,
            inv_std: var
                .iter()
                .map(|&v| (1.0 / (f64::from(v) + EPS).sqrt()) as f32)
                .collect(),
            batch_stats: train,
        };
        x.apply_op3(&self.weight, &self.bias, op)
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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The fused op and candle's ops agree on B × C and B × C × L inputs, in training (batch
    /// statistics, running ones updated) and evaluation: outputs, the running statistics, and
    /// the gradients of the input, weight and bias (the zoo's golden tests feed data straight
    /// in, so they check no input gradient).
    #[test]
    fn fused_batch_norm_equals_candles_ops() {
        let device = Device::Cpu;
        for dims in [vec![6, 5], vec![4, 3, 7]] {
            let n: usize = dims.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0)
                .collect();
            let weights: Vec<f32> = (0..n).map(|i| 1.0 + (i % 5) as f32 / 4.0).collect();
            let w = Tensor::from_vec(weights, dims.as_slice(), &device).unwrap();
            let run = |fused: bool, train: bool| {
                let mut store = ParamStore::new(3, &device);
                let norm = BatchNorm1d::new(&mut store, "norm", dims[1]).unwrap();
                let x = Var::from_vec(values.clone(), dims.as_slice(), &device).unwrap();
                let y = if fused {
                    norm.normalise_fused(&x, train)
                } else {
                    norm.normalise_composed(&x, train)
                }
                .unwrap();
                let grads = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let mut got = vec![flat(&y), flat(grads.get(&x).unwrap())];
                for name in ["norm.weight", "norm.bias"] {
                    let var = &store
                        .named_vars()
                        .into_iter()
                        .find(|(n, _)| n == name)
                        .unwrap()
                        .1;
                    got.push(flat(grads.get(var).unwrap()));
                }
                got.push(flat(norm.running_mean.as_tensor()));
                got.push(flat(norm.running_var.as_tensor()));
                got
            };
            for train in [true, false] {
                let (fused, composed) = (run(true, train), run(false, train));
                for (what, (a, b)) in ["y", "dx", "dweight", "dbias", "running mean", "running var"]
                    .iter()
                    .zip(fused.iter().zip(&composed))
                {
                    let worst = a
                        .iter()
                        .zip(b)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst < 1e-4,
                        "{dims:?} train {train}: {what} differs by {worst}"
                    );
                }
            }
        }
    }
}
