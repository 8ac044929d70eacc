//! The `train_model` stage: the sentiment model trained with candle (CPU by default, CUDA
//! when built with it), early stopping on a validation measure, best weights saved.

use std::collections::{BTreeMap, BTreeSet};

use mmflow_pipeline::problem::listed;
use mmflow_pipeline::values::Fraction;
use mmflow_pipeline::{
    Arity, BoundInputs, InputSlot, KeyPath, Moved, OutputPort, ParamProblem, RunContext,
    StageError, StageKind,
};
use mmflow_schemas::history;
use mmflow_schemas::Split;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checkpoint::{AdaptersCheckpoint, ModelCheckpoint};
use super::data::{longest, Dataset};
use super::device::open;
use super::fit::fit;
use super::loss::LossWeights;
use super::model::{Adapters, Architecture, EncoderConfig, EncoderKind, Fusion, Head, Model};
use super::nn::MlpConfig;
use super::optim::{Optimizer, Schedule};
use super::settings::{FitConfig, ModelDefaults, Monitor, Optim, TrainMeasures, MOVED_INTO_OPTIM};
use super::task::{check_data, check_monitor, training_family, Task};
use super::text_bert::{self, TextArchitecture, TextEncoderSettings};
use super::weights::ParamStore;
use super::zoo::{
    self, ArchitectureName, MmsaSettings, MmsaTraining, Recipe, ZooArchitecture, ZooModel, ROLES,
};
use crate::metrics::Predicts;
use crate::slots;
use crate::tables::{ADAPTERS, FEATURES, HISTORY, MODEL, SEGMENTS};
use crate::text_encoder::ModelFolder;

/// Parameters of the `train_model` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainModelParams {
    /// The model: `mmflow` (the default: `encoders`, `fusion`, `fusion_dim`, `fusion_mlp`,
    /// `user_embedding`, `dropout`) or one of MMSA's zoo, `lf_dnn`, `tfn`, `lmf`, `ef_lstm`,
    /// `mult` or `mfn` (settings under `mmsa`; features inputs named `text`, `audio` and
    /// `video`/`visual`/`vision`).
    #[serde(skip_serializing_if = "ArchitectureName::is_mmflow")]
    pub architecture: ArchitectureName,
    /// A zoo architecture's settings, under MMSA's names (`hidden_dims`, `dropouts`; LF-DNN's
    /// and TFN's `text_out`, `post_fusion_dim`; LMF's `rank`; EF-LSTM's, MulT's and MFN's
    /// below); each left out is MMSA's default for the segments' dataset (MOSI, MOSEI or SIMS;
    /// MOSI's for any other).
    #[serde(skip_serializing_if = "MmsaSettings::is_empty")]
    pub mmsa: MmsaSettings,
    /// `own` (the default: `heads` and `optim` as given) or `mmsa`: MMSA's trainer for a zoo
    /// architecture, with its settings for the segments' dataset (L1 loss, Adam, MMSA's batch
    /// size, learning rate, weight decay and `early_stop`); `optim.epochs` caps the epochs.
    #[serde(skip_serializing_if = "Recipe::is_own")]
    pub recipe: Recipe,
    /// A BERT-family encoder of the segments' `text`, fine-tuned with the model and fused
    /// before the features inputs' encoders (architecture `mmflow`); with it the `features`
    /// inputs may be left out (a model on text alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_encoder: Option<TextEncoderSettings>,
    /// Encoder per modality (input output name); modalities not listed are mean-pooled + MLP.
    pub encoders: BTreeMap<String, EncoderConfig>,
    /// `concat` (default) or `attention` across modalities.
    pub fusion: Fusion,
    /// Token width of attention fusion.
    pub fusion_dim: usize,
    /// The MLP after fusion.
    pub fusion_mlp: MlpConfig,
    /// Width of a learned embedding of the speaker/user id (0 = none): the train split's
    /// speakers; unknown users share one row.
    pub user_embedding: usize,
    /// Heads: label column → loss weights `mse`, `mae`, `pearson` (1 − r), `ccc` (1 − CCC),
    /// e.g. `arousal = { ccc = 0.7, mse = 0.3 }`.
    pub heads: BTreeMap<String, LossWeights>,
    /// What a head predicts, where its label column's name does not say: `sentiment`
    /// (polarity in [-3, 3], or [-1, 1] for CH-SIMS: MMSA's metrics), `emotion` (an intensity
    /// in [0, 3]) or `dimension` (a continuous affect dimension such as valence or arousal). By
    /// default a column named `sentiment` (or CH-SIMS's `sentiment_T`, `sentiment_A`,
    /// `sentiment_V`) is sentiment, MOSEI's six emotions are emotions, any other a dimension.
    pub predicts: BTreeMap<String, Predicts>,
    /// Dropout on the fused representation.
    pub dropout: Fraction,
    /// How the model is optimised.
    pub optim: Optim<ModelDefaults>,
}

impl Default for TrainModelParams {
    fn default() -> Self {
        TrainModelParams {
            architecture: ArchitectureName::Mmflow,
            mmsa: MmsaSettings::default(),
            recipe: Recipe::Own,
            text_encoder: None,
            encoders: BTreeMap::new(),
            fusion: Fusion::Concat,
            fusion_dim: 64,
            fusion_mlp: MlpConfig {
                hidden: vec![64],
                ..MlpConfig::default()
            },
            user_embedding: 0,
            heads: [("sentiment".to_string(), LossWeights::default())].into(),
            predicts: BTreeMap::new(),
            dropout: Fraction::new(0.2),
            optim: Optim::default(),
        }
    }
}

impl TrainModelParams {
    /// The model's heads, typed.
    pub fn typed_heads(&self) -> Vec<Head> {
        self.heads
            .keys()
            .map(|label| Head {
                label: label.clone(),
                predicts: self
                    .predicts
                    .get(label)
                    .copied()
                    .unwrap_or_else(|| Predicts::of_label(label)),
            })
            .collect()
    }

    /// Keys set that belong to another architecture than the one chosen.
    fn check_architecture_keys(&self) -> Vec<ParamProblem> {
        let default = TrainModelParams::default();
        let Some(zoo) = self.architecture.zoo() else {
            return if self.mmsa.is_empty() {
                Vec::new()
            } else {
                vec![ParamProblem::new(
                    "mmsa",
                    "settings of an MMSA architecture, but `architecture` is `mmflow`: set `architecture` to `lf_dnn`, `tfn` or `lmf`, or remove `mmsa`",
                )]
            };
        };
        let own = [
            ("encoders", self.encoders != default.encoders),
            ("fusion", self.fusion != default.fusion),
            ("fusion_dim", self.fusion_dim != default.fusion_dim),
            ("fusion_mlp", self.fusion_mlp != default.fusion_mlp),
            (
                "user_embedding",
                self.user_embedding != default.user_embedding,
            ),
            ("dropout", self.dropout != default.dropout),
            ("text_encoder", self.text_encoder.is_some()),
        ];
        let mut problems: Vec<ParamProblem> = own
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| {
                ParamProblem::new(
                    key,
                    format!(
                        "`{key}` belongs to architecture `mmflow`; `{}` takes its settings under `mmsa` (MMSA's names)",
                        zoo.name()
                    ),
                )
            })
            .collect();
        problems.extend(self.mmsa.check(zoo, &KeyPath::keys(["mmsa"])));
        problems
    }

    /// With MMSA's recipe: keys the recipe sets are not set here too.
    fn check_recipe_keys(&self) -> Vec<ParamProblem> {
        if self.recipe.is_own() {
            return Vec::new();
        }
        let Some(zoo) = self.architecture.zoo() else {
            return vec![ParamProblem::new(
                "recipe",
                format!(
                    "recipe `mmsa` trains an MMSA architecture: set `architecture` to one of {}",
                    ZooModel::ALL.map(|m| format!("`{}`", m.name())).join(", ")
                ),
            )];
        };
        let default = TrainModelParams::default();
        let (o, d) = (&self.optim, &default.optim);
        let set = [
            (
                "heads",
                self.heads.values().any(|w| *w != LossWeights::default()),
            ),
            ("optim.batch_size", o.batch_size != d.batch_size),
            ("optim.learning_rate", o.learning_rate != d.learning_rate),
            ("optim.weight_decay", o.weight_decay != d.weight_decay),
            ("optim.optimizer", o.optimizer != d.optimizer),
            ("optim.patience", o.patience != d.patience),
            ("optim.monitor", o.monitor != d.monitor),
            ("optim.schedule", o.schedule != d.schedule),
            ("optim.grad_clip", o.grad_clip != d.grad_clip),
            ("optim.clip_value", o.clip_value != d.clip_value),
            ("optim.accumulate", o.accumulate != d.accumulate),
            ("optim.plateau_factor", o.plateau_factor != d.plateau_factor),
            (
                "optim.plateau_patience",
                o.plateau_patience != d.plateau_patience,
            ),
        ];
        set.into_iter()
            .filter(|(_, differs)| *differs)
            .map(|(key, _)| {
                ParamProblem::new(
                    key,
                    format!(
                        "recipe `mmsa` sets this as MMSA trains `{}`: remove it, or the recipe",
                        zoo.name()
                    ),
                )
            })
            .collect()
    }

    /// The loss weights of the heads and the training settings the run uses: as given, or
    /// MMSA's recipe for the architecture on `dataset` (then also returned).
    fn training(
        &self,
        dataset: &str,
        seed: u64,
    ) -> (
        BTreeMap<String, LossWeights>,
        FitConfig,
        Option<MmsaTraining>,
    ) {
        let mut config = self.optim.fit_config("train", seed, false);
        let (Recipe::Mmsa, Some(model)) = (self.recipe, self.architecture.zoo()) else {
            return (self.heads.clone(), config, None);
        };
        let mmsa = zoo::mmsa_training(model, dataset);
        config.batch_size = mmsa.batch_size;
        config.lr = mmsa.learning_rate;
        config.weight_decay = mmsa.weight_decay;
        config.optimizer = Optimizer::Adam;
        config.patience = mmsa.early_stop;
        config.monitor = Monitor::loss();
        config.schedule = Schedule::Constant;
        config.grad_clip = None;
        config.clip_value = mmsa.clip_value;
        config.accumulate = mmsa.accumulate;
        config.train_measures = self
            .optim
            .train_measures
            .unwrap_or(TrainMeasures::BatchLoss);
        if let Some(patience) = mmsa.plateau_patience {
            // `ReduceLROnPlateau(optimizer, mode='min', factor=0.1, patience=…)` on the
            // validation loss.
            config.schedule = Schedule::Plateau;
            config.plateau_factor = 0.1;
            config.plateau_patience = patience;
        }
        let l1 = LossWeights {
            mse: 0.0,
            mae: 1.0,
            ..LossWeights::default()
        };
        let heads = self.heads.keys().map(|h| (h.clone(), l1.clone())).collect();
        (heads, config, Some(mmsa))
    }
}

/// The features inputs of a zoo model by role (text, audio, video), or what is wrong.
fn zoo_roles(model: ZooModel, names: &[&str]) -> Result<[usize; 3], String> {
    let mut roles: [Option<usize>; 3] = [None; 3];
    for (i, name) in names.iter().enumerate() {
        match zoo::role_of(name) {
            Some(r) if roles[r].is_none() => roles[r] = Some(i),
            Some(r) => {
                return Err(format!(
                    "two features inputs play the part of {}",
                    ROLES[r]
                ))
            }
            None => {
                return Err(format!(
                    "`{name}` is not text, audio or video: `{}` takes three features inputs named `text`, `audio` and `video` (or `visual`, `vision`)",
                    model.name()
                ))
            }
        }
    }
    match roles {
        [Some(t), Some(a), Some(v)] => Ok([t, a, v]),
        _ => Err(format!(
            "`{}` needs text, audio and video features inputs (named `text`, `audio`, `video`/`visual`/`vision`); given: {}",
            model.name(),
            listed(names, names.len())
        )),
    }
}

/// The `train_model` stage kind.
pub struct TrainModel;

impl StageKind for TrainModel {
    type Params = TrainModelParams;
    const KIND: &'static str = "train_model";
    const VERSION: u32 = 7;
    const ABOUT: &'static str =
        "the sentiment model (encoders, fusion, user embedding, heads) trained with candle";
    const MOVED: &'static [Moved] = &MOVED_INTO_OPTIM;

    fn check(&self, p: &TrainModelParams) -> Vec<ParamProblem> {
        let optim = KeyPath::keys(["optim"]);
        let mut problems = p.check_architecture_keys();
        problems.extend(p.check_recipe_keys());
        problems.extend(p.optim.check(&optim));
        problems.extend(
            p.optim
                .check_monitor(&optim, |m| check_monitor(m, &p.typed_heads(), None)),
        );
        for label in p.predicts.keys().filter(|l| !p.heads.contains_key(*l)) {
            problems.push(ParamProblem::at(
                KeyPath::keys(["predicts", label]),
                format!("`{label}` is not one of the `heads`"),
            ));
        }
        if p.heads.is_empty() {
            problems.push(ParamProblem::new(
                "heads",
                "name at least one head (a label column)",
            ));
        }
        for (name, w) in &p.heads {
            problems.extend(w.check(&format!("heads.{name}")));
        }
        if let Some(text) = &p.text_encoder {
            problems.extend(text.check(&KeyPath::keys(["text_encoder"])));
        }
        if p.fusion == Fusion::Attention && p.fusion_dim == 0 {
            problems.push(ParamProblem::new("fusion_dim", "must be at least 1"));
        }
        problems
    }

    fn inputs(&self, p: &TrainModelParams) -> Vec<InputSlot> {
        vec![
            InputSlot {
                name: slots::SEGMENTS,
                kind: SEGMENTS,
                arity: Arity::One,
                about: "splits, labels, speakers",
            },
            InputSlot {
                name: slots::FEATURES,
                kind: FEATURES,
                arity: match p.text_encoder {
                    Some(_) => Arity::AnyNumber,
                    None => Arity::Many,
                },
                about: "one features table per modality (none needed with `text_encoder`)",
            },
            InputSlot {
                name: slots::ADAPTERS,
                kind: ADAPTERS,
                arity: Arity::Optional,
                about: "frozen feature adapters in front of their modalities",
            },
        ]
    }

    fn external_files(&self, p: &TrainModelParams) -> Vec<std::path::PathBuf> {
        p.text_encoder.iter().map(|t| t.model.clone()).collect()
    }

    fn outputs(
        &self,
        p: &TrainModelParams,
        inputs: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        let names: Vec<&str> = inputs
            .get(slots::FEATURES.name())
            .into_iter()
            .flatten()
            .map(|r| r.output.as_str())
            .collect();
        let features: BTreeSet<&str> = names.iter().copied().collect();
        let problems: Vec<ParamProblem> = p
            .encoders
            .keys()
            .filter(|m| !features.contains(m.as_str()))
            .map(|m| {
                ParamProblem::new(
                    &format!("encoders.{m}"),
                    format!(
                        "`{m}` is not one of the `features` inputs ({})",
                        listed(&names, names.len())
                    ),
                )
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        if let Some(model) = p.architecture.zoo() {
            zoo_roles(model, &names).map_err(|e| vec![ParamProblem::new("architecture", e)])?;
        }
        Ok(vec![
            OutputPort::new(slots::MODEL, MODEL),
            OutputPort::new(slots::HISTORY, HISTORY),
        ])
    }

    fn uses_device(&self, _: &TrainModelParams) -> bool {
        true
    }

    fn run(&self, p: &TrainModelParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let device = open(ctx.device)?;
        let adapters = match ctx.optional_input(slots::ADAPTERS) {
            Some(input) => Some(AdaptersCheckpoint::load(&input.path, &device)?.adapters),
            None => None,
        };
        let features = ctx.inputs(slots::FEATURES).to_vec();
        let zoo_model = p.architecture.zoo();
        if let (Some(model), Some(_)) = (zoo_model, &adapters) {
            return Err(StageError::config(zoo::adapters_refused(model)));
        }
        let frames: Vec<bool> = features
            .iter()
            .map(|f| {
                zoo_model.is_some()
                    || p.encoders
                        .get(&f.reference.output)
                        .is_some_and(|e| e.kind == EncoderKind::Lstm)
            })
            .collect();
        let segments = ctx.input(slots::SEGMENTS)?.clone();
        let mut data = Dataset::load(&segments, &features, &frames)?;
        let text_folder = match &p.text_encoder {
            Some(t) => Some(ModelFolder::open(&t.model, t.max_length)?),
            None => None,
        };
        if let Some(folder) = &text_folder {
            let cut = data.tokenize(folder, &segments.reference.to_string())?;
            ctx.report("texts_cut_to_max_length", cut);
        }
        let (train, valid) = (data.rows(Split::Train), data.rows(Split::Valid));
        check_data(
            &data,
            &train,
            &valid,
            p.heads.keys(),
            &segments.reference.to_string(),
        )?;
        let mut arch = architecture_of(p, &data, &train, adapters.as_ref())?;
        if let (Some(t), Some(folder)) = (&p.text_encoder, &text_folder) {
            arch.text = Some(Box::new(TextArchitecture {
                model: t.model.clone(),
                max_length: folder.max_length,
                pooling: t.pooling,
                config: folder.config.clone(),
                freeze: t.freeze,
            }));
        }
        let mut store = ParamStore::new(ctx.seed, &device);
        let model = Model::build(&mut store, &arch, text_folder.as_ref())?;
        let feeds = model.feeds();
        let family = training_family(ctx.stage_id, &data);
        let dataset = arch
            .zoo
            .as_ref()
            .map(|z| z.defaults_from.clone())
            .unwrap_or_default();
        let (weights, config, mmsa) = p.training(&dataset, ctx.seed);
        let groups = match (&mmsa, &p.text_encoder) {
            (Some(training), _) => model.mmsa_groups(&store, training),
            (None, Some(text)) => vec![
                store.vars_without_prefix(text_bert::PREFIX).into(),
                text.group(&store, config.lr, config.steps(train.len())),
            ],
            (None, None) => vec![store.vars().into()],
        };
        check_monitor(&config.monitor, &arch.heads, Some(family))
            .map_err(|e| StageError::config(format!("optim.monitor: {e}")))?;
        let task = Task {
            model: &model,
            data: &data,
            feeds: &feeds,
            adapters: adapters.as_ref(),
            weights: &weights,
            device: &device,
            family,
        };
        let fitted = fit(&task, &store, groups, &train, &valid, &config, ctx.progress)?;
        let arch_report = arch.zoo.clone();
        ModelCheckpoint {
            architecture: arch,
            best_epoch: fitted.best_epoch,
            stopped: fitted.stopped.clone(),
        }
        .save(&store, ctx.output(slots::MODEL)?)?;
        history::write(
            &fitted.history,
            ctx.output(slots::HISTORY)?,
            ctx.table_meta(),
        )?;
        tracing::info!(
            "{}: best epoch {} ({} = {:.4}){}",
            ctx.stage_id,
            fitted.best_epoch,
            config.monitor,
            fitted.best_value,
            fitted
                .stopped
                .as_ref()
                .map(|s| format!("; {s}"))
                .unwrap_or_default()
        );
        ctx.report("parameters", store.count());
        ctx.report("segments", [train.len(), valid.len()]);
        ctx.report("segments_without_every_modality", data.dropped);
        if let Some(zoo) = &arch_report {
            ctx.report("mmsa_defaults_from", &zoo.defaults_from);
            ctx.report("padded_lengths", zoo.lengths);
        }
        ctx.report("best_epoch", fitted.best_epoch);
        ctx.report("best_value", fitted.best_value);
        ctx.report("stopped", fitted.stopped);
        Ok(())
    }
}

/// The model `p` describes over `data`: each modality at the width the adapters (if any) give
/// it, the users of the train rows where users are embedded; or the zoo model `p` names.
fn architecture_of(
    p: &TrainModelParams,
    data: &Dataset,
    train: &[usize],
    adapters: Option<&Adapters>,
) -> Result<Architecture, StageError> {
    let mut users: Vec<String> = train
        .iter()
        .filter_map(|&r| data.users[r].clone())
        .collect();
    users.sort();
    users.dedup();
    let arch = Architecture {
        modalities: data
            .modalities
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    adapters
                        .map(|a| a.output_width(&m.name, m.dim))
                        .unwrap_or(m.dim),
                )
            })
            .collect(),
        encoders: p.encoders.clone(),
        fusion: p.fusion,
        fusion_dim: p.fusion_dim,
        fusion_mlp: p.fusion_mlp.clone(),
        user_embedding: p.user_embedding,
        users: if p.user_embedding > 0 {
            users
        } else {
            Vec::new()
        },
        heads: p.typed_heads(),
        dropout: p.dropout.get(),
        zoo: None,
        text: None,
    };
    Ok(match p.architecture.zoo() {
        Some(model) => Architecture {
            zoo: Some(Box::new(zoo_architecture(model, &p.mmsa, data)?)),
            encoders: BTreeMap::new(),
            users: Vec::new(),
            user_embedding: 0,
            ..arch
        },
        None => arch,
    })
}

/// A zoo model's architecture over `data`: its settings over MMSA's defaults for the
/// segments' dataset, the modalities' roles and their padded lengths.
fn zoo_architecture(
    model: ZooModel,
    settings: &MmsaSettings,
    data: &Dataset,
) -> Result<ZooArchitecture, StageError> {
    let names: Vec<&str> = data.modalities.iter().map(|m| m.name.as_str()).collect();
    let roles = zoo_roles(model, &names).map_err(StageError::config)?;
    let dataset = match data.datasets.len() {
        1 => data.datasets.iter().next().cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let defaults_from = zoo::defaults_dataset(&dataset).to_string();
    zoo::check_aligned(model, data, roles)?;
    let lengths = roles.map(|i| longest(&data.modalities[i]).max(1));
    for &role in model.padded_roles() {
        if lengths[role] > zoo::MAX_PADDED_LENGTH {
            return Err(StageError::input(format!(
                "modality `{}` has a sequence of {} steps: `{}` runs over the whole padded {}, at most {} steps (MMSA's files pad to 39–500)",
                data.modalities[roles[role]].name,
                lengths[role],
                model.name(),
                ROLES[role],
                zoo::MAX_PADDED_LENGTH
            )));
        }
    }
    let settings = settings.resolve(model, &defaults_from);
    if model == ZooModel::Mult {
        if let Some(why) = settings.mult.problem(lengths) {
            return Err(StageError::input(format!(
                "{why} (the longest sequence in the training data)"
            )));
        }
    }
    Ok(ZooArchitecture {
        model,
        settings,
        defaults_from,
        roles,
        lengths,
    })
}
