//! The names of the inputs and fixed outputs that several stage kinds share (a kind's own
//! slots are constants in its module). A model's checkpoint is read back by the same names
//! it was trained with ([`crate::train::restore`]).

use mmflow_pipeline::Slot;

/// The segments table: splits, labels, speakers.
pub const SEGMENTS: Slot = Slot::new("segments");
/// Features tables, one per modality.
pub const FEATURES: Slot = Slot::new("features");
/// A trained model.
pub const MODEL: Slot = Slot::new("model");
/// Trained feature adapters.
pub const ADAPTERS: Slot = Slot::new("adapters");
/// A training history.
pub const HISTORY: Slot = Slot::new("history");
/// Quality measures of a stage's result.
pub const DIAGNOSTICS: Slot = Slot::new("diagnostics");
