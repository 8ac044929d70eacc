//! Per-head losses: a weighted sum of MSE, MAE, (1 − Pearson r) and (1 − CCC), the mix the
//! valence/arousal work used ("arousal 70% CCC / 30% MSE").

use candle_core::Tensor;
use mmflow_pipeline::{ParamProblem, StageError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::device::err;

/// The weights of one head's loss terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LossWeights {
    /// Mean squared error.
    pub mse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// 1 − Pearson correlation of the batch.
    pub pearson: f64,
    /// 1 − concordance correlation coefficient of the batch.
    pub ccc: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            mse: 1.0,
            mae: 0.0,
            pearson: 0.0,
            ccc: 0.0,
        }
    }
}

impl LossWeights {
    /// Problems with the weights of head `name` (negative or all zero).
    pub fn check(&self, key: &str) -> Vec<ParamProblem> {
        let all = [self.mse, self.mae, self.pearson, self.ccc];
        let mut problems = Vec::new();
        if all.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            problems.push(ParamProblem::new(
                key,
                "loss weights must be finite and ≥ 0",
            ));
        } else if all.iter().all(|w| *w == 0.0) {
            problems.push(ParamProblem::new(
                key,
                "every loss weight is 0: nothing would be learned",
            ));
        }
        problems
    }
}

const EPS: f64 = 1e-8;

/// The weighted loss of predictions `p` against labels `y` (both 1-D, same length ≥ 1).
pub fn head_loss(p: &Tensor, y: &Tensor, w: &LossWeights) -> Result<Tensor, StageError> {
    let inner = || -> candle_core::Result<Tensor> {
        let diff = (p - y)?;
        let mut total = Tensor::zeros((), p.dtype(), p.device())?;
        if w.mse > 0.0 {
            total = (total + (diff.sqr()?.mean_all()? * w.mse)?)?;
        }
        if w.mae > 0.0 {
            total = (total + (diff.abs()?.mean_all()? * w.mae)?)?;
        }
        if w.pearson > 0.0 || w.ccc > 0.0 {
            let (pm, ym) = (p.mean_all()?, y.mean_all()?);
            let (pc, yc) = (p.broadcast_sub(&pm)?, y.broadcast_sub(&ym)?);
            let cov = (&pc * &yc)?.mean_all()?;
            let (vp, vy) = (pc.sqr()?.mean_all()?, yc.sqr()?.mean_all()?);
            if w.pearson > 0.0 {
                let r = (&cov / ((&vp * &vy)?.sqrt()? + EPS)?)?;
                total = (total + (r.affine(-1.0, 1.0)? * w.pearson)?)?;
            }
            if w.ccc > 0.0 {
                let denominator = ((&vp + &vy)? + (&pm - &ym)?.sqr()?)?;
                let ccc = ((&cov * 2.0)? / (denominator + EPS)?)?;
                total = (total + (ccc.affine(-1.0, 1.0)? * w.ccc)?)?;
            }
        }
        Ok(total)
    };
    inner().map_err(err("loss"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Reference (numpy):
    /// ```python
    /// p = np.array([0.5, -1.0, 2.0, 0.0]); y = np.array([1.0, -2.0, 1.5, 0.5])
    /// np.mean((p - y) ** 2)                      # 0.4375
    /// np.mean(np.abs(p - y))                     # 0.625
    /// np.corrcoef(p, y)[0, 1]                    # 0.8791322785669918
    /// cov = np.mean((p - p.mean()) * (y - y.mean()))
    /// 2 * cov / (p.var() + y.var() + (p.mean() - y.mean()) ** 2)   # 0.8541666666666666
    /// ```
    fn losses_match_numpy(d: &Device) {
        let p = Tensor::new(&[0.5f32, -1.0, 2.0, 0.0], d).unwrap();
        let y = Tensor::new(&[1.0f32, -2.0, 1.5, 0.5], d).unwrap();
        let value =
            |w: LossWeights| head_loss(&p, &y, &w).unwrap().to_scalar::<f32>().unwrap() as f64;
        let only = |mse, mae, pearson, ccc| LossWeights {
            mse,
            mae,
            pearson,
            ccc,
        };
        assert!((value(only(1.0, 0.0, 0.0, 0.0)) - 0.4375).abs() < 1e-6);
        assert!((value(only(0.0, 1.0, 0.0, 0.0)) - 0.625).abs() < 1e-6);
        assert!((value(only(0.0, 0.0, 1.0, 0.0)) - (1.0 - 0.879_132_278_566_991_8)).abs() < 1e-5);
        assert!((value(only(0.0, 0.0, 0.0, 1.0)) - (1.0 - 0.854_166_666_666_666_6)).abs() < 1e-5);
        // The seeds' arousal mix: 70% CCC, 30% MSE.
        assert!(
            (value(only(0.3, 0.0, 0.0, 0.7))
                - (0.3 * 0.4375 + 0.7 * (1.0 - 0.854_166_666_666_666_6)))
                .abs()
                < 1e-5
        );
        assert!(only(0.0, 0.0, 0.0, 0.0).check("heads.x").len() == 1);
    }

    test_device!(
        losses_match_numpy,
        losses_match_numpy_cpu,
        losses_match_numpy_cuda
    );
}
