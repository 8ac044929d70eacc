//! mmflow's stage kinds, registered in [`registry`]. Each stage module is a leaf holding one
//! kind: a params type (serde, `deny_unknown_fields`, a doc comment and a default per field,
//! its JSON Schema derived for `mmflow kinds --params KIND`) and its `run`. What stages share
//! lives in modules no stage owns: [`tables`], [`datasets`], [`metrics`], [`folds`],
//! [`stats`], [`moments`], [`linalg`], [`dot_search`], the text encoder ([`text_encoder`]),
//! the readers under [`ingest`] and the training pieces under [`train`]. `mmflow kinds` lists
//! the kinds with what each does.
#![warn(missing_docs)]

pub mod datasets;
pub mod dot_search;
pub mod embed_text;
pub mod evaluate;
pub mod folds;
pub mod ingest;
pub mod linalg;
pub mod metrics;
pub mod moments;
pub mod normalize;
pub mod stats;
pub mod tables;
pub mod targets;
pub mod text_encoder;
pub mod train;

use mmflow_pipeline::Registry;

/// Every stage kind mmflow ships.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(ingest::synthetic::Synthetic)
        .register(ingest::feature_files::Aligned::<
            ingest::feature_files::CsdFormat,
        >::new())
        .register(ingest::feature_files::Aligned::<
            ingest::feature_files::NpzFormat,
        >::new())
        .register(ingest::feature_files::Aligned::<
            ingest::feature_files::CsvFormat,
        >::new())
        .register(ingest::mmsa::MmsaPickle)
        .register(normalize::Normalize)
        .register(targets::SelectTargets)
        .register(train::train_adapters::TrainAdapters)
        .register(train::train_model::TrainModel)
        .register(train::finetune::Finetune)
        .register(train::apply_adapters::ApplyAdapters)
        .register(evaluate::Evaluate)
        .register(embed_text::EmbedText)
        .set_device_resolver(train::device::resolve);
    registry
}
