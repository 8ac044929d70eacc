//! Devices: the resolved device recorded, and an unusable one failing its stage.

use super::*;

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
