//! Bad inputs: pipeline files and `--set` overrides.

use super::{check, mkfifo, pipeline, Case};
use crate::hostile::shapes;
use crate::util::{Dir, SMALL};

/// `ALIGNED` reading its folds from `folds.json` (written by the row), with data files that
/// are never read: the folds are checked first.
fn aligned_with_folds_file(d: &Dir) {
    pipeline(
        d,
        &ALIGNED.replace("fps = FPS", "fps = 30").replace(
            "dataset = \"mosi\"",
            "dataset = \"mosi\"\nfolds = \"folds.json\"",
        ),
    );
    for file in ["labels.npz", "words.npz", "visual.npz"] {
        d.write(file, "never read: the folds are checked first");
    }
}

const CASES: &[Case] = &[
    Case {
        what: "a training setting written where it was before the `optim` table",
        setup: |d| pipeline(d, &TRAIN.replace("PARAMS", "learning_rate = 0.01")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:8:",
            "`stages.model.params.learning_rate`: `learning_rate` has moved: write it as `optim.learning_rate`",
        ],
        may_write: &[],
    },
    Case {
        what: "a finetune phase's old learning rate and the stage's old batch size",
        setup: |d| {
            pipeline(
                d,
                &format!(
                    "{}\n[stages.tune]\nkind = \"finetune\"\ninputs = {{ model = \"model.model\", segments = \"mosi.segments\", features = [\"mosi.text\"] }}\nparams = {{ batch_size = 8, phases = [{{ name = \"a\", learning_rate = 0.1 }}] }}\n",
                    TRAIN.replace("PARAMS", "")
                ),
            )
        },
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "`stages.tune.params.batch_size`: `batch_size` has moved: write it as `phases[…].optim.batch_size`",
            "`stages.tune.params.phases[0].learning_rate`: `learning_rate` has moved: write it as `optim.learning_rate`",
        ],
        may_write: &[],
    },
    Case {
        what: "a monitor naming a head the model does not have",
        setup: |d| pipeline(d, &TRAIN.replace("PARAMS", "optim = { monitor = \"valence:ccc\" }")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:8:",
            "`stages.model.params.optim.monitor`: `valence` is not a head of the model (heads: sentiment)",
        ],
        may_write: &[],
    },
    Case {
        what: "an evaluation forced to a metric family MMSA does not have",
        setup: |d| {
            pipeline(
                d,
                &format!(
                    "{}\n[stages.eval]\nkind = \"evaluate\"\ninputs = {{ model = \"model.model\", segments = \"mosi.segments\", features = [\"mosi.text\"] }}\nparams = {{ metrics = \"chsims\" }}\n",
                    TRAIN.replace("PARAMS", "")
                ),
            )
        },
        args: &["validate", "p.toml"],
        code: 2,
        says: &["`stages.eval.params.metrics`", "`chsims`", "`mosi`", "`sims`"],
        may_write: &[],
    },
    Case {
        what: "a monitor with an unknown measure",
        setup: |d| pipeline(d, &TRAIN.replace("PARAMS", "optim = { monitor = \"sentiment:acc\" }")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:8:",
            "`stages.model.params.optim.monitor`",
            "unknown measure `acc` in `sentiment:acc`",
        ],
        may_write: &[],
    },
    Case {
        what: "a CSV setting written where it was before the `csv` table",
        setup: |d| {
            pipeline(
                d,
                &ALIGNED.replace("fps = FPS", "timestamp_column = \"time\""),
            )
        },
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:8:",
            "`stages.src.params.modalities.visual.timestamp_column`: `timestamp_column` has moved: write it as `csv.timestamp_column`",
        ],
        may_write: &[],
    },
    Case {
        what: "CSV settings for an npz file",
        setup: |d| pipeline(d, &ALIGNED.replace("fps = FPS", "csv = { video_column = \"video\" }")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:8:",
            "`stages.src.params.modalities.visual.csv`: `csv` settings apply to CSV files only; this file's format is `npz`",
        ],
        may_write: &[],
    },
    Case {
        what: "a cosine setting on a k-means target stage",
        setup: |d| pipeline(d, &TARGETS.replace("METHOD", "method = \"kmeans\", top_k = 3")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["`stages.t.params.top_k`: unknown key `top_k`, expected one of `k`"],
        may_write: &[],
    },
    Case {
        what: "a k-means setting of the wrong type",
        setup: |d| pipeline(d, &TARGETS.replace("METHOD", "method = \"kmeans\", k = \"many\"")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:10:35:",
            "`stages.t.params.k`: invalid type: string \"many\", expected usize",
        ],
        may_write: &[],
    },
    Case {
        what: "an unknown target method",
        setup: |d| pipeline(d, &TARGETS.replace("METHOD", "method = \"kmedoids\"")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:10:21:",
            "`stages.t.params.method`: unknown method `kmedoids`: `random`, `kmeans` or `cosine`",
        ],
        may_write: &[],
    },
    Case {
        what: "TOML syntax error",
        setup: |d| pipeline(d, "[pipeline\nname = 1\n"),
        args: &["run", "p.toml"],
        code: 2,
        says: &["p.toml:1:"],
        may_write: &[],
    },
    Case {
        what: "override of a key that does not exist",
        setup: |d| pipeline(d, SMALL),
        args: &["run", "p.toml", "--set", "stages.mosi.params.nope=1"],
        code: 2,
        says: &["--set stages.mosi.params.nope=1", "unknown key"],
        may_write: &[],
    },
    Case {
        what: "an empty list for a one-table input",
        setup: |d| pipeline(d, &ONE_SOURCE.replace("SEGMENTS", "[]")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:6:", "`stages.norm.inputs.segments`: takes one table; `[]` names none"],
        may_write: &[],
    },
    Case {
        what: "fps = inf",
        setup: |d| pipeline(d, &ALIGNED.replace("FPS", "inf")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[FPS_AT, "finite number > 0, not inf"],
        may_write: &[],
    },
    Case {
        what: "fps = nan",
        setup: |d| pipeline(d, &ALIGNED.replace("FPS", "nan")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[FPS_AT, "finite number > 0, not NaN"],
        may_write: &[],
    },
    Case {
        what: "fps = 0",
        setup: |d| pipeline(d, &ALIGNED.replace("FPS", "0.0")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[FPS_AT, "finite number > 0, not 0"],
        may_write: &[],
    },
    Case {
        what: "fps = -1 (given as an override)",
        setup: |d| pipeline(d, &ALIGNED.replace("FPS", "30")),
        args: &["run", "p.toml", "--set", "stages.src.params.modalities.visual.fps=-1"],
        code: 2,
        says: &[
            "--set stages.src.params.modalities.visual.fps=-1",
            "finite number > 0, not -1",
        ],
        may_write: &[],
    },
    Case {
        what: "dim = 0",
        setup: |d| pipeline(d, &ALIGNED.replace("fps = FPS", "dim = 0")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:8:",
            "`stages.src.params.modalities.visual.dim`: the feature width must be between 1 and 1048576, not 0",
        ],
        may_write: &[],
    },
    Case {
        what: "an absurd dim",
        setup: |d| pipeline(d, &ALIGNED.replace("fps = FPS", "dim = 1000000000000")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:8:", "between 1 and 1048576, not 1000000000000"],
        may_write: &[],
    },
    Case {
        what: "a label name with a comma",
        setup: |d| {
            pipeline(
                d,
                &ALIGNED.replace("fps = FPS", "fps = 30").replace(
                    "dataset = \"mosi\"",
                    "dataset = \"mosi\"\nlabel_columns = [\"valence,arousal\"]",
                ),
            )
        },
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:5:",
            "`stages.src.params.label_columns[0]`: label name `valence,arousal` holds a comma",
        ],
        may_write: &[],
    },
    Case {
        what: "duplicate label columns",
        setup: |d| {
            pipeline(
                d,
                &ALIGNED.replace("fps = FPS", "fps = 30").replace(
                    "dataset = \"mosi\"",
                    "dataset = \"mosi\"\nlabel_columns = [\"valence\", \"arousal\", \"valence\"]",
                ),
            )
        },
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:5:",
            "`stages.src.params.label_columns[2]`: label name `valence` is repeated",
        ],
        may_write: &[],
    },
    Case {
        what: "duplicate CSV columns",
        setup: |d| {
            pipeline(
                d,
                &ALIGNED.replace(
                    "fps = FPS",
                    "format = \"csv\", csv = { columns = [\"AU01\", \"AU02\", \"AU01\"] }",
                ),
            )
        },
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:8:",
            "`stages.src.params.modalities.visual.csv.columns[2]`: column `AU01` is listed twice",
        ],
        may_write: &[],
    },
    Case {
        what: "folds with a video in two splits",
        setup: |d| {
            aligned_with_folds_file(d);
            d.write(
                "folds.json",
                r#"{"train": ["v1", "v2"], "valid": ["v3"], "test": ["v2"]}"#,
            );
        },
        args: &["run", "p.toml"],
        code: 1,
        says: &["folds.json: video `v2` is in both `train` and `test`"],
        may_write: super::csv::RUN_BOOKKEEPING,
    },
    Case {
        what: "the pipeline file is a FIFO",
        setup: |d| mkfifo(d, "p.toml"),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml", "a FIFO"],
        may_write: &[],
    },
    Case {
        what: "a pipeline file of 8 MiB with a dangling reference in every entry",
        setup: |d| {
            let refs = vec!["\"nowhere.text\""; 500_000].join(", ");
            pipeline(
                d,
                &format!("{SMALL}\n[stages.big]\nkind = \"normalize\"\ninputs = {{ segments = \"mosi.segments\", features = [{refs}] }}\n"),
            );
        },
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml", "a pipeline file is at most 1048576 bytes"],
        may_write: &[],
    },
    Case {
        what: "a pipeline file with 50,000 dangling references",
        setup: |d| {
            let refs = vec!["\"nowhere.text\""; 50_000].join(", ");
            pipeline(
                d,
                &format!("{SMALL}\n[stages.big]\nkind = \"normalize\"\ninputs = {{ segments = \"mosi.segments\", features = [{refs}] }}\n"),
            );
        },
        args: &["validate", "p.toml"],
        code: 2,
        says: &["no stage `nowhere`", "more problems not shown", "problems in p.toml"],
        may_write: &[],
    },
    Case {
        what: "the folds file is a FIFO",
        setup: |d| {
            aligned_with_folds_file(d);
            mkfifo(d, "folds.json");
        },
        args: &["run", "p.toml"],
        code: 1,
        says: &["folds.json", "a FIFO"],
        may_write: super::csv::RUN_BOOKKEEPING,
    },
    Case {
        what: "a --set key of 60,000 keys",
        setup: |d| pipeline(d, SMALL),
        args: &["validate", "p.toml", "--set", DEEP_KEY],
        code: 2,
        says: &["--set a.a.a.a", "(120001 bytes): the key path is 119999 bytes long; at most 1024"],
        may_write: &[],
    },
    Case {
        what: "a --set key of 38 keys",
        setup: |d| pipeline(d, SMALL),
        args: &[
            "validate",
            "p.toml",
            "--set",
            "stages.mosi.params.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h.i=1",
        ],
        code: 2,
        says: &["the key path holds 38 keys; at most 32"],
        may_write: &[],
    },
    Case {
        what: "--set without =",
        setup: |d| pipeline(d, SMALL),
        args: &["validate", "p.toml", "--set", "stages.mosi.seed"],
        code: 2,
        says: &["--set stages.mosi.seed", "expected `path.to.key=value`"],
        may_write: &[],
    },
    Case {
        what: "unknown stage kind",
        setup: |d| pipeline(d, "[stages.a]\nkind = \"normalise\"\n"),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:2:8", "unknown stage kind `normalise` (did you mean `normalize`?)"],
        may_write: &[],
    },
    Case {
        what: "a cycle",
        setup: |d| {
            pipeline(
                d,
                "[stages.a]\nkind = \"normalize\"\ninputs = { segments = \"b.segments\", features = [\"b.text\"] }\n\
                 [stages.b]\nkind = \"normalize\"\ninputs = { segments = \"a.segments\", features = [\"a.text\"] }\n",
            )
        },
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:3:", "inputs form a cycle"],
        may_write: &[],
    },
    Case {
        what: "an input naming no stage",
        setup: |d| pipeline(d, &ONE_SOURCE.replace("SEGMENTS", "\"ghost.segments\"")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:6:", "no stage `ghost`"],
        may_write: &[],
    },
    Case {
        what: "the wrong table kind for a slot",
        setup: |d| pipeline(d, &ONE_SOURCE.replace("SEGMENTS", "\"mosi.text\"")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:6:",
            "input `segments` takes `segments` tables, but `mosi.text` is a `features` table",
        ],
        may_write: &[],
    },
    Case {
        what: "a template with an empty foreach",
        setup: |d| templated(d, "foreach = []"),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:24:11", "`templates.each.foreach`: `foreach` is empty"],
        may_write: &[],
    },
    Case {
        what: "a template with both foreach and matrix",
        setup: |d| templated(d, "foreach = [\"mosi\"]\nmatrix = { k = [1] }"),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:25:1", "a template takes `foreach` or `matrix`, not both"],
        may_write: &[],
    },
    Case {
        what: "an unknown name in a template",
        setup: |d| pipeline(d, &with_template("foreach = [\"mosi\"]").replace("${item}.segments", "${itme}.segments")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:27:23", "unknown name `${itme}` (did you mean `${item}`?)"],
        may_write: &[],
    },
    Case {
        what: "an unterminated ${ in a template",
        setup: |d| pipeline(d, &with_template("foreach = [\"mosi\"]").replace("${item}.text", "${item.text")),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:27:", "unterminated `${`"],
        may_write: &[],
    },
    Case {
        what: "a template item listed twice",
        setup: |d| templated(d, "foreach = [\"mosi\", \"mosi\"]"),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:24:20", "`mosi` is listed twice"],
        may_write: &[],
    },
    Case {
        what: "a template item that is a table in a list",
        setup: |d| templated(d, "foreach = [{ name = \"mosi\" }]"),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:24:12", "an item is a string, a number or a boolean, not a table"],
        may_write: &[],
    },
    Case {
        what: "an expanded stage id taken by an ordinary stage",
        setup: |d| {
            pipeline(
                d,
                &format!("{}[stages.\"text@mosi\"]\nkind = \"normalize\"\n", with_template("foreach = [\"mosi\"]")),
            )
        },
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:25:", "expands to `text@mosi`, which is also an ordinary stage's id"],
        may_write: &[],
    },
    Case {
        what: "a template matrix of 40,401 stages",
        setup: |d| {
            let values = (0..201).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
            templated(d, &format!("matrix = {{ a = [{values}], b = [{values}] }}"))
        },
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:24:10", "the matrix has 40401 combinations; a file's templates expand to at most 10000 stages"],
        may_write: &[],
    },
    Case {
        what: "a problem in an expanded stage",
        setup: |d| templated(d, "foreach = [\"mosi\", \"nowhere\"]"),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:27:23: `stages.text@nowhere.inputs.segments`: no stage `nowhere`"],
        may_write: &[],
    },
    Case {
        what: "an override of an expanded stage that does not exist",
        setup: |d| templated(d, "foreach = [\"mosi\"]"),
        args: &["validate", "p.toml", "--set", "stages.text@mosei.seed=1"],
        code: 2,
        says: &[
            "--set stages.text@mosei.seed=1",
            "no stage `text@mosei` (did you mean `text@mosi`?)",
        ],
        may_write: &[],
    },
    Case {
        what: "a ring of 10,000 template instances",
        setup: |d| pipeline(d, &shapes::ring(10_000)),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:8:1: `stages.n@i0.inputs`: inputs form a cycle: n@i0 → n@i9999 → n@i9998 → ",
            " → … (9980 more stages) … → ",
            "error: 1 problem in p.toml",
        ],
        may_write: &[],
    },
    Case {
        what: "50,000 references to a value all items but one lack",
        setup: |d| pipeline(d, &shapes::missing_names(10_000, 50_000)),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:8:17: `templates.t.stages.n.params.p[0]`: item `a1` has no value for `${item.x}` (expanding `n@a1` from `templates.t.stages.n`)",
            "more problems not shown; checking stopped after",
            "problems in p.toml",
        ],
        may_write: &[],
    },
    Case {
        what: "50,000 references to a name no item gives",
        setup: |d| pipeline(d, &shapes::unknown_names(2_000, 50_000)),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:8:17: `templates.t.stages.n.params.p[0]`: unknown name `${item.g}`",
            "`${item.f1013}`, … (1981 more)",
            "… and 49800 more problems not shown",
            "error: 50000 problems in p.toml",
        ],
        may_write: &[],
    },
    Case {
        what: "a matrix whose combinations hold more than 8 MiB",
        setup: |d| pipeline(d, &shapes::wide_matrix(10_000, 50_000)),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:5:10: `templates.t.matrix`: the matrix's 10000 combinations hold more than 8388608 bytes of values and labels"],
        may_write: &[],
    },
    Case {
        what: "1,100 templates of 10,000 stages each",
        setup: |d| pipeline(d, &shapes::many_templates(1_100, 100)),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:4:2: `templates`: the templates expand to 11000000 stages; at most 10000"],
        may_write: &[],
    },
    Case {
        what: "a template item of 880,000 bytes",
        setup: |d| pipeline(d, &shapes::long_label(880_000, 3_000)),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:6:21: `templates.t.stages.n`: expands to a stage id of 880002 bytes",
            "… and 2800 more problems not shown",
            "error: 3000 problems in p.toml",
        ],
        may_write: &[],
    },
    Case {
        what: "an unknown key in 10,000 template instances",
        setup: |d| pipeline(d, &shapes::unknown_key_in_every_instance(10_000)),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:8:1: `stages.n@i0.colour`: unknown key `colour`",
            "more problems not shown; checking stopped after",
        ],
        may_write: &[],
    },
    Case {
        what: "50,000 unknown params of one stage",
        setup: |d| pipeline(d, &shapes::unknown_params(50_000)),
        args: &["validate", "p.toml"],
        code: 2,
        says: &[
            "p.toml:7:1: `stages.n.params`: checking stopped here after 16 problems; there may be more",
            "p.toml:8:1: `stages.n.params.k0`: unknown key `k0`",
            "error: 17 problems in p.toml",
        ],
        may_write: &[],
    },
    Case {
        what: "100,000 inline tables left open around `[…]`",
        setup: |d| pipeline(d, &shapes::unclosed_tables(100_000)),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:103:7: invalid TOML: more than 100 arrays and inline tables open at once"],
        may_write: &[],
    },
    Case {
        what: "an override nesting 10,000 inline tables",
        setup: |d| pipeline(d, SMALL),
        args: &["validate", "p.toml", "--set", UNCLOSED_TABLES],
        code: 2,
        says: &["--set stages.mosi.params.scale=p = { [s]", "invalid type: string"],
        may_write: &[],
    },
    Case {
        what: "a pipeline file that is a directory",
        setup: |d| std::fs::create_dir(d.join("p.toml")).unwrap(),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml: cannot read the pipeline file"],
        may_write: &[],
    },
];

/// `SMALL` (22 lines) with a template `each` over `ITEMS` (line 24) normalizing the text of
/// `${item}`: its `inputs` are on line 27.
const TEMPLATE: &str = "[templates.each]
ITEMS
[templates.each.stages.text]
kind = \"normalize\"
inputs = { segments = \"${item}.segments\", features = [\"${item}.text\"] }
";

/// `SMALL` with `TEMPLATE` over `items`.
fn with_template(items: &str) -> String {
    format!("{SMALL}{}", TEMPLATE.replace("ITEMS", items))
}

/// Writes `SMALL` with `TEMPLATE` over `items`.
fn templated(d: &Dir, items: &str) {
    pipeline(d, &with_template(items))
}

/// A source and a normalize stage whose `segments` input is `SEGMENTS`.
const ONE_SOURCE: &str = "[stages.mosi]
kind = \"synthetic\"
params = { profile = \"mosi\", scale = 0.1 }
[stages.norm]
kind = \"normalize\"
inputs = { segments = SEGMENTS, features = [\"mosi.text\"] }
";

/// An `npz` source whose `visual` modality has `fps = FPS` (line 8).
/// A synthetic MOSI and a model on it; `PARAMS` is the model's params.
const TRAIN: &str = "[stages.mosi]
kind = \"synthetic\"
params = { profile = \"mosi\", scale = 0.1 }
[stages.model]
kind = \"train_model\"
inputs = { segments = \"mosi.segments\", features = [\"mosi.text\"] }
[stages.model.params]
PARAMS
";

/// Target selection between two synthetic datasets; `METHOD` is its params.
const TARGETS: &str = "[stages.mosi]
kind = \"synthetic\"
params = { profile = \"mosi\", scale = 0.1 }
[stages.mosei]
kind = \"synthetic\"
params = { profile = \"mosei\", scale = 0.01 }
[stages.t]
kind = \"select_targets\"
inputs = { source_segments = \"mosi.segments\", source = [\"mosi.text\", \"mosi.visual\"], target_segments = \"mosei.segments\", target = [\"mosei.text\", \"mosei.visual\"] }
params = { METHOD }
";

const ALIGNED: &str = "[stages.src]
kind = \"npz\"
[stages.src.params]
dataset = \"mosi\"
labels = { path = \"labels.npz\" }
[stages.src.params.modalities]
words = { path = \"words.npz\" }
visual = { path = \"visual.npz\", fps = FPS }
";

/// Where `ALIGNED`'s `fps` value is.
const FPS_AT: &str =
    "p.toml:8:39: `stages.src.params.modalities.visual.fps`: frames per second must be a";

/// `--set a.a.a…=1` with 60,000 keys (120,001 bytes: under Linux's 128 KiB per argument).
const DEEP_KEY: &str = {
    const KEYS: usize = 60_000;
    const LEN: usize = 2 * KEYS + 1;
    // Built once at compile time; only its `&str` view is used.
    #[expect(
        clippy::large_const_arrays,
        reason = "built once at compile time; only its `&str` view is used"
    )]
    const BYTES: [u8; LEN] = {
        let mut bytes = [b'a'; LEN];
        let mut i = 1;
        while i < 2 * KEYS - 1 {
            bytes[i] = b'.';
            i += 2;
        }
        bytes[LEN - 2] = b'=';
        bytes[LEN - 1] = b'1';
        bytes
    };
    match std::str::from_utf8(&BYTES) {
        Ok(key) => key,
        Err(_) => panic!("ASCII"),
    }
};

/// `--set stages.mosi.params.scale=p = { [s]…` with 10,000 inline tables left open, each
/// around a `[…]` where a key belongs (100,025 bytes: under Linux's 128 KiB per argument).
const UNCLOSED_TABLES: &str = {
    const PREFIX: &[u8] = b"stages.mosi.params.scale=";
    const PART: &[u8] = b"p = { [s]\n";
    const LEN: usize = PREFIX.len() + PART.len() * 10_000;
    #[expect(
        clippy::large_const_arrays,
        reason = "built once at compile time; only its `&str` view is used"
    )]
    const BYTES: [u8; LEN] = {
        let mut bytes = [0; LEN];
        let mut i = 0;
        while i < LEN {
            bytes[i] = if i < PREFIX.len() {
                PREFIX[i]
            } else {
                PART[(i - PREFIX.len()) % PART.len()]
            };
            i += 1;
        }
        bytes
    };
    match std::str::from_utf8(&BYTES) {
        Ok(arg) => arg,
        Err(_) => panic!("ASCII"),
    }
};

#[test]
fn bad_config_inputs_fail_cleanly() {
    check(CASES);
}
