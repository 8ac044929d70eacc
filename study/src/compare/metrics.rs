//! What the comparison knows about metrics by name: which are shown when none are asked for,
//! and which are better when lower. The one place that reads metric and head names.

/// The metrics shown for a head when none are asked for.
pub(crate) fn default_metrics(head: &str) -> &'static [&'static str] {
    match head {
        "sentiment" => &[
            "Has0_acc_2",
            "Non0_acc_2",
            "Mult_acc_7",
            "MAE",
            "Corr",
            "CCC",
        ],
        "mean" => &["CCC"],
        _ => &["CCC", "RMSE"],
    }
}

/// Whether a lower value of `metric` is better (errors), rather than a higher one.
pub(crate) fn lower_is_better(metric: &str) -> bool {
    ["MAE", "MSE", "RMSE"].iter().any(|m| metric.starts_with(m))
}
