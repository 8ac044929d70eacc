//! What the comparison needs of the metrics, from their types: which are shown when none are
//! asked for (the headline metrics of what a head predicts), and which way each improves.

use mmflow_stages::metrics::{
    Direction, Metric, MetricFamily, Predicts, CALIBRATED_SUFFIX, MEAN_SUBJECT,
};

/// The metrics shown for a head when none are asked for: the headline metrics of what it
/// predicts and of its metric family (both told by the metrics the evaluation computed for
/// it); the mean over continuous heads has only its CCC.
pub(crate) fn default_metrics<'a>(
    head: &str,
    has: impl Iterator<Item = &'a str> + Clone,
) -> Vec<&'static str> {
    if head == MEAN_SUBJECT {
        return vec![Metric::Ccc.name()];
    }
    Predicts::of_metrics(head, has.clone())
        .headline_metrics(MetricFamily::of_metrics(has))
        .iter()
        .map(|m| m.name())
        .collect()
}

/// Whether a lower value of `metric` (a metrics table's name, calibrated or not) is better.
pub(crate) fn lower_is_better(metric: &str) -> bool {
    let base = metric.strip_suffix(CALIBRATED_SUFFIX).unwrap_or(metric);
    Metric::from_name(base).is_some_and(|m| m.direction() == Direction::LowerIsBetter)
}
