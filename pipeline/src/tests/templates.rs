//! Templates: expansion, instances, overrides and the problems of templates.

use super::*;

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
