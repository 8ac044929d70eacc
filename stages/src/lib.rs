//! mmflow's stage kinds. Each module holds one kind: a documented params struct (serde,
//! `deny_unknown_fields`, a default per field) and its `run`.
//!
//! | kind | what it does |
//! |---|---|
//! | `synthetic` | MOSI/MOSEI-shaped (or valence/arousal) data with a known latent signal |
//! | `csd`, `npz`, `csv` | feature files + labels, aligned as the CMU SDK does |
//! | `mmsa_pickle` | MMSA/MulT processed pickles, read as data only |
//! | `select_targets` | adapter training targets: k-means (linfa), cosine top-k, random |
//! | `train_adapters` | one MLP per modality into the target dataset's feature space |
//! | `train_model` | the sentiment model, trained with candle |
//! | `evaluate` | predictions, the field's metrics with bootstrap CIs, and flags |
//! | `normalize` | per-feature statistics on the train split; z-score (or match another dataset's statistics) |
#![warn(missing_docs)]

pub mod evaluate;
pub mod folds;
pub mod ingest;
pub mod kinds;
pub mod linalg;
pub mod moments;
pub mod normalize;
pub mod stats;
pub mod targets;
pub mod train;

use mmflow_pipeline::Registry;

/// Every stage kind mmflow ships.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(ingest::synthetic::Synthetic)
        .register(ingest::aligned::Aligned::<ingest::aligned::CsdFormat>::new())
        .register(ingest::aligned::Aligned::<ingest::aligned::NpzFormat>::new())
        .register(ingest::aligned::Aligned::<ingest::aligned::CsvFormat>::new())
        .register(ingest::mmsa::MmsaPickle)
        .register(normalize::Normalize)
        .register(targets::SelectTargets)
        .register(train::adapters::TrainAdapters)
        .register(train::train_model::TrainModel)
        .register(train::finetune::Finetune)
        .register(train::apply_adapters::ApplyAdapters)
        .register(evaluate::Evaluate);
    registry
}
