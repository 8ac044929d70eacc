//! MMSA's EF-LSTM (`MMSA/models/singleTask/EF_LSTM.py`, MMSA 2.2.1): early fusion of aligned
//! sequences. Text, audio and video frames are concatenated step by step, batch-normalised per
//! step (`nn.BatchNorm1d(seq_len)` on B × T × D: each step a channel), run through a
//! multi-layer LSTM, and its last layer's final state goes through dropout, a ReLU layer,
//! dropout and the output layer.

use candle_core::Tensor;
use mmflow_pipeline::StageError;

use super::super::device::err;
use super::super::nn::{dropout, Linear, Pass, StackedLstm};
use super::super::weights::ParamStore;
use super::settings::Resolved;
use super::subnets::BatchNorm1d;

type Result<T> = std::result::Result<T, StageError>;

/// EF-LSTM: `out(dropout(relu(linear(dropout(lstm(norm(cat(t, a, v))))))))`.
pub struct EarlyFusionLstm {
    norm: BatchNorm1d,
    lstm: StackedLstm,
    dropout: f32,
    linear: Linear,
    out: Linear,
}

impl EarlyFusionLstm {
    /// `model.norm` (over `steps` positions), `model.lstm` (PyTorch's names), `model.linear`,
    /// `model.out`, over steps of `input` = the three modalities' widths summed.
    pub fn new(
        store: &mut ParamStore,
        settings: &Resolved,
        steps: usize,
        input: usize,
        heads: usize,
    ) -> Result<EarlyFusionLstm> {
        let hidden = settings.hidden_dims[0];
        Ok(EarlyFusionLstm {
            norm: BatchNorm1d::new(store, "model.norm", steps)?,
            lstm: StackedLstm::pytorch(store, "model.lstm", input, hidden, settings.num_layers)?,
            dropout: settings.dropout,
            linear: Linear::new(store, "model.linear", hidden, hidden)?,
            out: Linear::new(store, "model.out", hidden, heads)?,
        })
    }

    /// B × heads from aligned text, audio and video (each B × T × D, padded to the same T).
    pub fn forward(
        &self,
        text: &Tensor,
        audio: &Tensor,
        video: &Tensor,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let x = Tensor::cat(&[text, audio, video], 2).map_err(err("early fusion"))?;
        let x = self.norm.forward(&x, pass.train)?;
        let state = self.lstm.forward(&x, pass, self.dropout)?;
        let hidden = self
            .linear
            .forward_relu(&dropout(&state, self.dropout, pass)?)?;
        self.out.forward(&dropout(&hidden, self.dropout, pass)?)
    }
}
