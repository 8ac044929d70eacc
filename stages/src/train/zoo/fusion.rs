//! The fusions of TFN (`MMSA/models/singleTask/TFN.py`, `TFN.forward`) and LMF
//! (`MMSA/models/singleTask/LMF.py`, `LMF.__init__` and `LMF.forward`), MMSA 2.2.1.

use candle_core::Tensor;
use mmflow_pipeline::StageError;

use super::super::device::err;
use super::super::weights::ParamStore;

type Result<T> = std::result::Result<T, StageError>;

/// `[1, x]` for each row of `x` (B × D → B × (D + 1)).
fn with_one(x: &Tensor) -> candle_core::Result<Tensor> {
    let one = Tensor::ones((x.dim(0)?, 1), x.dtype(), x.device())?;
    Tensor::cat(&[&one, x], 1)
}

/// TFN's fusion: 1 prepended to each modality's vector, then the flattened outer product
/// audio ⊗ video ⊗ text (B × (a+1)(v+1)(t+1)), in TFN's element order.
pub fn tensor_fusion(audio: &Tensor, video: &Tensor, text: &Tensor) -> Result<Tensor> {
    let inner = || -> candle_core::Result<Tensor> {
        let b = audio.dim(0)?;
        let (a, v, t) = (with_one(audio)?, with_one(video)?, with_one(text)?);
        let av = a.unsqueeze(2)?.matmul(&v.unsqueeze(1)?)?;
        let (da, dv, dt) = (a.dim(1)?, v.dim(1)?, t.dim(1)?);
        av.reshape((b, da * dv, 1))?
            .matmul(&t.unsqueeze(1)?)?
            .reshape((b, da * dv * dt))
    };
    inner().map_err(err("tensor fusion"))
}

/// LMF's fusion: per modality `[1, h] · factor` (rank × B × out), their element-wise
/// product, then weighted over the rank (`fusion_weights`) plus `fusion_bias`.
pub struct LowRankFusion {
    /// Text, audio and video factors, each rank × (width + 1) × out.
    factors: [Tensor; 3],
    /// 1 × rank.
    weights: Tensor,
    /// 1 × out.
    bias: Tensor,
    rank: usize,
    out: usize,
}

/// The factors' names, in MMSA's order of the text, audio and video roles.
const FACTORS: [&str; 3] = [
    "model.text_factor",
    "model.audio_factor",
    "model.video_factor",
];
const WEIGHTS: &str = "model.fusion_weights";
const BIAS: &str = "model.fusion_bias";

impl LowRankFusion {
    /// Factors for sub-network outputs of widths `[text, audio, video]`, initialised as LMF
    /// does: `xavier_normal_` (std √(2 / (fan_in + fan_out)), PyTorch's fans of a 3-D tensor:
    /// fan_in = (width + 1) × out, fan_out = rank × out), the bias 0.
    pub fn new(
        store: &mut ParamStore,
        widths: [usize; 3],
        rank: usize,
        out: usize,
    ) -> Result<LowRankFusion> {
        let mut factor = |i: usize| {
            let rows = widths[i] + 1;
            let std = (2.0 / ((rows * out + rank * out) as f64)).sqrt() as f32;
            store.normal_with_std(FACTORS[i], &[rank, rows, out], std)
        };
        let factors = [factor(0)?, factor(1)?, factor(2)?];
        let std = (2.0 / (rank as f64 + 1.0)).sqrt() as f32;
        Ok(LowRankFusion {
            factors,
            weights: store.normal_with_std(WEIGHTS, &[1, rank], std)?,
            bias: store.constant(BIAS, &[1, out], 0.0)?,
            rank,
            out,
        })
    }

    /// The factors' parameter names.
    pub fn factor_names(&self) -> Vec<String> {
        FACTORS.iter().map(|n| n.to_string()).collect()
    }

    /// The names of the fusion weights and bias (MMSA's trainer never optimises them).
    pub fn fusion_names(&self) -> Vec<String> {
        vec![WEIGHTS.to_string(), BIAS.to_string()]
    }

    /// B × out from the sub-networks' outputs.
    pub fn forward(&self, audio: &Tensor, video: &Tensor, text: &Tensor) -> Result<Tensor> {
        let inner = || -> candle_core::Result<Tensor> {
            let b = audio.dim(0)?;
            let project = |x: &Tensor, factor: &Tensor| -> candle_core::Result<Tensor> {
                // factor[r, i, o] as an (i) × (r·o) matrix: [1, x] · it = B × rank × out.
                let rows = factor.dim(1)?;
                let matrix = factor
                    .permute((1, 0, 2))?
                    .contiguous()?
                    .reshape((rows, self.rank * self.out))?;
                with_one(x)?
                    .matmul(&matrix)?
                    .reshape((b, self.rank, self.out))
            };
            let [text_factor, audio_factor, video_factor] = &self.factors;
            let zy = project(audio, audio_factor)?
                .mul(&project(video, video_factor)?)?
                .mul(&project(text, text_factor)?)?;
            let weights = self.weights.reshape((1, self.rank, 1))?;
            zy.broadcast_mul(&weights)?
                .sum(1)?
                .broadcast_add(&self.bias)
        };
        inner().map_err(err("low-rank fusion"))
    }
}
