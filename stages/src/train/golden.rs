//! Comparisons of tensors with a reference tool's (the golden tests of MMSA's modules and of
//! the trainable BERT).

use candle_core::Tensor;

/// The largest difference relative to the reference's largest magnitude, or to `floor` where
/// that is smaller.
pub fn relative_to(got: &Tensor, want: &Tensor, floor: f32) -> f32 {
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(floor, |m, x| m.max(x.abs()));
    got.iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0.0, f32::max)
}

/// Outputs and gradients: relative to the reference's largest magnitude.
pub fn relative(got: &Tensor, want: &Tensor) -> f32 {
    relative_to(got, want, 1e-12)
}

/// Weights after the steps: relative to their largest magnitude or 1, whichever is larger (a
/// bias that starts at 0 and took three steps of 0.01 is compared absolutely: Adam divides
/// each step by the gradient's own size, so f32 rounding of a gradient near 0 becomes a
/// visible fraction of so small a value).
pub fn stepped(got: &Tensor, want: &Tensor) -> f32 {
    relative_to(got, want, 1.0)
}
