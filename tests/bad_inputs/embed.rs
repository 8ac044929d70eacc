//! Bad inputs: `embed_text`'s model folder, params and segments (through the CLI).

use super::{check, pipeline, Case};
use crate::embed_text::tiny_model;
use crate::util::Dir;

/// Synthetic segments (they carry no text) embedded with the model folder `model/`.
const EMBED: &str = r#"
[pipeline]
name = "e"

[stages.src]
kind = "synthetic"
params = { profile = "mosi", scale = 0.02 }

[stages.embed]
kind = "embed_text"
inputs = { segments = "src.segments" }
params = { model = "model" PARAMS }
"#;

fn embed_pipeline(d: &Dir, params: &str) {
    pipeline(d, &EMBED.replace("PARAMS", params));
}

/// The synthetic source's outputs (and their run-cache entry), written before `embed` fails.
const SOURCE_OUTPUTS: &[&str] = &["data/runs/e/src", "data/runs/.mmflow-cache"];

#[test]
fn embed_text_bad_inputs() {
    check(&[
        Case {
            what: "a segments table without text",
            setup: |d| {
                tiny_model(&d.join("model"));
                embed_pipeline(d, "");
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &["embed", "column `text`", "no raw text"],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a model folder without config.json",
            setup: |d| {
                tiny_model(&d.join("model"));
                std::fs::remove_file(d.join("model/config.json")).unwrap();
                embed_pipeline(d, "");
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &["embed", "`config.json` is missing"],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a model folder whose config is not BERT's",
            setup: |d| {
                tiny_model(&d.join("model"));
                let path = d.join("model/config.json");
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::write(&path, text.replace("\"bert\"", "\"t5\"")).unwrap();
                embed_pipeline(d, "");
            },
            args: &["run", "p.toml"],
            code: 1,
            says: &[
                "embed",
                "config.json",
                "`model_type`: `t5` is not supported",
            ],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "a model folder that does not exist",
            setup: |d| embed_pipeline(d, ""),
            args: &["run", "p.toml"],
            code: 1,
            says: &["embed", "model"],
            may_write: SOURCE_OUTPUTS,
        },
        Case {
            what: "embed_text params out of range",
            setup: |d| embed_pipeline(d, ", batch_size = 0, max_length = 1, pooling = \"max\""),
            args: &["validate", "p.toml"],
            code: 2,
            says: &[
                "stages.embed.params.batch_size",
                "stages.embed.params.max_length",
                "max",
            ],
            may_write: &[],
        },
    ]);
}
