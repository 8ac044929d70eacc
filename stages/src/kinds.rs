//! The kinds of table that flow between stages (see `schemas/` for their columns).

use mmflow_pipeline::TableKind;

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
