//! Engine tests with toy stage kinds that write small text files: runs (here), validation,
//! templates, the run-cache and devices (a module each).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod devices;
mod run_cache;
mod templates;
mod validation;

use crate::executor::{run, RunOptions, StageOutcome};
use crate::manifest::Manifest;
use crate::{
    load, Arity, BoundInputs, DeviceChoice, InputSlot, OutputPort, ParamProblem, Registry,
    ResolvedDevice, RunContext, Slot, StageError, StageKind, TableKind,
};

pub(super) const TEXT: TableKind = TableKind {
    name: "text",
    extension: "txt",
};
/// The toy kinds' slots.
pub(super) const OUT: Slot = Slot::new("out");
pub(super) const OTHER_OUT: Slot = Slot::new("other");
pub(super) const PARTS: Slot = Slot::new("parts");

pub(super) const OTHER: TableKind = TableKind {
    name: "other",
    extension: "txt",
};

/// `emit`: writes `value` to output `out`.
pub(super) struct Emit;

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct EmitParams {
    /// The text written.
    value: String,
    /// Fail instead (after writing a partial output).
    fail: bool,
    /// Wait on the shared barrier first (to prove concurrency).
    rendezvous: bool,
}

pub(super) static BARRIER: Mutex<Option<Arc<Barrier>>> = Mutex::new(None);
/// Held by each test that uses [`BARRIER`], so no two of them meet at it.
pub(super) static BARRIER_USERS: Mutex<()> = Mutex::new(());

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
            OutputPort::new(OUT, TEXT),
            OutputPort::new(OTHER_OUT, OTHER),
        ])
    }
    fn run(&self, p: &EmitParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        if p.rendezvous {
            let barrier = BARRIER.lock().unwrap().clone().unwrap();
            barrier.wait();
        }
        fs::write(ctx.output(OUT)?, &p.value).unwrap();
        if p.fail {
            return Err(StageError::input("told to fail"));
        }
        fs::write(ctx.output(OTHER_OUT)?, "x").unwrap();
        ctx.report("length", p.value.len());
        Ok(())
    }
}

/// `concat`: concatenates its inputs and a suffix.
pub(super) struct Concat;

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ConcatParams {
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
            name: PARTS,
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
        Ok(vec![OutputPort::new(OUT, TEXT)])
    }
    fn uses_seed(&self, _: &ConcatParams) -> bool {
        false
    }
    fn run(&self, p: &ConcatParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let mut s = String::new();
        for input in ctx.inputs(PARTS) {
            s.push_str(&fs::read_to_string(&input.path).unwrap());
        }
        s.push_str(&p.suffix);
        fs::write(ctx.output(OUT)?, s).unwrap();
        Ok(())
    }
}

/// `compute`: writes the device it was given (a stand-in for a training stage).
pub(super) struct Compute;

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ComputeParams {}

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
        Ok(vec![OutputPort::new(OUT, TEXT)])
    }
    fn uses_device(&self, _: &ComputeParams) -> bool {
        true
    }
    fn run(&self, _: &ComputeParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        fs::write(ctx.output(OUT)?, ctx.device.to_string()).unwrap();
        Ok(())
    }
}

pub(crate) fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Emit).register(Concat).register(Compute);
    r
}

pub(super) const PIPELINE: &str = r#"
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

pub(super) struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    pub(super) fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("p.toml"), text).unwrap();
        Setup { dir }
    }
    pub(super) fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("p.toml")
    }
    pub(super) fn run_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("run")
    }
    pub(super) fn pipeline(&self, set: &[&str]) -> crate::Pipeline {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        let mut p = load(&self.file(), &set, &registry()).unwrap_or_else(|e| panic!("{e}"));
        p.run_dir = self.run_dir();
        p
    }
    pub(super) fn run(&self, set: &[&str]) -> Vec<(String, StageOutcome)> {
        run(&self.pipeline(set), &RunOptions::default())
            .unwrap()
            .stages
    }
    pub(super) fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.run_dir().join(rel)).unwrap()
    }
}

pub(super) fn ran(outcomes: &[(String, StageOutcome)]) -> BTreeSet<String> {
    outcomes
        .iter()
        .filter(|(_, o)| matches!(o, StageOutcome::Ran { .. }))
        .map(|(id, _)| id.clone())
        .collect()
}

pub(super) fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
pub(super) fn runs_everything_then_nothing() {
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
pub(super) fn a_param_change_reruns_the_stage_and_its_dependents_only() {
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
pub(super) fn deleted_or_modified_outputs_rerun_their_stage() {
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
pub(super) fn force_reruns_one_stage() {
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
pub(super) fn a_failed_stage_leaves_no_partial_output_and_stops_its_dependents() {
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
pub(super) fn a_second_run_on_the_same_directory_is_refused() {
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
pub(super) fn independent_stages_run_concurrently() {
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
pub(super) fn stale_temporaries_of_a_killed_run_are_cleaned_and_the_run_finishes() {
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

pub(super) fn problems(text: &str, set: &[&str]) -> Vec<String> {
    let s = Setup::new(text);
    let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    match load(&s.file(), &set, &registry()) {
        Ok(_) => Vec::new(),
        Err(p) => p.shown.iter().map(|p| p.to_string()).collect(),
    }
}
