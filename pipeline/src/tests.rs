//! Engine tests with toy stage kinds that write small text files.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::executor::{run, RunOptions, StageOutcome};
use crate::manifest::Manifest;
use crate::{
    load, Arity, BoundInputs, DeviceChoice, InputSlot, OutputPort, ParamProblem, Registry,
    ResolvedDevice, RunContext, StageError, StageKind, TableKind,
};

const TEXT: TableKind = TableKind {
    name: "text",
    extension: "txt",
};
const OTHER: TableKind = TableKind {
    name: "other",
    extension: "txt",
};

/// `emit`: writes `value` to output `out`.
struct Emit;

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct EmitParams {
    /// The text written.
    value: String,
    /// Fail instead (after writing a partial output).
    fail: bool,
    /// Wait on the shared barrier first (to prove concurrency).
    rendezvous: bool,
}

static BARRIER: Mutex<Option<Arc<Barrier>>> = Mutex::new(None);
/// Held by each test that uses [`BARRIER`], so no two of them meet at it.
static BARRIER_USERS: Mutex<()> = Mutex::new(());

impl StageKind for Emit {
    type Params = EmitParams;
    const KIND: &'static str = "emit";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "writes a value";
    fn inputs(&self, _: &EmitParams) -> Vec<InputSlot> {
        Vec::new()
    }
    fn outputs(
        &self,
        _: &EmitParams,
        _: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        Ok(vec![
            OutputPort::new("out", TEXT),
            OutputPort::new("other", OTHER),
        ])
    }
    fn run(&self, p: &EmitParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        if p.rendezvous {
            let barrier = BARRIER.lock().unwrap().clone().unwrap();
            barrier.wait();
        }
        fs::write(ctx.output("out")?, &p.value).unwrap();
        if p.fail {
            return Err(StageError::input("told to fail"));
        }
        fs::write(ctx.output("other")?, "x").unwrap();
        ctx.report("length", p.value.len());
        Ok(())
    }
}

/// `concat`: concatenates its inputs and a suffix.
struct Concat;

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct ConcatParams {
    /// Appended to the concatenation.
    suffix: String,
}

impl StageKind for Concat {
    type Params = ConcatParams;
    const KIND: &'static str = "concat";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "concatenates texts";
    fn inputs(&self, _: &ConcatParams) -> Vec<InputSlot> {
        vec![InputSlot {
            name: "parts",
            kind: TEXT,
            arity: Arity::Many,
            about: "texts",
        }]
    }
    fn outputs(
        &self,
        _: &ConcatParams,
        _: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        Ok(vec![OutputPort::new("out", TEXT)])
    }
    fn uses_seed(&self, _: &ConcatParams) -> bool {
        false
    }
    fn run(&self, p: &ConcatParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let mut s = String::new();
        for input in ctx.inputs("parts") {
            s.push_str(&fs::read_to_string(&input.path).unwrap());
        }
        s.push_str(&p.suffix);
        fs::write(ctx.output("out")?, s).unwrap();
        Ok(())
    }
}

/// `compute`: writes the device it was given (a stand-in for a training stage).
struct Compute;

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct ComputeParams {}

impl StageKind for Compute {
    type Params = ComputeParams;
    const KIND: &'static str = "compute";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "writes its device";
    fn inputs(&self, _: &ComputeParams) -> Vec<InputSlot> {
        Vec::new()
    }
    fn outputs(
        &self,
        _: &ComputeParams,
        _: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        Ok(vec![OutputPort::new("out", TEXT)])
    }
    fn uses_device(&self, _: &ComputeParams) -> bool {
        true
    }
    fn run(&self, _: &ComputeParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        fs::write(ctx.output("out")?, ctx.device.to_string()).unwrap();
        Ok(())
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Emit).register(Concat).register(Compute);
    r
}

const PIPELINE: &str = r#"
[pipeline]
name = "toy"

[stages.a]
kind = "emit"
params = { value = "A" }

[stages.b]
kind = "emit"
params = { value = "B" }

[stages.ab]
kind = "concat"
inputs = { parts = ["a.out", "b.out"] }
params = { suffix = "!" }

[stages.c]
kind = "concat"
inputs = { parts = "b.out" }
"#;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("p.toml"), text).unwrap();
        Setup { dir }
    }
    fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("p.toml")
    }
    fn run_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("run")
    }
    fn pipeline(&self, set: &[&str]) -> crate::Pipeline {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        let mut p = load(&self.file(), &set, &registry()).unwrap_or_else(|e| panic!("{e}"));
        p.run_dir = self.run_dir();
        p
    }
    fn run(&self, set: &[&str]) -> Vec<(String, StageOutcome)> {
        run(&self.pipeline(set), &RunOptions::default())
            .unwrap()
            .stages
    }
    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.run_dir().join(rel)).unwrap()
    }
}

fn ran(outcomes: &[(String, StageOutcome)]) -> BTreeSet<String> {
    outcomes
        .iter()
        .filter(|(_, o)| matches!(o, StageOutcome::Ran { .. }))
        .map(|(id, _)| id.clone())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn runs_everything_then_nothing() {
    let s = Setup::new(PIPELINE);
    assert_eq!(ran(&s.run(&[])), set(&["a", "b", "ab", "c"]));
    assert_eq!(s.read("ab/out.txt"), "AB!");
    assert_eq!(s.read("c/out.txt"), "B");
    let second = s.run(&[]);
    assert!(
        second
            .iter()
            .all(|(_, o)| matches!(o, StageOutcome::UpToDate)),
        "{second:?}"
    );
    let manifest = Manifest::load(&s.run_dir()).unwrap();
    let a = &manifest.stages["a"];
    assert_eq!(a.report["length"], 1);
    assert_eq!(a.outputs["out"].size, 1);
    assert_eq!(a.inputs.len(), 0);
    assert_eq!(manifest.stages["ab"].inputs["parts"].len(), 2);
}

#[test]
fn a_param_change_reruns_the_stage_and_its_dependents_only() {
    let s = Setup::new(PIPELINE);
    s.run(&[]);
    let outcomes = s.run(&["stages.a.params.value=\"Z\""]);
    assert_eq!(ran(&outcomes), set(&["a", "ab"]));
    assert_eq!(s.read("ab/out.txt"), "ZB!");
    let reason = outcomes
        .iter()
        .find_map(|(id, o)| match o {
            StageOutcome::Ran { reason, .. } if id == "a" => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("value"), "{reason}");
    // A change that leaves the output identical stops there.
    s.run(&[]);
    let outcomes = s.run(&["stages.b.params.fail=false"]);
    assert!(
        ran(&outcomes).is_empty(),
        "defaults made explicit do not change the fingerprint"
    );
}

#[test]
fn deleted_or_modified_outputs_rerun_their_stage() {
    // Without the run-cache, which would restore them (see the run-cache tests below).
    let no_cache = ["pipeline.run_cache=false"];
    let s = Setup::new(PIPELINE);
    s.run(&no_cache);
    fs::remove_file(s.run_dir().join("a/out.txt")).unwrap();
    assert_eq!(
        ran(&s.run(&no_cache)),
        set(&["a"]),
        "same content again: dependents stay cached"
    );
    fs::write(s.run_dir().join("ab/out.txt"), "tampered").unwrap();
    assert_eq!(ran(&s.run(&no_cache)), set(&["ab"]));
    assert_eq!(s.read("ab/out.txt"), "AB!");
}

#[test]
fn force_reruns_one_stage() {
    let s = Setup::new(PIPELINE);
    s.run(&[]);
    let options = RunOptions {
        force: set(&["b"]),
        ..Default::default()
    };
    let outcomes = run(&s.pipeline(&[]), &options).unwrap().stages;
    assert_eq!(ran(&outcomes), set(&["b"]));
}

#[test]
fn a_failed_stage_leaves_no_partial_output_and_stops_its_dependents() {
    let s = Setup::new(PIPELINE);
    let outcomes = s.run(&["stages.a.params.fail=true"]);
    let failed = |id: &str| {
        outcomes
            .iter()
            .any(|(i, o)| i == id && matches!(o, StageOutcome::Failed { .. }))
    };
    assert!(failed("a"));
    assert!(outcomes
        .iter()
        .any(|(i, o)| i == "ab" && matches!(o, StageOutcome::NotRun)));
    assert!(
        !s.run_dir().join("a/out.txt").exists(),
        "the partial output stays in a temp dir"
    );
    let leftovers: Vec<_> = fs::read_dir(s.run_dir().join("a")).unwrap().collect();
    assert!(leftovers.is_empty(), "temp dir removed: {leftovers:?}");
    let manifest = Manifest::load(&s.run_dir()).unwrap();
    assert!(!manifest.stages.contains_key("a"));
    // The next good run completes.
    assert!(ran(&s.run(&[])).contains("a"));
    assert_eq!(s.read("ab/out.txt"), "AB!");
}

#[test]
fn a_second_run_on_the_same_directory_is_refused() {
    let s = Setup::new(PIPELINE);
    fs::create_dir_all(s.run_dir()).unwrap();
    let _held = crate::runlock::RunLock::acquire(&s.run_dir(), false).unwrap();
    let err = match run(&s.pipeline(&[]), &RunOptions::default()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the second run must be refused"),
    };
    assert!(err.contains("another `mmflow run`"), "{err}");
}

#[test]
fn independent_stages_run_concurrently() {
    let s = Setup::new(PIPELINE);
    let _turn = BARRIER_USERS.lock().unwrap_or_else(|e| e.into_inner());
    *BARRIER.lock().unwrap() = Some(Arc::new(Barrier::new(2)));
    let mut p = s.pipeline(&[
        "stages.a.params.rendezvous=true",
        "stages.b.params.rendezvous=true",
    ]);
    p.jobs = 2;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(&p, &RunOptions::default()).map(|s| s.failed()));
    });
    // Run sequentially, `a` would wait on the barrier forever.
    let failed = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a and b met at the barrier: they ran at the same time")
        .unwrap();
    assert!(!failed);
}

#[test]
fn stale_temporaries_of_a_killed_run_are_cleaned_and_the_run_finishes() {
    let s = Setup::new(PIPELINE);
    s.run(&[]);
    // Simulate a kill mid-stage: a temp dir with half an output, and a renamed-in output
    // that the lock file does not describe.
    let tmp = s.run_dir().join("ab/.tmp-1-2");
    fs::create_dir_all(&tmp).unwrap();
    fs::write(tmp.join("out.txt"), "half").unwrap();
    fs::write(s.run_dir().join("c/out.txt"), "new but unrecorded").unwrap();
    assert_eq!(ran(&s.run(&[])), set(&["c"]));
    assert!(!tmp.exists());
    assert_eq!(s.read("c/out.txt"), "B");
}

fn problems(text: &str, set: &[&str]) -> Vec<String> {
    let s = Setup::new(text);
    let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    match load(&s.file(), &set, &registry()) {
        Ok(_) => Vec::new(),
        Err(p) => p.shown.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn validation_reports_every_problem_with_its_position() {
    let text = r#"
[pipeline]
name = "toy"
colour = "red"

[stages.a]
kind = "emit"

[stages.b]
kind = "emitt"

[stages.c]
kind = "concat"
inputs = { parts = ["a.out", "nope.out", "a.missing", "a.other"] }

[stages.d]
kind = "concat"

[stages.e]
kind = "emit"
params = { value = "A", valeu = 3, other = 1, fail = "yes" }
"#;
    let found = problems(text, &[]);
    let expect = [
        ("p.toml:4:1", "unknown key `colour`"),
        (
            "p.toml:10:8",
            "unknown stage kind `emitt` (did you mean `emit`?)",
        ),
        ("p.toml:14:30", "no stage `nope`"),
        ("p.toml:14:42", "stage `a` has no output `missing`"),
        (
            "p.toml:14:55",
            "takes `text` tables, but `a.other` is a `other` table",
        ),
        ("p.toml:16:1", "input `parts` is required"),
        ("p.toml:21:25", "unknown key `valeu`"),
        ("p.toml:21:36", "unknown key `other`"),
        (
            "p.toml:21:54",
            "invalid type: string \"yes\", expected a boolean",
        ),
    ];
    for (position, message) in expect {
        assert!(
            found
                .iter()
                .any(|f| f.contains(position) && f.contains(message)),
            "missing {position} {message} in:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn cycles_are_reported() {
    let text = r#"
[stages.x]
kind = "concat"
inputs = { parts = "y.out" }
[stages.y]
kind = "concat"
inputs = { parts = "x.out" }
"#;
    let found = problems(text, &[]);
    assert!(
        found.iter().any(|f| f.contains("cycle: x → y → x")),
        "{found:?}"
    );
}

#[test]
fn overrides_are_validated_and_located() {
    let found = problems(
        PIPELINE,
        &["stages.a.params.valeu=1", "stages.ab.kind=nope", "bad"],
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("--set stages.a.params.valeu=1")
                && f.contains("unknown key `valeu`")),
        "{found:?}"
    );
    assert!(found.iter().any(|f| f.starts_with("--set stages.ab.kind=nope") && f.contains("unknown stage kind")), "{found:?}");
    assert!(
        found.iter().any(|f| f.starts_with("--set bad")),
        "{found:?}"
    );
}

#[test]
fn syntax_errors_name_line_and_column() {
    let found = problems("[pipeline]\nname = \n", &[]);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with(&format!("{}", Path::new("p.toml").display()))
            || found[0].contains("p.toml:2:"),
        "{found:?}"
    );
    assert!(found[0].contains("invalid TOML"), "{found:?}");
}

#[test]
fn seeds_are_derived_per_stage_and_can_be_pinned() {
    let s = Setup::new(PIPELINE);
    let p = s.pipeline(&[]);
    let seed = |p: &crate::Pipeline, id: &str| p.stage(id).unwrap().seed;
    assert_ne!(seed(&p, "a"), seed(&p, "b"));
    let q = s.pipeline(&["pipeline.seed=7", "stages.b.seed=5"]);
    assert_ne!(seed(&p, "a"), seed(&q, "a"));
    assert_eq!(seed(&q, "b"), 5);
    // A kind that draws nothing at random has seed 0 whatever the pipeline seed.
    assert_eq!((seed(&p, "c"), seed(&q, "c")), (0, 0));
}

/// A source, a template of two stages over two items, and a stage reading both instances.
const TEMPLATED: &str = r#"
[pipeline]
name = "toy"

[stages.base]
kind = "emit"
params = { value = "B" }

[templates.t]
foreach = ["x", "y"]

[templates.t.stages.e]
kind = "emit"
params = { value = "${item}" }

[templates.t.stages.c]
kind = "concat"
inputs = { parts = ["e.out", "base.out"] }
params = { suffix = "-${key}!" }

[stages.all]
kind = "concat"
inputs = { parts = ["c@x.out", "c@y.out"] }
"#;

/// `TEMPLATED` written out by hand.
const BY_HAND: &str = r#"
[pipeline]
name = "toy"

[stages.base]
kind = "emit"
params = { value = "B" }

[stages."e@x"]
kind = "emit"
params = { value = "x" }

[stages."e@y"]
kind = "emit"
params = { value = "y" }

[stages."c@x"]
kind = "concat"
inputs = { parts = ["e@x.out", "base.out"] }
params = { suffix = "-x!" }

[stages."c@y"]
kind = "concat"
inputs = { parts = ["e@y.out", "base.out"] }
params = { suffix = "-y!" }

[stages.all]
kind = "concat"
inputs = { parts = ["c@x.out", "c@y.out"] }
"#;

fn ids(p: &crate::Pipeline) -> Vec<&str> {
    p.stages.iter().map(|s| s.id.as_str()).collect()
}

#[test]
fn a_template_expands_to_the_stages_written_by_hand_and_shares_their_cache() {
    let s = Setup::new(TEMPLATED);
    let templated = s.pipeline(&[]);
    assert_eq!(ids(&templated), ["base", "e@x", "c@x", "e@y", "c@y", "all"]);
    assert!(ran(&s.run(&[])).contains("c@y"));
    assert_eq!(s.read("c@x/out.txt"), "xB-x!");
    assert_eq!(s.read("all/out.txt"), "xB-x!yB-y!");
    // The same pipeline written by hand: the same resolved document, and every stage of the
    // templated run is up to date for it.
    fs::write(s.file(), BY_HAND).unwrap();
    let by_hand = s.pipeline(&[]);
    assert_eq!(templated.resolved, by_hand.resolved);
    assert!(!templated.resolved.contains_key("templates"));
    let manifest = Manifest::load(&s.run_dir()).unwrap();
    let statuses = crate::plan::plan(&by_hand, &manifest, &BTreeSet::new()).unwrap();
    assert!(
        statuses
            .iter()
            .all(|(_, status)| *status == crate::plan::PlanStatus::UpToDate),
        "{statuses:?}"
    );
    for (a, b) in templated.stages.iter().zip(&by_hand.stages) {
        let fa = crate::plan::fingerprint(a, crate::ResolvedDevice::Cpu, &manifest, None)
            .unwrap()
            .unwrap();
        let fb = crate::plan::fingerprint(b, crate::ResolvedDevice::Cpu, &manifest, None)
            .unwrap()
            .unwrap();
        assert_eq!((&a.id, fa.hash), (&b.id, fb.hash));
    }
}

#[test]
fn a_matrix_names_its_instances_in_the_written_order_and_keeps_value_types() {
    let s = Setup::new(
        r#"
[templates.m]
matrix = { v = ["a", "b"], fail = [false] }
[templates.m.stages.e]
kind = "emit"
params = { value = "${item.v}", fail = "${item.fail}" }

[templates.pinned]
foreach = { one = { seed = 5 } }
[templates.pinned.stages.p]
kind = "emit"
seed = "${item.seed}"
description = "seed ${item.seed}, item ${key}"
"#,
    );
    let p = s.pipeline(&[]);
    assert_eq!(ids(&p), ["e@a-false", "e@b-false", "p@one"]);
    assert_eq!(p.stage("p@one").unwrap().seed, 5);
    assert_eq!(
        p.stage("e@b-false").unwrap().params.canonical["fail"],
        false
    );
    assert_eq!(
        p.resolved["stages"]["p@one"]["description"].as_str(),
        Some("seed 5, item one")
    );
}

#[test]
fn overrides_change_a_template_or_one_instance() {
    let s = Setup::new(TEMPLATED);
    let value =
        |p: &crate::Pipeline, id: &str| p.stage(id).unwrap().params.canonical["value"].clone();
    let p = s.pipeline(&["templates.t.stages.e.params.value=z"]);
    assert_eq!(
        (value(&p, "e@x"), value(&p, "e@y")),
        ("z".into(), "z".into())
    );
    let p = s.pipeline(&["stages.e@x.params.value=z"]);
    assert_eq!(
        (value(&p, "e@x"), value(&p, "e@y")),
        ("z".into(), "y".into())
    );
    let p = s.pipeline(&[
        "templates.t.foreach=[\"q\"]",
        "stages.all.inputs.parts=[\"c@q.out\"]",
    ]);
    assert_eq!(ids(&p), ["base", "e@q", "c@q", "all"]);
    let found = problems(
        TEMPLATED,
        &[
            "stages.e@q.params.value=z",
            "stages.\"e@x\".params.value=z",
            "stages.e@y.params.valeu=1",
        ],
    );
    for expected in [
        "--set stages.e@q.params.value=z: no stage `e@q` (did you mean `e@y`?): `--set` changes an expanded stage, it does not add one",
        "--set stages.\"e@x\".params.value=z: no stage `\"e@x\"` (`--set` keys are written without quotes: `stages.e@x…`)",
        "--set stages.e@y.params.valeu=1: `stages.e@y.params.valeu`: unknown key `valeu`",
    ] {
        assert!(found.iter().any(|f| f.starts_with(expected)), "{expected}\nin\n{}", found.join("\n"));
    }
}

#[test]
fn problems_of_an_expanded_stage_are_located_in_its_template_and_name_it() {
    let text = r#"
[stages.base]
kind = "emit"

[templates.t]
foreach = ["x", "y"]

[templates.t.stages.e]
kind = "emit"
params = { value = "${item}", valeu = 1 }

[templates.t.stages.c]
kind = "concat"
inputs = { parts = ["e.missing", "nowhere.out"] }
"#;
    let found = problems(text, &[]);
    for expected in [
        "p.toml:10:31: `stages.e@x.params.valeu`: unknown key `valeu`",
        "p.toml:10:31: `stages.e@y.params.valeu`: unknown key `valeu`",
        "p.toml:14:21: `stages.c@y.inputs.parts[0]`: stage `e@y` has no output `missing`",
        "p.toml:14:34: `stages.c@x.inputs.parts[1]`: no stage `nowhere`",
    ] {
        assert!(
            found
                .iter()
                .any(|f| f.ends_with(expected) || f.contains(expected)),
            "{expected}\nin\n{}",
            found.join("\n")
        );
    }
}

/// A template `t` of one `emit` stage `e` over `ITEMS` (its value `"${item}"`), beside an
/// ordinary stage `base`.
const ONE_TEMPLATE: &str = r#"[stages.base]
kind = "emit"
[templates.t]
ITEMS
[templates.t.stages.e]
kind = "emit"
params = { value = "VALUE" }
"#;

#[test]
fn bad_templates_are_refused_with_their_position() {
    let rows: &[(&str, &str, &str, &str)] = &[
        (
            "foreach = []",
            "${item}",
            "p.toml:4:11",
            "`foreach` is empty",
        ),
        (
            "matrix = {}",
            "${key}",
            "p.toml:4:10",
            "`matrix` names no variable",
        ),
        (
            "matrix = { k = [] }",
            "${key}",
            "p.toml:4:16",
            "`matrix.k` has no values",
        ),
        (
            "foreach = [\"a\"]\nmatrix = { k = [1] }",
            "${key}",
            "p.toml:5:1",
            "`foreach` or `matrix`, not both",
        ),
        (
            "description = \"none\"",
            "${key}",
            "p.toml:3:1",
            "a template needs `foreach`",
        ),
        (
            "foreach = [\"a\"]",
            "${itme}",
            "p.toml:7:20",
            "unknown name `${itme}` (did you mean `${item}`?)",
        ),
        (
            "foreach = [\"a\"]",
            "${item",
            "p.toml:7:20",
            "unterminated `${`",
        ),
        (
            "foreach = [\"a\"]",
            "${item.k}",
            "p.toml:7:20",
            "the items are plain values",
        ),
        (
            "foreach = [\"a\", \"b\", \"a\"]",
            "${item}",
            "p.toml:4:22",
            "`a` is listed twice",
        ),
        (
            "foreach = [1, \"1\"]",
            "${item}",
            "p.toml:4:15",
            "both give the stage ids `…@1`",
        ),
        (
            "foreach = [[1], { a = 1 }]",
            "${item}",
            "p.toml:4:12",
            "an item is a string, a number or a boolean, not an array",
        ),
        (
            "foreach = [\"a b\"]",
            "${item}",
            "p.toml:4:12",
            "`a b` cannot be part of a stage id",
        ),
        (
            "foreach = { a = 1, b = { k = 2 } }",
            "${key}",
            "p.toml:4:11",
            "all plain values or all tables",
        ),
        ("foreach = \"a\"", "${key}", "p.toml:4:11", "not a string"),
        (
            "matrix = { a = [\"x-y\", \"x\"], b = [\"z\", \"y-z\"] }",
            "${key}",
            "p.toml:4:10",
            "two combinations give the stage ids `…@x-y-z`",
        ),
        (
            "matrix = { a = [MANY], b = [MANY] }",
            "${key}",
            "p.toml:4:10",
            "the matrix has 10201 combinations; a file's templates expand to at most 10000 stages",
        ),
        (
            "foreach = [\"a\"]\ncolour = 1",
            "${key}",
            "p.toml:5:1",
            "unknown key `colour`",
        ),
    ];
    let many = (0..101)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    for (items, value, position, message) in rows {
        let text = ONE_TEMPLATE
            .replace("ITEMS", items)
            .replace("VALUE", value)
            .replace("MANY", &many);
        let found = problems(&text, &[]);
        assert!(
            found
                .iter()
                .any(|f| f.contains(position) && f.contains(message)),
            "{items} / {value}: expected {position} {message} in:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn expanded_ids_never_collide_silently() {
    // With an ordinary stage written under the same id.
    let text = format!(
        "{}[stages.\"e@a\"]\nkind = \"emit\"\n",
        ONE_TEMPLATE
            .replace("ITEMS", "foreach = [\"a\"]")
            .replace("VALUE", "v")
    );
    let found = problems(&text, &[]);
    assert!(
        found.iter().any(|f| f.contains("p.toml:5:")
            && f.contains("expands to `e@a`, which is also an ordinary stage's id")),
        "{found:?}"
    );
    // With another template's instance.
    let text = format!(
        "{}[templates.u]\nforeach = [\"a\"]\n[templates.u.stages.e]\nkind = \"emit\"\n",
        ONE_TEMPLATE
            .replace("ITEMS", "foreach = [\"a\"]")
            .replace("VALUE", "v")
    );
    let found = problems(&text, &[]);
    assert!(
        found
            .iter()
            .any(|f| f.contains("expands to `e@a`, as `templates.t.stages.e` does")),
        "{found:?}"
    );
    // A template stage named like an ordinary stage.
    let text = ONE_TEMPLATE
        .replace("ITEMS", "foreach = [\"a\"]")
        .replace("VALUE", "v")
        .replace("[stages.base]", "[stages.e]");
    let found = problems(&text, &[]);
    assert!(
        found
            .iter()
            .any(|f| f.contains("p.toml:5:") && f.contains("`e` is also an ordinary stage's id")),
        "{found:?}"
    );
    // Ids: one `@` between two names.
    let found = problems("[stages.\"a@b@c\"]\nkind = \"emit\"\n", &[]);
    assert!(
        found.iter().any(|f| f.contains("stage ids may only hold")),
        "{found:?}"
    );
}

#[test]
fn too_many_expanded_stages_are_refused_before_they_are_built() {
    let items = (0..5001)
        .map(|i| format!("\"i{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[templates.t]\nforeach = [{items}]\n[templates.t.stages.a]\nkind = \"emit\"\n[templates.t.stages.b]\nkind = \"emit\"\n"
    );
    let found = problems(&text, &[]);
    assert!(
        found
            .iter()
            .any(|f| f.contains("the templates expand to 10002 stages; at most 10000")),
        "{found:?}"
    );
    // A long string repeated by many items runs out of the expansion budget.
    let long = "x".repeat(1000);
    let items = (0..9000)
        .map(|i| format!("\"i{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[templates.t]\nforeach = [{items}]\n[templates.t.stages.a]\nkind = \"emit\"\nparams = {{ value = \"${{item}}{long}\" }}\n"
    );
    let found = problems(&text, &[]);
    assert!(
        found
            .iter()
            .any(|f| f.contains("the templates expand to more than 8388608 bytes")),
        "{found:?}"
    );
}

/// The run-cache of `s` (the default place: beside its run directory).
fn cache_dir(s: &Setup) -> std::path::PathBuf {
    s.dir.path().join(crate::run_cache::DEFAULT_FOLDER)
}

fn entry_files(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![cache.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            // Not through links: a cache holds none of its own.
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn outcome_of<'a>(outcomes: &'a [(String, StageOutcome)], id: &str) -> &'a StageOutcome {
    &outcomes.iter().find(|(i, _)| i == id).unwrap().1
}

#[test]
fn another_run_directory_restores_stages_from_the_run_cache_as_links() {
    use std::os::unix::fs::MetadataExt;
    let s = Setup::new(PIPELINE);
    let first = s.run(&[]);
    assert!(first
        .iter()
        .all(|(_, o)| matches!(o, StageOutcome::Ran { .. })));
    // One entry per stage: its files and its record.
    let files = entry_files(&cache_dir(&s));
    assert_eq!(
        files.iter().filter(|f| f.ends_with("entry.json")).count(),
        4
    );

    let mut other = s.pipeline(&[]);
    other.run_dir = s.dir.path().join("other");
    // The plan knows: every stage, the ones after restored ones included, will be restored.
    fs::create_dir_all(&other.run_dir).unwrap();
    let planned = crate::plan::plan(&other, &Manifest::default(), &Default::default()).unwrap();
    for (id, status) in &planned {
        assert!(
            matches!(status, crate::plan::PlanStatus::Restore(why) if why == "never ran"),
            "{id}: {status:?}"
        );
    }
    let second = run(&other, &RunOptions::default()).unwrap().stages;
    for (id, outcome) in &second {
        assert!(
            matches!(outcome, StageOutcome::Restored { .. }),
            "{id}: {outcome:?}"
        );
    }
    let here = s.run_dir().join("ab/out.txt");
    let there = other.run_dir.join("ab/out.txt");
    assert_eq!(fs::read(&there).unwrap(), b"AB!");
    // The same file, not a copy.
    assert_eq!(
        fs::metadata(&here).unwrap().ino(),
        fs::metadata(&there).unwrap().ino()
    );
    // The restored run is a run like any other: re-running it finds everything up to date,
    // and its lock records the stage's report.
    let third = run(&other, &RunOptions::default()).unwrap().stages;
    assert!(third
        .iter()
        .all(|(_, o)| matches!(o, StageOutcome::UpToDate)));
    let lock = Manifest::load(&other.run_dir).unwrap();
    assert_eq!(lock.stages["a"].report["length"], 1);

    // --force recomputes; a pipeline seed changes the seeded stages only: `c` draws nothing
    // at random and comes from the cache.
    let mut forced = RunOptions::default();
    forced.force.insert("a".into());
    let outcomes = run(&other, &forced).unwrap().stages;
    assert!(matches!(
        outcome_of(&outcomes, "a"),
        StageOutcome::Ran { .. }
    ));
    let mut seeded = s.pipeline(&["pipeline.seed=7"]);
    seeded.run_dir = s.dir.path().join("seed7");
    let outcomes = run(&seeded, &RunOptions::default()).unwrap().stages;
    assert!(matches!(
        outcome_of(&outcomes, "b"),
        StageOutcome::Ran { .. }
    ));
    assert!(matches!(
        outcome_of(&outcomes, "c"),
        StageOutcome::Restored { .. }
    ));
}

#[test]
fn a_run_cache_entry_that_does_not_match_its_record_is_recomputed_never_trusted() {
    let s = Setup::new(PIPELINE);
    s.run(&["pipeline.run_cache=false"]);
    assert!(!cache_dir(&s).exists(), "run_cache = false writes no cache");
    fs::remove_dir_all(s.run_dir()).unwrap();
    s.run(&[]);
    // Edited through the hard link of a run directory (same size, other content).
    fs::write(s.run_dir().join("ab/out.txt"), "XY!").unwrap();
    let mut other = s.pipeline(&[]);
    other.run_dir = s.dir.path().join("other");
    let outcomes = run(&other, &RunOptions::default()).unwrap().stages;
    assert!(matches!(
        outcome_of(&outcomes, "a"),
        StageOutcome::Restored { .. }
    ));
    assert!(
        matches!(outcome_of(&outcomes, "ab"), StageOutcome::Ran { .. }),
        "{outcomes:?}"
    );
    assert_eq!(fs::read(other.run_dir.join("ab/out.txt")).unwrap(), b"AB!");
    // The stage that ran replaced the entry: a third run directory restores the right bytes.
    let mut third = s.pipeline(&[]);
    third.run_dir = s.dir.path().join("third");
    let outcomes = run(&third, &RunOptions::default()).unwrap().stages;
    assert!(matches!(
        outcome_of(&outcomes, "ab"),
        StageOutcome::Restored { .. }
    ));
    assert_eq!(fs::read(third.run_dir.join("ab/out.txt")).unwrap(), b"AB!");

    // A record that is not an entry's, and a link in an entry's place: neither is used; the
    // link is left where it is (it is not mmflow's), the bad record's folder is removed.
    for record in entry_files(&cache_dir(&s))
        .into_iter()
        .filter(|f| f.ends_with("entry.json"))
    {
        fs::write(&record, "{ not json").unwrap();
    }
    let elsewhere = s.dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let key = crate::run_cache::RunCache::key(
        &Manifest::load(&s.run_dir()).unwrap().stages["c"].fingerprint,
        "c",
    );
    let entry = cache_dir(&s).join(&key[..2]).join(&key);
    fs::remove_dir_all(&entry).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
    // A folder without a record in an entry's place is not mmflow's either: left alone.
    let key_b = crate::run_cache::RunCache::key(
        &Manifest::load(&s.run_dir()).unwrap().stages["b"].fingerprint,
        "b",
    );
    let foreign = cache_dir(&s).join(&key_b[..2]).join(&key_b);
    fs::remove_dir_all(&foreign).unwrap();
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let mut fourth = s.pipeline(&[]);
    fourth.run_dir = s.dir.path().join("fourth");
    let outcomes = run(&fourth, &RunOptions::default()).unwrap().stages;
    assert!(outcomes
        .iter()
        .all(|(_, o)| matches!(o, StageOutcome::Ran { .. })));
    assert!(fs::symlink_metadata(&entry)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(elsewhere.is_dir());
    assert_eq!(fs::read(foreign.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(fs::read(fourth.run_dir.join("ab/out.txt")).unwrap(), b"AB!");
}

#[test]
fn two_runs_filling_the_same_entry_at_once_leave_one_sound_entry() {
    let s = Setup::new(&PIPELINE.replace("value = \"A\"", "value = \"A\", rendezvous = true"));
    // Both runs' `a` wait for each other, so both compute it and both try to publish it.
    let _turn = BARRIER_USERS.lock().unwrap_or_else(|e| e.into_inner());
    *BARRIER.lock().unwrap() = Some(Arc::new(Barrier::new(2)));
    let runs: Vec<crate::Pipeline> = ["one", "two"]
        .iter()
        .map(|name| {
            let mut p = s.pipeline(&[]);
            p.run_dir = s.dir.path().join(name);
            p
        })
        .collect();
    let outcomes: Vec<Vec<(String, StageOutcome)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .iter()
            .map(|p| scope.spawn(move || run(p, &RunOptions::default()).unwrap().stages))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outcomes {
        assert!(
            matches!(outcome_of(o, "a"), StageOutcome::Ran { .. }),
            "{o:?}"
        );
        assert!(!o
            .iter()
            .any(|(_, o)| matches!(o, StageOutcome::Failed { .. })));
    }
    // One entry per stage, nothing left half-filled, and it restores.
    let files = entry_files(&cache_dir(&s));
    assert_eq!(
        files.iter().filter(|f| f.ends_with("entry.json")).count(),
        4
    );
    assert!(
        entry_files(&cache_dir(&s).join("tmp")).is_empty(),
        "{files:?}"
    );
    let mut third = s.pipeline(&[]);
    third.run_dir = s.dir.path().join("three");
    let outcomes = run(&third, &RunOptions::default()).unwrap().stages;
    assert!(outcomes
        .iter()
        .all(|(_, o)| matches!(o, StageOutcome::Restored { .. })));
    assert_eq!(fs::read(third.run_dir.join("ab/out.txt")).unwrap(), b"AB!");
}

const COMPUTING: &str = r#"
[pipeline]
name = "computing"

[stages.a]
kind = "emit"
params = { value = "A" }

[stages.fit]
kind = "compute"
"#;

/// A machine with a GPU: `auto` and `cuda` open it.
fn with_gpu(choice: DeviceChoice) -> Result<ResolvedDevice, String> {
    Ok(match choice {
        DeviceChoice::Cpu => ResolvedDevice::Cpu,
        DeviceChoice::Cuda | DeviceChoice::Auto => ResolvedDevice::Cuda(0),
    })
}

/// A machine whose GPU cannot be opened.
fn without_gpu(choice: DeviceChoice) -> Result<ResolvedDevice, String> {
    match choice {
        DeviceChoice::Cuda => Err("device = \"cuda\" but no CUDA device: none found".into()),
        _ => Ok(ResolvedDevice::Cpu),
    }
}

fn outcome<'a>(outcomes: &'a [(String, StageOutcome)], id: &str) -> &'a StageOutcome {
    &outcomes.iter().find(|(s, _)| s == id).unwrap().1
}

/// The resolved device (not the requested one) is what the lock records and what decides
/// whether a device-using stage is up to date: a result computed on the CPU is not reused
/// for a GPU run, nor the reverse; stages that use no device are unaffected.
#[test]
fn the_resolved_device_is_recorded_and_decides_reuse() {
    let s = Setup::new(COMPUTING);
    // Without the run-cache: what is decided here is the lock's reuse.
    let run_with = |device: &str, resolver: crate::DeviceResolver| {
        let mut p = s.pipeline(&[
            &format!("pipeline.device={device}"),
            "pipeline.run_cache=false",
        ]);
        p.device_resolver = resolver;
        run(&p, &RunOptions::default()).unwrap().stages
    };
    let lock_device = || {
        Manifest::load(&s.run_dir()).unwrap().stages["fit"]
            .device
            .clone()
    };

    assert_eq!(ran(&run_with("\"cpu\"", with_gpu)), set(&["a", "fit"]));
    assert_eq!(
        (s.read("fit/out.txt"), lock_device()),
        ("cpu".into(), Some("cpu".into()))
    );
    assert_eq!(
        Manifest::load(&s.run_dir()).unwrap().stages["a"].device,
        None
    );

    // `auto` on a machine with a GPU trains there: the CPU result is not reused.
    let on_gpu = run_with("\"auto\"", with_gpu);
    assert_eq!(ran(&on_gpu), set(&["fit"]));
    assert!(
        matches!(outcome(&on_gpu, "fit"), StageOutcome::Ran { reason, .. } if reason == "device changed"),
        "{on_gpu:?}"
    );
    assert_eq!(
        (s.read("fit/out.txt"), lock_device()),
        ("cuda:0".into(), Some("cuda:0".into()))
    );
    // `cuda` resolves to the same device: up to date.
    assert!(ran(&run_with("\"cuda\"", with_gpu)).is_empty());

    // `auto` where no GPU can be opened falls back to the CPU, and that is a change again.
    assert_eq!(ran(&run_with("\"auto\"", without_gpu)), set(&["fit"]));
    assert_eq!(s.read("fit/out.txt"), "cpu");
}

/// `device = "cuda"` where no GPU can be opened fails the stage that would use it before it
/// runs, with the resolver's reason; the others are unaffected and the plan says so too.
#[test]
fn an_unusable_device_fails_the_stage_that_uses_it_before_it_runs() {
    let s = Setup::new(COMPUTING);
    let mut p = s.pipeline(&["pipeline.device=\"cuda\""]);
    p.device_resolver = without_gpu;
    let manifest = Manifest::load(&s.run_dir()).unwrap();
    let statuses = crate::plan::plan(&p, &manifest, &BTreeSet::new()).unwrap();
    assert!(
        matches!(&statuses[1], (id, crate::plan::PlanStatus::CannotRun(why)) if id == "fit" && why.contains("no CUDA device")),
        "{statuses:?}"
    );
    let outcomes = run(&p, &RunOptions::default()).unwrap().stages;
    assert!(matches!(outcome(&outcomes, "a"), StageOutcome::Ran { .. }));
    assert!(
        matches!(outcome(&outcomes, "fit"), StageOutcome::Failed { error } if error.contains("no CUDA device: none found")),
        "{outcomes:?}"
    );
    assert!(!s.run_dir().join("fit").exists());
    // The default registry knows only the CPU.
    let p = s.pipeline(&["pipeline.device=\"cuda\""]);
    let outcomes = run(&p, &RunOptions::default()).unwrap().stages;
    assert!(
        matches!(outcome(&outcomes, "fit"), StageOutcome::Failed { error } if error.contains("CPU only")),
        "{outcomes:?}"
    );
}

/// The entry folders of a run-cache (`<cache>/<prefix>/<key>`), sorted.
fn entry_dirs(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = entry_files(cache)
        .into_iter()
        .filter(|f| f.ends_with("entry.json"))
        .map(|f| f.parent().unwrap().to_path_buf())
        .collect();
    dirs.sort();
    dirs
}

fn set_age(path: &Path, days: u64) {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    let file = if path.is_dir() {
        fs::File::open(path)
    } else {
        fs::File::options().append(true).open(path)
    };
    file.unwrap().set_modified(then).unwrap();
}

#[test]
fn pruning_removes_entries_unused_for_a_while_and_only_mmflows() {
    use crate::run_cache::RunCache;
    let s = Setup::new(PIPELINE);
    s.run(&[]);
    let cache_root = cache_dir(&s);
    let cache = RunCache::at(&cache_root);
    let entries = entry_dirs(&cache_root);
    assert_eq!(entries.len(), 4);
    // Two entries last used 40 days ago; the others today.
    for dir in &entries[..2] {
        set_age(&dir.join("entry.json"), 40);
    }
    // Not mmflow's: a folder without a record, a link to a folder elsewhere holding what
    // looks like an entry; and a work folder a killed run left.
    let foreign = cache_root.join("ab/not-an-entry");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("data"), b"keep").unwrap();
    let elsewhere = s.dir.path().join("elsewhere");
    let lookalike = elsewhere.join(entries[0].file_name().unwrap());
    fs::create_dir_all(&lookalike).unwrap();
    fs::copy(entries[0].join("entry.json"), lookalike.join("entry.json")).unwrap();
    set_age(&lookalike.join("entry.json"), 40);
    std::os::unix::fs::symlink(&elsewhere, cache_root.join("ff")).unwrap();
    let killed = cache.new_work_folder(&RunCache::key("f", "s")).unwrap();
    set_age(&killed, 40);
    // In `tmp/` too, not mmflow's: a user's folder, one named as mmflow names work folders
    // but without the mark mmflow writes first, a link to a folder elsewhere, a file.
    let users = cache_root.join("tmp/a-users-folder");
    let unmarked = cache_root.join(format!(
        "tmp/{}1",
        killed.file_name().unwrap().to_string_lossy()
    ));
    for dir in [&users, &unmarked] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("notes.txt"), b"keep").unwrap();
        set_age(dir, 40);
    }
    std::os::unix::fs::symlink(&elsewhere, cache_root.join("tmp/link")).unwrap();
    fs::write(cache_root.join("tmp/file"), b"keep").unwrap();
    fs::write(cache_root.join("README"), b"keep").unwrap();

    let month_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400);
    let counted = cache.prune(month_ago, true).unwrap();
    assert_eq!(
        (counted.removed, counted.kept, counted.abandoned),
        (2, 2, 1)
    );
    let skipped: BTreeSet<String> = counted
        .skipped
        .iter()
        .map(|p| p.strip_prefix(&cache_root).unwrap().display().to_string())
        .collect();
    let unmarked_name = format!("tmp/{}", unmarked.file_name().unwrap().to_string_lossy());
    let expected = [
        "README",
        "ab/not-an-entry",
        "ff",
        "tmp/a-users-folder",
        unmarked_name.as_str(),
        "tmp/file",
        "tmp/link",
    ];
    assert_eq!(skipped, expected.map(String::from).into());
    assert_eq!(
        entry_dirs(&cache_root),
        entries,
        "a dry run removes nothing"
    );
    assert!(killed.exists());

    let pruned = cache.prune(month_ago, false).unwrap();
    assert_eq!(pruned, counted);
    assert!(pruned.removed_bytes > 0 && pruned.kept_bytes > 0);
    assert_eq!(entry_dirs(&cache_root), entries[2..].to_vec());
    assert!(!killed.exists());
    for dir in [&users, &unmarked] {
        assert_eq!(fs::read(dir.join("notes.txt")).unwrap(), b"keep");
    }
    assert_eq!(fs::read(cache_root.join("tmp/file")).unwrap(), b"keep");
    assert_eq!(fs::read(foreign.join("data")).unwrap(), b"keep");
    assert!(lookalike.join("entry.json").exists());
    // The run directory keeps its files (links to the removed entries' files).
    assert_eq!(s.read("ab/out.txt"), "AB!");

    // Another run directory: the kept entries are restored (and marked used), the removed
    // ones' stages run again and are stored anew.
    for dir in &entries[2..] {
        set_age(&dir.join("entry.json"), 10);
    }
    let mut other = s.pipeline(&[]);
    other.run_dir = s.dir.path().join("other");
    let outcomes = run(&other, &RunOptions::default()).unwrap().stages;
    let restored = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, StageOutcome::Restored { .. }))
        .count();
    assert_eq!(restored, 2, "{outcomes:?}");
    assert_eq!(entry_dirs(&cache_root), entries);
    let week_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7 * 86_400);
    let last = cache.prune(week_ago, false).unwrap();
    assert_eq!(
        (last.removed, last.kept, last.abandoned),
        (0, 4, 0),
        "restoring marked the kept entries used: {last:?}"
    );
}
