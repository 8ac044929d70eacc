//! The kinds of table that flow between stages (see `schemas/` for their columns).

use mmflow_pipeline::{OutputPort, TableKind};

use crate::slots;

/// One row per segment: ids, split, speaker, interval, labels.
pub const SEGMENTS: TableKind = TableKind::parquet(mmflow_schemas::segments::TABLE);
/// One file per modality: frame sequences and pooled vectors per segment.
pub const FEATURES: TableKind = TableKind::parquet(mmflow_schemas::features::TABLE);
/// Per-feature statistics a normalisation was fitted with.
pub const NORM_STATS: TableKind = TableKind::parquet(mmflow_schemas::norm_stats::TABLE);
/// Per source segment, the target-space vector an adapter should produce.
pub const TARGETS: TableKind = TableKind::parquet(mmflow_schemas::targets::TABLE);
/// Named quality measures of a stage's result.
pub const DIAGNOSTICS: TableKind = TableKind::parquet(mmflow_schemas::diagnostics::TABLE);
/// Epoch-by-epoch training history.
pub const HISTORY: TableKind = TableKind::parquet(mmflow_schemas::history::TABLE);
/// Per segment × head predictions.
pub const PREDICTIONS: TableKind = TableKind::parquet(mmflow_schemas::evaluation::PREDICTIONS);
/// Per split × head × metric values with confidence intervals.
pub const METRICS: TableKind = TableKind::parquet(mmflow_schemas::evaluation::METRICS);
/// A trained sentiment model (safetensors with its architecture in the metadata).
pub const MODEL: TableKind = TableKind {
    name: "model",
    extension: "safetensors",
};
/// Trained feature adapters (safetensors with their architectures in the metadata).
pub const ADAPTERS: TableKind = TableKind {
    name: "adapters",
    extension: "safetensors",
};

/// The outputs of a source stage: the segments table, then one features table per modality.
pub fn source_outputs<S: Into<String>>(modalities: impl IntoIterator<Item = S>) -> Vec<OutputPort> {
    std::iter::once(OutputPort::new(slots::SEGMENTS, SEGMENTS))
        .chain(modalities.into_iter().map(|m| OutputPort::new(m, FEATURES)))
        .collect()
}
