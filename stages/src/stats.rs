//! Small statistics shared by stages: Pearson correlation with a Fisher-z confidence
//! interval, quantiles as numpy computes them, mean and standard deviation.

/// Pearson correlation of `x` and `y` (f64 accumulation); None when either is constant or
/// there are fewer than 2 pairs.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    if n < 2 {
        return None;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (a, b) = (x[i] - mx, y[i] - my);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// The 95% confidence interval of a correlation `r` from `n` pairs (Fisher's z).
pub fn fisher_ci(r: f64, n: usize) -> Option<(f64, f64)> {
    if n < 4 {
        return None;
    }
    let z = r.clamp(-0.999_999, 0.999_999).atanh();
    let se = 1.0 / ((n - 3) as f64).sqrt();
    Some((
        (z - 1.959_963_984_540_054 * se).tanh(),
        (z + 1.959_963_984_540_054 * se).tanh(),
    ))
}

/// The `q`-quantile (0 ≤ q ≤ 1) of `values` with linear interpolation (numpy's default);
/// None when empty. NaNs must be removed beforehand.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// Mean of `values` (NaN when empty).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Population standard deviation (ddof = 0) of `values` (NaN when empty).
pub fn std(values: &[f64]) -> f64 {
    let m = mean(values);
    (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / values.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference (numpy/scipy):
    /// ```python
    /// x = [1, 2, 3, 4, 5, 6]; y = [2, 1, 4, 3, 7, 5]
    /// np.corrcoef(x, y)[0, 1]            # 0.7917946548886295
    /// np.quantile(y, [0.25, 0.5, 0.9])   # [2.25, 3.5, 6.0]
    /// z = np.arctanh(r); se = 1/np.sqrt(3); np.tanh([z - 1.959964*se, z + 1.959964*se])
    /// # [-0.05530516, 0.97611458]
    /// ```
    #[test]
    fn matches_numpy() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let y = [2.0, 1.0, 4.0, 3.0, 7.0, 5.0];
        let r = pearson(&x, &y).unwrap();
        assert!((r - 0.791_794_654_888_629_5).abs() < 1e-12);
        assert_eq!(quantile(&y, 0.25), Some(2.25));
        assert_eq!(quantile(&y, 0.5), Some(3.5));
        assert!((quantile(&y, 0.9).unwrap() - 6.0).abs() < 1e-12);
        let (lo, hi) = fisher_ci(r, 6).unwrap();
        assert!(
            (lo - -0.055_305_16).abs() < 1e-6 && (hi - 0.976_114_58).abs() < 1e-6,
            "{lo} {hi}"
        );
        assert_eq!(pearson(&[1.0, 1.0], &[2.0, 3.0]), None);
    }
}
