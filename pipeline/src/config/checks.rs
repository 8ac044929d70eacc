//! The checks `load` runs on a pipeline file once it is read, in order, each a function
//! that reports its own problems: [`check_pipeline`] (the `[pipeline]` table's name, some
//! stages), [`check_stages`] (each stage alone: id, kind, params, input slots and the syntax of
//! their references), [`check_references`] (references name declared stages), [`order`] (a
//! topological order; cycles reported), [`check_outputs`] (in that order, each reference
//! against its upstream stage's outputs, then the stage's own outputs) and
//! [`check_run_settings`] (jobs, run folder, run-cache). [`validate`] runs them and builds
//! the [`Pipeline`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::graph::{shown_cycle, Graph};
use crate::names::{suggest, valid_id, MAX_STAGE_ID};
use crate::problem::{listed, Found, KeyPath};
use crate::stage::{
    Arity, BoundInputs, DynStage, InputRef, InputSlot, OutputPort, ParsedParams, Registry,
    TableKind,
};
use crate::template::{Locator, INSTANCE_MARK};

use super::{derive_seed, Pipeline, PipelineFile, PlannedStage, StageDecl};

/// Most references to a missing stage given a "did you mean": each search compares the name
/// with every stage id, and a template can put one dangling reference in thousands of stages.
const MAX_SUGGESTIONS: usize = 100;

/// Validates a read pipeline file: every check in order, every problem into `found`; the
/// pipeline when the checks got far enough to build one (it is valid only if `found` is
/// empty).
pub(super) fn validate(
    path: &Path,
    file: PipelineFile,
    resolved: toml::Table,
    registry: &Registry,
    map: &Locator,
    found: &mut Found,
) -> Option<Pipeline> {
    let name = check_pipeline(path, &file, map, found);
    let mut drafts = check_stages(&file, registry, map, found);
    check_references(&file, &mut drafts, map, found);
    let order = order(&drafts, map, found);
    let stages = check_outputs(&file, &drafts, order, map, found);
    let (jobs, run_dir) = check_run_settings(&file, &name, map, found);
    Some(Pipeline {
        name,
        file: path.to_path_buf(),
        seed: file.pipeline.seed,
        device: file.pipeline.device,
        device_resolver: registry.device_resolver(),
        jobs,
        run_dir,
        run_cache: file.pipeline.run_cache.clone(),
        stages,
        resolved,
        sweep: file.sweep,
    })
}

/// The pipeline's name (the file's stem unless `[pipeline] name` gives one), which must be a
/// valid name, and at least one stage.
fn check_pipeline(path: &Path, file: &PipelineFile, map: &Locator, found: &mut Found) -> String {
    let name = file.pipeline.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into())
    });
    if !valid_id(&name) {
        found.add(|| {
            map.problem(
                KeyPath::keys(["pipeline", "name"]),
                format!("`{name}` is not a valid name (letters, digits, `_`, `-`)"),
            )
        });
    }
    if file.stages.is_empty() {
        found.add(|| map.problem(KeyPath::keys(["stages"]), "the pipeline has no stages"));
    }
    name
}

/// A stage checked on its own, not yet placed in the graph.
struct Draft {
    id: String,
    stage: Arc<dyn DynStage>,
    params: ParsedParams,
    seed: u64,
    inputs: BoundInputs,
    upstream: BTreeSet<String>,
}

/// Each stage on its own: a valid id, a known kind, params its kind accepts, inputs its kind
/// has with references written `<stage>.<output>`, every required input given. The stages
/// that passed, by id.
fn check_stages(
    file: &PipelineFile,
    registry: &Registry,
    map: &Locator,
    found: &mut Found,
) -> BTreeMap<String, Draft> {
    file.stages
        .iter()
        .filter_map(|(id, decl)| {
            let draft = check_stage(file, id, decl, registry, map, found)?;
            Some((id.clone(), draft))
        })
        .collect()
}

/// One stage of [`check_stages`].
fn check_stage(
    file: &PipelineFile,
    id: &str,
    decl: &StageDecl,
    registry: &Registry,
    map: &Locator,
    found: &mut Found,
) -> Option<Draft> {
    let at = KeyPath::keys(["stages", id]);
    if !valid_stage_id(id) {
        found.add(|| map.problem(
            at.clone(),
            format!("stage ids may only hold letters, digits, `_` and `-` (a template's stages are `<name>{INSTANCE_MARK}<item>`), at most {MAX_STAGE_ID} bytes"),
        ));
        return None;
    }
    let Some(stage) = registry.get(&decl.kind) else {
        let known: Vec<&str> = registry.kinds().map(|k| k.kind()).collect();
        found.add(|| {
            map.value_problem(
                at.key("kind"),
                format!(
                    "unknown stage kind `{}`{}; known kinds: {}",
                    decl.kind,
                    suggest(&decl.kind, known.iter().copied()),
                    known.join(", ")
                ),
            )
        });
        return None;
    };
    let (params, list) = stage.parse_params(toml::Value::Table(decl.params.clone()));
    for p in list {
        found.add(|| map.param_problem(p, &at.key("params")));
    }
    let params = params?;
    let slots = stage.inputs(&params);
    let inputs = bind_inputs(decl, &slots, &at, map, found);
    check_required_inputs(decl, &slots, &at, map, found);
    let seed = decl
        .seed
        .unwrap_or_else(|| derive_seed(file.pipeline.seed, id));
    Some(Draft {
        id: id.to_string(),
        stage,
        params,
        seed,
        inputs,
        upstream: BTreeSet::new(),
    })
}

/// A stage's `inputs` table bound to its kind's slots: each a slot the kind has, holding as
/// many references as the slot takes, each written `<stage>.<output>`.
fn bind_inputs(
    decl: &StageDecl,
    slots: &[InputSlot],
    at: &KeyPath,
    map: &Locator,
    found: &mut Found,
) -> BoundInputs {
    let mut inputs = BoundInputs::new();
    for (slot_name, value) in &decl.inputs {
        let slot_at = at.key("inputs").key(slot_name.as_str());
        let Some(slot) = slots.iter().find(|s| s.name.name() == slot_name) else {
            let names: Vec<&str> = slots.iter().map(|s| s.name.name()).collect();
            found.add(|| {
                map.problem(
                    slot_at,
                    format!(
                        "stage kind `{}` has no input `{slot_name}`{}; its inputs: {}",
                        decl.kind,
                        suggest(slot_name, names.iter().copied()),
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ),
                )
            });
            continue;
        };
        let refs: Vec<(KeyPath, &toml::Value)> = match value {
            toml::Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (slot_at.index(i), v))
                .collect(),
            other => vec![(slot_at.clone(), other)],
        };
        if !matches!(slot.arity, Arity::Many | Arity::AnyNumber) && refs.len() > 1 {
            found.add(|| map.value_problem(slot_at.clone(), "takes a single table, not a list"));
            continue;
        }
        if refs.is_empty() {
            found.add(|| {
                map.value_problem(
                    slot_at.clone(),
                    match slot.arity {
                        Arity::Many => "takes at least one table",
                        Arity::AnyNumber => "names no table: leave the input out to give none",
                        Arity::One => "takes one table; `[]` names none",
                        Arity::Optional => {
                            "takes one table; `[]` names none (leave the input out to give none)"
                        }
                    },
                )
            });
            continue;
        }
        let parsed = refs
            .into_iter()
            .filter_map(|(ref_at, v)| parse_reference(ref_at, v, map, found))
            .collect();
        inputs.insert(slot_name.clone(), parsed);
    }
    inputs
}

/// A reference `"<stage>.<output>"`, or a problem at `at`.
fn parse_reference(
    at: KeyPath,
    v: &toml::Value,
    map: &Locator,
    found: &mut Found,
) -> Option<InputRef> {
    match v.as_str().and_then(|s| s.split_once('.')) {
        Some((stage, output)) if !stage.is_empty() && !output.is_empty() => Some(InputRef {
            stage: stage.to_string(),
            output: output.to_string(),
        }),
        _ => {
            found.add(|| {
                map.value_problem(
                    at,
                    format!("expected a reference \"<stage>.<output>\", found {v}"),
                )
            });
            None
        }
    }
}

/// Every input a stage's kind requires (one table, or one or more) is given.
fn check_required_inputs(
    decl: &StageDecl,
    slots: &[InputSlot],
    at: &KeyPath,
    map: &Locator,
    found: &mut Found,
) {
    for slot in slots {
        if matches!(slot.arity, Arity::One | Arity::Many)
            && !decl.inputs.contains_key(slot.name.name())
        {
            found.add(|| {
                map.problem(
                    at.key("inputs"),
                    format!(
                        "input `{}` is required ({} `{}` table{})",
                        slot.name,
                        if slot.arity == Arity::Many {
                            "one or more"
                        } else {
                            "a"
                        },
                        slot.kind.name,
                        if slot.arity == Arity::Many { "s" } else { "" }
                    ),
                )
            });
        }
    }
}

/// Every reference names a declared stage (with a "did you mean" for the first
/// [`MAX_SUGGESTIONS`] that do not); the stages a draft reads from become its upstream.
fn check_references(
    file: &PipelineFile,
    drafts: &mut BTreeMap<String, Draft>,
    map: &Locator,
    found: &mut Found,
) {
    let mut suggestions = 0;
    for draft in drafts.values_mut() {
        for (slot, refs) in &draft.inputs {
            for (i, r) in refs.iter().enumerate() {
                if file.stages.contains_key(&r.stage) {
                    draft.upstream.insert(r.stage.clone());
                } else {
                    found.add(|| {
                        suggestions += 1;
                        let hint = if suggestions <= MAX_SUGGESTIONS {
                            suggest(&r.stage, file.stages.keys().map(String::as_str))
                        } else {
                            String::new()
                        };
                        map.value_problem(
                            ref_path(file, &draft.id, slot, i),
                            format!("no stage `{}`{hint}", r.stage),
                        )
                    });
                }
            }
        }
    }
}

/// The stages in a topological order, ties broken by id; one cycle of each group of stages
/// that read from one another in a circle is reported, located at its first stage's inputs.
fn order(drafts: &BTreeMap<String, Draft>, map: &Locator, found: &mut Found) -> Vec<String> {
    let ids: Vec<&str> = drafts.keys().map(String::as_str).collect();
    let upstream = drafts
        .values()
        .map(|d| {
            d.upstream
                .iter()
                .filter_map(|u| ids.binary_search(&u.as_str()).ok())
                .collect()
        })
        .collect();
    let graph = Graph::new(upstream);
    for cycle in graph.cycles() {
        let names: Vec<&str> = cycle.iter().map(|&v| ids[v]).collect();
        found.add(|| {
            map.problem(
                KeyPath::keys(["stages", names[0], "inputs"]),
                format!("inputs form a cycle: {}", shown_cycle(&names)),
            )
        });
    }
    graph
        .order()
        .into_iter()
        .map(|v| ids[v].to_string())
        .collect()
}

/// A checked stage's outputs: as it declares them, and the kind of each name (the first
/// output of a name), so that a reference is checked without a search.
struct StageOutputs {
    ports: Vec<OutputPort>,
    kinds: BTreeMap<String, TableKind>,
}

impl StageOutputs {
    fn new(ports: &[OutputPort]) -> Self {
        let mut kinds = BTreeMap::new();
        for port in ports {
            kinds.entry(port.name.clone()).or_insert(port.kind);
        }
        StageOutputs {
            ports: ports.to_vec(),
            kinds,
        }
    }
}

/// In topological order: each stage's references against its upstream stages' outputs (an
/// output they have, of the kind the slot takes), then its own outputs (distinct, valid
/// names). The stages that passed, planned.
fn check_outputs(
    file: &PipelineFile,
    drafts: &BTreeMap<String, Draft>,
    order: Vec<String>,
    map: &Locator,
    found: &mut Found,
) -> Vec<PlannedStage> {
    let mut outputs: BTreeMap<String, StageOutputs> = BTreeMap::new();
    let mut stages = Vec::new();
    for id in order {
        let draft = &drafts[&id];
        if !check_input_kinds(file, draft, &outputs, map, found) {
            continue;
        }
        let at = KeyPath::keys(["stages", id.as_str()]);
        match draft.stage.outputs(&draft.params, &draft.inputs) {
            Ok(ports) => {
                let mut seen = BTreeSet::new();
                for p in &ports {
                    if !seen.insert(p.name.as_str()) || !valid_id(&p.name) {
                        found.add(|| {
                            map.problem(
                                at.clone(),
                                format!("output name `{}` is duplicated or invalid", p.name),
                            )
                        });
                    }
                }
                outputs.insert(id.clone(), StageOutputs::new(&ports));
                stages.push(planned(draft, ports));
            }
            Err(list) => {
                for p in list {
                    found.add(|| map.param_problem(p, &at.key("params")));
                }
            }
        }
    }
    stages
}

/// Whether every reference of `draft` names an output its upstream stage has, of the kind
/// its slot takes (a reference to a stage that failed its own checks fails quietly: that
/// stage's problems are reported).
fn check_input_kinds(
    file: &PipelineFile,
    draft: &Draft,
    outputs: &BTreeMap<String, StageOutputs>,
    map: &Locator,
    found: &mut Found,
) -> bool {
    let slots = draft.stage.inputs(&draft.params);
    let mut refs_ok = true;
    for (slot_name, refs) in &draft.inputs {
        let slot = slots
            .iter()
            .find(|s| s.name.name() == slot_name)
            .expect("bound by `bind_inputs` to one of the kind's slots");
        for (i, r) in refs.iter().enumerate() {
            let Some(upstream) = outputs.get(&r.stage) else {
                refs_ok = false; // upstream invalid: already reported
                continue;
            };
            let at = || ref_path(file, &draft.id, slot_name, i);
            match upstream.kinds.get(&r.output) {
                None => {
                    refs_ok = false;
                    found.add(|| {
                        let names = upstream.ports.iter().map(|p| p.name.as_str());
                        map.value_problem(
                            at(),
                            format!(
                                "stage `{}` has no output `{}`{}; its outputs: {}",
                                r.stage,
                                r.output,
                                suggest(&r.output, names.clone()),
                                listed(names, upstream.ports.len())
                            ),
                        )
                    });
                }
                Some(kind) if *kind != slot.kind => {
                    refs_ok = false;
                    found.add(|| {
                        map.value_problem(
                            at(),
                            format!(
                                "input `{slot_name}` takes `{}` tables, but `{r}` is a `{}` table",
                                slot.kind.name, kind.name
                            ),
                        )
                    });
                }
                Some(_) => {}
            }
        }
    }
    refs_ok
}

/// A stage that passed every check, with its outputs.
fn planned(draft: &Draft, outputs: Vec<OutputPort>) -> PlannedStage {
    PlannedStage {
        id: draft.id.clone(),
        stage: draft.stage.clone(),
        params: draft.params.clone(),
        // A kind that draws nothing at random gets the same seed for every pipeline seed:
        // its outputs, fingerprint and run-cache entry are shared by every seed of a sweep.
        seed: if draft.stage.uses_seed(&draft.params) {
            draft.seed
        } else {
            0
        },
        inputs: draft.inputs.clone(),
        outputs,
        external_files: draft.stage.external_files(&draft.params),
        uses_device: draft.stage.uses_device(&draft.params),
        upstream: draft.upstream.clone(),
    }
}

/// The run's settings: the number of concurrent stages (`jobs = 0`: one per core), the run
/// folder (`data/runs/<name>` unless `run_dir` gives one), and a run-cache that may hold it.
fn check_run_settings(
    file: &PipelineFile,
    name: &str,
    map: &Locator,
    found: &mut Found,
) -> (usize, PathBuf) {
    let jobs = match file.pipeline.jobs {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let run_dir = file
        .pipeline
        .run_dir
        .clone()
        .unwrap_or_else(|| Path::new("data").join("runs").join(name));
    if let Some(why) = file.pipeline.run_cache.problem(&run_dir) {
        found.add(|| map.value_problem(KeyPath::keys(["pipeline", "run_cache"]), why));
    }
    (jobs, run_dir)
}

/// A stage id: a name, or a template instance's `<name>@<item>`, at most [`MAX_STAGE_ID`]
/// bytes.
fn valid_stage_id(id: &str) -> bool {
    id.len() <= MAX_STAGE_ID
        && match id.split_once(INSTANCE_MARK) {
            Some((name, item)) => valid_id(name) && valid_id(item),
            None => valid_id(id),
        }
}

/// The key path of the `i`-th reference of an input slot (the slot itself when it holds a
/// single reference rather than a list).
fn ref_path(file: &PipelineFile, stage: &str, slot: &str, i: usize) -> KeyPath {
    let at = KeyPath::keys(["stages", stage, "inputs", slot]);
    let is_list = file
        .stages
        .get(stage)
        .and_then(|d| d.inputs.get(slot))
        .is_some_and(|v| v.is_array());
    if is_list {
        at.index(i)
    } else {
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::SourceMap;
    use crate::template::Expansion;

    /// `text` read as a pipeline file (it must read without problems), and its locator.
    fn read(text: &str) -> (PipelineFile, Locator) {
        let doc = toml_edit::Document::parse(text.to_string()).unwrap();
        let map = SourceMap::new(Path::new("p.toml"), text.to_string(), Some(doc));
        let map = Locator::new(map, Expansion::default());
        let mut found = Found::default();
        let table: toml::Table = toml::from_str(text).unwrap();
        let file = super::super::read_file(table, &map, &mut found).unwrap();
        assert!(found.is_empty(), "{}", found.into_problems());
        (file, map)
    }

    /// The messages of the problems found.
    fn messages(found: Found) -> Vec<String> {
        found
            .into_problems()
            .shown
            .into_iter()
            .map(|p| p.message)
            .collect()
    }

    /// Reads `text` and runs `check` on it: what it returns, and its problems' messages.
    fn checked<T>(
        text: &str,
        check: impl FnOnce(&PipelineFile, &Locator, &mut Found) -> T,
    ) -> (T, Vec<String>) {
        let (file, map) = read(text);
        let mut found = Found::default();
        let out = check(&file, &map, &mut found);
        (out, messages(found))
    }

    /// Reads `text` and runs the checks up to `check_references`: the file, the drafts, the
    /// problems' messages and the locator.
    fn drafts_of(text: &str) -> (PipelineFile, BTreeMap<String, Draft>, Vec<String>, Locator) {
        let (file, map) = read(text);
        let mut found = Found::default();
        let mut drafts = check_stages(&file, &crate::tests::registry(), &map, &mut found);
        check_references(&file, &mut drafts, &map, &mut found);
        (file, drafts, messages(found), map)
    }

    #[test]
    fn check_pipeline_names_the_pipeline_and_wants_stages() {
        let (name, problems) = checked("[pipeline]\n", |f, m, found| {
            check_pipeline(Path::new("dir/study.toml"), f, m, found)
        });
        assert_eq!(name, "study");
        assert_eq!(problems, ["the pipeline has no stages"]);
        let (name, problems) = checked(
            "[pipeline]\nname = \"a b\"\n[stages.a]\nkind = \"emit\"\n",
            |f, m, found| check_pipeline(Path::new("p.toml"), f, m, found),
        );
        assert_eq!(name, "a b");
        assert_eq!(
            problems,
            ["`a b` is not a valid name (letters, digits, `_`, `-`)"]
        );
    }

    #[test]
    fn check_stages_keeps_the_stages_that_pass_alone() {
        let text = r#"
[stages.ok]
kind = "emit"
[stages."bad id"]
kind = "emit"
[stages.unknown]
kind = "emitt"
[stages.params]
kind = "emit"
params = { valeu = "x" }
[stages.no_slot]
kind = "concat"
inputs = { part = "ok.out", parts = "ok.out" }
[stages.syntax]
kind = "concat"
inputs = { parts = ["ok", "ok.out"] }
[stages.empty]
kind = "concat"
inputs = { parts = [] }
[stages.missing]
kind = "concat"
"#;
        let (drafts, problems) = checked(text, |f, m, found| {
            check_stages(f, &crate::tests::registry(), m, found)
        });
        let kept: Vec<&str> = drafts.keys().map(String::as_str).collect();
        // A bad param is reported and left out; the stage goes on to the next checks.
        assert_eq!(
            kept,
            ["empty", "missing", "no_slot", "ok", "params", "syntax"]
        );
        assert_eq!(drafts["syntax"].inputs["parts"].len(), 1);
        for fragment in [
            "stage ids may only hold letters",
            "unknown stage kind `emitt` (did you mean `emit`?)",
            "valeu",
            "stage kind `concat` has no input `part`",
            "expected a reference \"<stage>.<output>\", found \"ok\"",
            "takes at least one table",
            "input `parts` is required (one or more `text` tables)",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(fragment)),
                "no problem says `{fragment}`: {problems:?}"
            );
        }
        assert_eq!(problems.len(), 7, "{problems:?}");
    }

    #[test]
    fn check_references_wants_declared_stages_and_records_upstream() {
        let text = r#"
[stages.alpha]
kind = "emit"
[stages.c]
kind = "concat"
inputs = { parts = ["alpha.out", "alpah.out"] }
"#;
        let (_, drafts, problems, _) = drafts_of(text);
        assert_eq!(problems, ["no stage `alpah` (did you mean `alpha`?)"]);
        let upstream: Vec<&str> = drafts["c"].upstream.iter().map(String::as_str).collect();
        assert_eq!(upstream, ["alpha"]);
    }

    #[test]
    fn order_puts_upstream_first_and_reports_one_cycle() {
        let text = r#"
[stages.z]
kind = "emit"
[stages.b]
kind = "concat"
inputs = { parts = ["z.out", "c.out"] }
[stages.c]
kind = "concat"
inputs = { parts = "b.out" }
[stages.y]
kind = "concat"
inputs = { parts = "z.out" }
"#;
        let (_, drafts, problems, map) = drafts_of(text);
        assert!(problems.is_empty(), "{problems:?}");
        let mut found = Found::default();
        let ids = order(&drafts, &map, &mut found);
        let position = |id: &str| ids.iter().position(|s| s == id);
        assert!(position("z") < position("y"));
        let problems = found.into_problems();
        assert_eq!(problems.count(), 1, "{problems}");
        assert!(problems.shown[0]
            .message
            .starts_with("inputs form a cycle: "));
    }

    #[test]
    fn check_outputs_wants_an_output_of_the_slots_kind() {
        let text = r#"
[stages.a]
kind = "emit"
[stages.good]
kind = "concat"
inputs = { parts = "a.out" }
[stages.missing]
kind = "concat"
inputs = { parts = "a.outt" }
[stages.kind]
kind = "concat"
inputs = { parts = "a.other" }
[stages.after]
kind = "concat"
inputs = { parts = "missing.out" }
"#;
        let (file, drafts, problems, map) = drafts_of(text);
        assert!(problems.is_empty(), "{problems:?}");
        let mut found = Found::default();
        let ids = order(&drafts, &map, &mut found);
        let stages = check_outputs(&file, &drafts, ids, &map, &mut found);
        let planned: Vec<&str> = stages.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(planned, ["a", "good"]);
        assert_eq!(
            messages(found),
            // Sorted by place in the file.
            [
                "stage `a` has no output `outt` (did you mean `out`?); its outputs: out, other",
                "input `parts` takes `text` tables, but `a.other` is a `other` table",
            ]
        );
    }

    #[test]
    fn check_run_settings_places_the_run_and_refuses_a_cache_holding_it() {
        let ((jobs, run_dir), problems) = checked(
            "[pipeline]\njobs = 3\nrun_cache = \"data\"\n",
            |f, m, found| check_run_settings(f, "study", m, found),
        );
        assert_eq!(jobs, 3);
        assert_eq!(run_dir, Path::new("data/runs/study"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        let ((jobs, _), problems) = checked("[pipeline]\n", |f, m, found| {
            check_run_settings(f, "study", m, found)
        });
        assert!(jobs >= 1);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
