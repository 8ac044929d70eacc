//! mmflow's stage kinds. Each module holds one kind: a documented params struct (serde,
//! `deny_unknown_fields`, a default per field) and its `run`.
//!
//! | kind | what it does |
//! |---|---|
//! | `synthetic` | MOSI/MOSEI-shaped (or valence/arousal) data with a known latent signal |
//! | `normalize` | per-feature statistics on the train split; z-score (or match another dataset's statistics) |
#![warn(missing_docs)]

pub mod folds;
pub mod kinds;
pub mod moments;
pub mod normalize;
pub mod synthetic;

use mmflow_pipeline::Registry;

/// Every stage kind mmflow ships.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(synthetic::Synthetic)
        .register(normalize::Normalize);
    registry
}
