//! mmflow's stage kinds, registered in [`registry`]. Each stage module is a leaf holding one
//! kind: a params type (serde, `deny_unknown_fields`, a doc comment and a default per field,
//! its JSON Schema derived for `mmflow kinds --params KIND`) and its `run`. What stages share
//! lives in modules no stage owns: [`tables`], [`datasets`], [`metrics`], [`folds`],
//! [`stats`], [`moments`], [`linalg`], [`dot_search`], the text encoder ([`text_encoder`] on [`bert`]),
//! the readers under [`ingest`] and the training pieces under [`train`]. `mmflow kinds` lists
//! the kinds with what each does.

pub mod bert;
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
pub mod slots;
pub mod stats;
pub mod tables;
pub mod targets;
pub mod text_encoder;
pub mod train;

use mmflow_pipeline::Registry;

/// Runs candle's element-wise operations on the calling thread. candle 0.11 runs element-wise
/// operations of more than 64K values on a spin-waiting pool of its own, beside rayon's (which
/// runs mmflow's parallel work and the matrix products); on few cores the two pools compete
/// for the same cores (measured on 2 cores: training 1.2–1.3× and `embed_text` 1.25× faster
/// without it). Results are the same either way: each element is computed on its own. Call at
/// the start of `main`, before any other thread starts; a `CANDLE_NUM_THREADS` the user set
/// is kept.
pub fn run_elementwise_ops_inline() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

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
