//! Pipeline files of hostile shapes at the size cap (see `shapes`), loaded in-process: each
//! is refused with its problems, located, or accepted. How fast is the bench's business
//! (`benches/validate.rs`); here, what each is told.

pub mod shapes;

use mmflow_pipeline::config::MAX_PIPELINE_FILE;
use mmflow_pipeline::problem::MAX_SHOWN;
use mmflow_pipeline::{Pipeline, Problems};

fn load(text: &str) -> Result<Pipeline, Problems> {
    assert!(
        text.len() as u64 <= MAX_PIPELINE_FILE,
        "a shape of {} bytes is over the cap",
        text.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    mmflow_pipeline::load(&path, &[], &mmflow_stages::registry())
}

fn refused(text: &str) -> Problems {
    match load(text) {
        Ok(p) => panic!("accepted ({} stages)", p.stages.len()),
        Err(problems) => problems,
    }
}

/// The problem shown first, as printed (without the folder of the file).
fn first(problems: &Problems) -> String {
    let line = problems.shown[0].to_string();
    line[line.find("p.toml").expect("located in the file")..].to_string()
}

#[test]
fn a_ring_of_instances_is_one_cycle_and_the_same_chain_is_accepted_in_order() {
    let problems = refused(&shapes::ring(10_000));
    assert_eq!(problems.count(), 1, "{problems}");
    let cycle = first(&problems);
    assert!(
        cycle.starts_with(
            "p.toml:8:1: `stages.n@i0.inputs`: inputs form a cycle: n@i0 → n@i9999 → n@i9998 → "
        ),
        "{cycle}"
    );
    assert!(
        cycle.contains(" → … (9980 more stages) … → ") && cycle.ends_with(" → n@i1 → n@i0"),
        "{cycle}"
    );
    let chain = load(&shapes::chain(10_000)).unwrap();
    let ids: Vec<&str> = chain.stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 10_001);
    assert_eq!(&ids[..3], ["mosi", "n@i9999", "n@i9998"]);
    assert_eq!(ids.last(), Some(&"n@i0"));
}

#[test]
fn a_value_missing_from_every_item_stops_checking_with_a_count() {
    let problems = refused(&shapes::missing_names(10_000, 50_000));
    assert_eq!(problems.shown.len(), MAX_SHOWN);
    assert_eq!(
        first(&problems),
        "p.toml:8:17: `templates.t.stages.n.params.p[0]`: item `a1` has no value for `${item.x}` (expanding `n@a1` from `templates.t.stages.n`)"
    );
    assert!(problems.stopped && problems.more > 0);
    let rest = problems.rest().unwrap();
    assert!(
        rest.contains("more problems not shown; checking stopped after"),
        "{rest}"
    );
}

#[test]
fn unknown_names_are_all_counted_with_their_known_names_cut_short() {
    let problems = refused(&shapes::unknown_names(2_000, 50_000));
    assert_eq!(problems.count(), 50_000);
    assert!(!problems.stopped);
    let unknown = first(&problems);
    assert!(
        unknown.starts_with(
            "p.toml:8:17: `templates.t.stages.n.params.p[0]`: unknown name `${item.g}`"
        ) && unknown.ends_with("`${item.f1013}`, … (1981 more)"),
        "{unknown}"
    );
    assert_eq!(
        problems.rest().unwrap(),
        "… and 49800 more problems not shown"
    );
    let problems = refused(&shapes::unterminated(100_000));
    assert_eq!(problems.count(), 100_000);
    assert!(first(&problems).contains("unterminated `${`"));
}

#[test]
fn expansions_too_large_are_refused_before_they_are_built() {
    for (text, at, message) in [
        (
            shapes::many_names_in_a_string(100, 150_000),
            "p.toml:4:2: `templates`: ",
            "the templates expand to more than 8388608 bytes of settings",
        ),
        (
            shapes::wide_matrix(10_000, 50_000),
            "p.toml:5:10: `templates.t.matrix`: ",
            "the matrix's 10000 combinations hold more than 8388608 bytes of values and labels",
        ),
        (
            shapes::many_templates(1_100, 100),
            "p.toml:4:2: `templates`: ",
            "the templates expand to 11000000 stages; at most 10000",
        ),
        (
            shapes::wide_matrix(1, 50_000),
            "p.toml:6:21: `templates.t.stages.n`: ",
            "expands to a stage id of 100003 bytes",
        ),
    ] {
        let problems = refused(&text);
        assert_eq!(problems.count(), 1, "{problems}");
        let shown = first(&problems);
        assert!(
            shown.starts_with(at) && shown.contains(message),
            "{at}{message} in {shown}"
        );
    }
    let problems = refused(&shapes::long_label(880_000, 3_000));
    assert_eq!(problems.count(), 3_000);
    assert!(first(&problems).starts_with(
        "p.toml:6:21: `templates.t.stages.n`: expands to a stage id of 880002 bytes (`n@xxx"
    ));
}

#[test]
fn a_problem_in_every_stage_or_key_is_found_once_each() {
    let problems = refused(&shapes::unknown_key_in_every_instance(10_000));
    assert!(problems.count() >= 10_000 && problems.stopped, "{problems}");
    assert!(first(&problems)
        .starts_with("p.toml:8:1: `stages.n@i0.colour`: unknown key `colour`, expected one of"));
    let problems = refused(&shapes::unknown_params(50_000));
    assert_eq!(problems.count(), 17, "{problems}");
    assert_eq!(
        first(&problems),
        "p.toml:7:1: `stages.n.params`: checking stopped here after 16 problems; there may be more"
    );
    let problems = refused(&shapes::dangling_references(5_000, 100));
    assert_eq!(problems.count(), 100);
    assert!(first(&problems).contains(": no stage `zzz"));
}

#[test]
fn many_outputs_and_columns_are_accepted() {
    let pipeline = load(&shapes::many_outputs(25_000)).unwrap();
    assert_eq!(pipeline.stages[1].outputs.len(), 25_001);
    load(&shapes::many_columns(100_000)).unwrap();
}

#[test]
fn nesting_deeper_than_toml_allows_is_refused_before_it_is_parsed() {
    let problems = refused(&shapes::deep_key(300_000));
    assert!(first(&problems).contains("invalid TOML: recursion limit"));
    for text in [
        shapes::deep_array(300_000),
        shapes::unclosed_tables(100_000),
    ] {
        let problems = refused(&text);
        assert_eq!(problems.count(), 1);
        assert!(first(&problems)
            .contains("invalid TOML: more than 100 arrays and inline tables open at once"));
    }
    assert!(first(&refused(&shapes::unclosed_tables(100_000))).starts_with("p.toml:103:7: "));
}

#[test]
fn every_shape_is_within_the_cap() {
    for (name, text) in shapes::all() {
        assert!(
            text.len() as u64 <= MAX_PIPELINE_FILE,
            "{name}: {} bytes",
            text.len()
        );
    }
}
