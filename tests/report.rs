//! `mmflow report`: the Markdown and HTML pages of a run, of several runs side by side and of a
//! sweep; the HTML checked in a real browser.
//!
//! The browser test needs headless Chromium (`MMFLOW_CHROMIUM` names it, default `chromium`
//! on the PATH: Debian's `chromium` package). Without it the test says "skipped" and why, and
//! passes, unless `MMFLOW_REQUIRE_CHROMIUM=1` (as CI sets), where it fails.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::{Array, Float64Array, StringArray};
use mmflow_schemas::evaluation::read_metrics;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::compare::TINY;
use crate::util::Dir;

/// The demo's page of a small run stays under this (the full demo's is about 0.2 MB).
const DEMO_PAGE_LIMIT: u64 = 2_000_000;
/// A sweep's page of four runs stays under this.
const SWEEP_PAGE_LIMIT: u64 = 5_000_000;

#[test]
fn a_markdown_report_has_curves_scatter_metrics_and_flags_and_refuses_unfinished_runs() {
    let dir = Dir::new();
    dir.write("p.toml", TINY);
    dir.mmflow(&["run", "p.toml"]).ok();
    let run = dir.mmflow(&["report", "data/runs/tiny"]).ok();
    assert!(run.stdout.contains("report written to"), "{}", run.stdout);
    let report = dir.join("data/runs/tiny/mmflow.report");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    for expected in [
        "# Run report: tiny",
        "## Results",
        "| 0 | tiny | eval | (same) | 1 |",
        "## Learning curves",
        "![learning curves of model](model_curves.svg)",
        "phase `train`: best epoch",
        "![sentiment predictions against labels](eval_sentiment_scatter.svg)",
        "| test | sentiment | Corr |",
        "from `data/runs/tiny/eval/metrics.parquet`",
        "## Flags",
        "FLAG small split",
        "## Pipeline",
        "| model | train_model | mosei.text, mosei.segments |",
        "## Settings",
        "[stages.model.params]",
    ] {
        assert!(md.contains(expected), "missing `{expected}` in:\n{md}");
    }
    let curves = std::fs::read_to_string(report.join("model_curves.svg")).unwrap();
    assert!(
        curves.starts_with("<svg")
            && curves.contains("<polyline")
            && curves.contains("best epoch (weights kept)")
            && curves.contains(">epoch (phases one after the other)<"),
        "{curves}"
    );
    let scatter = std::fs::read_to_string(report.join("eval_sentiment_scatter.svg")).unwrap();
    assert!(
        scatter.contains("identity: prediction = label")
            && scatter.contains("residual (prediction − label)")
            && scatter.matches("<circle").count() > 10,
        "{scatter}"
    );
    // An unfinished run: an error, and no report.
    dir.mmflow(&[
        "run",
        "p.toml",
        "--out",
        "broken",
        "--set",
        "stages.model.params.heads={ valence = {} }",
    ])
    .expect(1);
    let failed = dir.mmflow(&["report", "broken"]).expect(1);
    assert!(
        failed.stderr.contains("unfinished run"),
        "{}",
        failed.stderr
    );
    assert!(!dir.join("broken/mmflow.report").exists());
}

#[test]
fn an_html_report_is_one_self_contained_page_with_the_same_bytes_each_time() {
    let dir = Dir::new();
    dir.write("p.toml", TINY);
    dir.mmflow(&["run", "p.toml", "-q"]).ok();
    // A Markdown report first: the HTML one replaces it.
    dir.mmflow(&["report", "data/runs/tiny"]).ok();
    let run = dir
        .mmflow(&["report", "data/runs/tiny", "--format", "html"])
        .ok();
    assert!(
        run.stdout
            .contains("report written to data/runs/tiny/mmflow.report/report.html"),
        "{}",
        run.stdout
    );
    let folder = dir.join("data/runs/tiny/mmflow.report");
    let mut files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, [".mmflow-report", "report.html"]);
    let html = std::fs::read_to_string(folder.join("report.html")).unwrap();
    check_self_contained(&html);
    for expected in [
        "<title>Run report: tiny</title>",
        "best epoch (weights kept)",
        "identity: prediction = label",
        "<table class=\"sortable\" data-source=\"data/runs/tiny/eval/metrics.parquet\">",
        "phase <code>train</code>: best epoch",
    ] {
        assert!(html.contains(expected), "missing `{expected}`");
    }
    // The same run gives the same bytes.
    dir.mmflow(&[
        "report",
        "data/runs/tiny",
        "--format",
        "html",
        "--out",
        "again",
    ])
    .ok();
    let again = std::fs::read_to_string(dir.join("again/report.html")).unwrap();
    assert!(html == again, "two reports of one run differ");
    // An unknown format is a usage error.
    let bad = dir
        .mmflow(&["report", "data/runs/tiny", "--format", "pdf"])
        .expect(2);
    assert!(bad.stderr.contains("the formats are"), "{}", bad.stderr);
}

#[test]
fn a_report_of_several_runs_puts_their_curves_and_evaluations_side_by_side() {
    let dir = Dir::new();
    dir.write("p.toml", TINY);
    for (out, extra) in [
        ("a1", "pipeline.seed=1"),
        ("a2", "pipeline.seed=2"),
        ("b1", "stages.model.params.dropout=0.4"),
    ] {
        dir.mmflow(&["run", "p.toml", "-q", "--out", out, "--set", extra])
            .ok();
    }
    let usage = dir.mmflow(&["report", "a1", "b1"]).expect(2);
    assert!(usage.stderr.contains("needs --out"), "{}", usage.stderr);
    let into_a_run = dir.mmflow(&["report", "a1", "b1", "--out", "b1"]).expect(1);
    assert!(
        into_a_run.stderr.contains("it is a run directory"),
        "{}",
        into_a_run.stderr
    );
    dir.mmflow(&[
        "report", "a1", "a2", "b1", "--format", "html", "--out", "cmp",
    ])
    .ok();
    let html = std::fs::read_to_string(dir.join("cmp/report.html")).unwrap();
    check_self_contained(&html);
    for expected in [
        "<title>Report of 3 runs</title>",
        "model: total validation loss, one line per run",
        "sentiment CCC by setting",
        "<h3 id=\"0-dropout-0-2\">#0 dropout=0.2</h3>",
        "a1 · eval",
        "b1 · eval",
        "<summary>b1 (#1 dropout=0.4)</summary>",
    ] {
        assert!(html.contains(expected), "missing `{expected}`");
    }
    dir.mmflow(&["report", "a1", "a2", "b1", "--out", "cmp-md"])
        .ok();
    let md = std::fs::read_to_string(dir.join("cmp-md/report.md")).unwrap();
    assert!(
        md.contains("# Report of 3 runs") && md.contains("### b1 (#1 dropout=0.4)"),
        "{md}"
    );
}

#[test]
fn the_demo_and_a_sweep_render_in_a_browser_with_the_values_of_their_tables() {
    let Some(chromium) = chromium() else { return };
    let dir = Dir::new();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/demo.toml");
    dir.mmflow(&[
        "run",
        demo,
        "-q",
        "--out",
        "demo",
        "--set",
        "stages.mosei.params.scale=0.05",
        "--set",
        "stages.mosi.params.scale=0.1",
    ])
    .ok();
    dir.mmflow(&["report", "demo", "--format", "html"]).ok();
    let sweep = "\n[sweep]\nseeds = [1, 2]\nvary = { \"stages.model.params.dropout\" = [0.4] }\n";
    dir.write("p.toml", &format!("{TINY}{sweep}"));
    dir.mmflow(&["sweep", "p.toml", "-q"]).ok();
    let sweep_folder = "data/runs/tiny/mmflow.sweep";
    dir.mmflow(&["report", sweep_folder, "--format", "html"])
        .ok();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-browser");
    std::fs::create_dir_all(&shots).unwrap();
    for (name, page, limit, figures) in [
        ("demo", "demo/mmflow.report/report.html", DEMO_PAGE_LIMIT, 2),
        (
            "sweep",
            "data/runs/tiny/mmflow.sweep/mmflow.report/report.html",
            SWEEP_PAGE_LIMIT,
            // Three metrics by setting, one overlay, four scatters, four runs' curves.
            12,
        ),
    ] {
        let size = std::fs::metadata(dir.join(page)).unwrap().len();
        assert!(size < limit, "{name}: {size} bytes");
        let shown = Browser::open(&chromium, &dir, page);
        assert!(
            shown.console.is_empty(),
            "{name}: the page wrote to the console:\n{}",
            shown.console.join("\n")
        );
        let probe = &shown.probe;
        assert!(
            probe["figures"].as_u64().unwrap() >= figures,
            "{name}: {probe}"
        );
        assert_eq!(
            probe["empty"],
            serde_json::json!([]),
            "{name}: plots drawn empty"
        );
        assert!(probe["tips"].as_u64().unwrap() > 100, "{name}: {probe}");
        assert_eq!(probe["titles"], 0, "{name}: {probe}");
        assert_eq!(probe["sorted"], true, "{name}: {probe}");
        assert_eq!(probe["sortedDown"], true, "{name}: {probe}");
        let tables = dom_tables(&shown.dom);
        let checked = check_metrics_tables(&dir, &tables);
        assert!(
            checked >= if name == "demo" { 1 } else { 4 },
            "{name}: {checked} tables"
        );
        let png = shots.join(format!("{name}.png"));
        screenshot(&chromium, &dir, page, &png);
        let bytes = std::fs::read(&png).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
            "{name}: screenshot of {} bytes",
            bytes.len()
        );
        eprintln!("{name}: {size} bytes, screenshot {}", png.display());
    }
    // The sweep's results are those of the comparison table the sweep wrote.
    let shown = Browser::open(
        &chromium,
        &dir,
        "data/runs/tiny/mmflow.sweep/mmflow.report/report.html",
    );
    let tables = dom_tables(&shown.dom);
    let results = tables
        .iter()
        .find(|t| t.header.first().map(String::as_str) == Some("#"))
        .expect("the results table");
    let rows = comparison_rows(&dir.join(sweep_folder).join("comparison.parquet"));
    assert_eq!(rows.len(), 2 * 6, "two groups of six metrics: {rows:?}");
    for (runs, column, mean) in rows {
        let c = results.header.iter().position(|h| *h == column).unwrap();
        let row = results
            .rows
            .iter()
            .find(|r| r[1].text == runs.replace(',', ", "))
            .unwrap_or_else(|| panic!("no row of {runs}"));
        assert_eq!(row[c].numbers, [mean], "{runs} {column}");
    }
}

/// No script, style, font or picture comes from elsewhere, and loading any is forbidden.
fn check_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("content=\"default-src 'none';"));
    for outside in ["src=", "href=\"http", "url(", "@import", "<link", "<img"] {
        assert!(!html.contains(outside), "the page has `{outside}`");
    }
}

/// Headless Chromium, or `None` after saying why the browser test is skipped.
fn chromium() -> Option<String> {
    let chromium = std::env::var("MMFLOW_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let works = Command::new(&chromium)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Some(chromium);
    }
    assert!(
        std::env::var("MMFLOW_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
        "MMFLOW_REQUIRE_CHROMIUM=1 but `{chromium}` does not run"
    );
    eprintln!(
        "report browser test: skipped (`{chromium}` does not run; install Debian's `chromium` or name one with MMFLOW_CHROMIUM)"
    );
    None
}

/// Runs headless Chromium on `page` (in `dir`) with `args`, each time with a new profile;
/// returns its standard output and error. Killed after two minutes.
fn headless(chromium: &str, dir: &Dir, page: &str, args: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = profile.path().join("out");
    let err = profile.path().join("err");
    let url = format!("file://{}", dir.join(page).display());
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("chromium starts");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium still running after two minutes on {page}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
    )
}

/// A page as the browser shows it: its DOM after the scripts ran (all folded parts open),
/// what it wrote to the console, and what the probe measured.
struct Browser {
    dom: String,
    console: Vec<String>,
    probe: serde_json::Value,
}

/// Measures the page in the browser: every plot's drawn marks have a size, the tooltips
/// moved to the page's own hover box, and a click on a numeric header sorts its table (up,
/// then down). Writes nothing to the console.
const PROBE: &str = r#"<script>
window.addEventListener("load", () => {
  const out = { figures: 0, empty: [], tips: document.querySelectorAll("[data-tip]").length,
                titles: document.querySelectorAll("svg title").length, sorted: null, sortedDown: null };
  for (const d of document.querySelectorAll("details")) d.open = true;
  for (const svg of document.querySelectorAll("figure svg")) {
    out.figures += 1;
    const drawn = Array.from(svg.querySelectorAll("g.data *")).filter(e => {
      const box = e.getBBox();
      return box.width > 0 || box.height > 0;
    });
    if (drawn.length === 0) out.empty.push(svg.getAttribute("aria-label"));
  }
  const table = document.querySelector("table[data-source]");
  const head = Array.from(table.tHead.rows[0].cells);
  const col = head.findIndex(th => th.textContent === "value");
  const values = () => Array.from(table.tBodies[0].rows).map(r => parseFloat(r.cells[col].dataset.v));
  head[col].click();
  out.sorted = values().every((v, i, all) => i === 0 || all[i - 1] <= v);
  head[col].click();
  out.sortedDown = values().every((v, i, all) => i === 0 || all[i - 1] >= v);
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.append(pre);
});
</script>"#;

impl Browser {
    /// Opens a copy of `page` with the probe added.
    fn open(chromium: &str, dir: &Dir, page: &str) -> Browser {
        let html = std::fs::read_to_string(dir.join(page)).unwrap();
        let probed = format!("{page}.probe.html");
        dir.write(
            &probed,
            &html.replace("</body>", &format!("{PROBE}\n</body>")),
        );
        let (dom, stderr) = headless(chromium, dir, &probed, &["--dump-dom"]);
        let console = stderr
            .lines()
            .filter(|l| l.contains("CONSOLE"))
            .map(str::to_string)
            .collect();
        let probe = between(&dom, "<pre id=\"probe\">", "</pre>")
            .first()
            .map(|text| serde_json::from_str(&unescape(text)).unwrap())
            .unwrap_or_else(|| panic!("the probe did not run on {page}:\n{stderr}"));
        Browser {
            dom,
            console,
            probe,
        }
    }
}

/// A screenshot of the top of `page`.
fn screenshot(chromium: &str, dir: &Dir, page: &str, png: &Path) {
    let _ = std::fs::remove_file(png);
    headless(
        chromium,
        dir,
        page,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1800",
        ],
    );
}

/// A table read back from the DOM.
#[derive(Debug)]
struct DomTable {
    source: Option<String>,
    header: Vec<String>,
    rows: Vec<Vec<DomCell>>,
}

/// A cell read back from the DOM: its text and the exact numbers of its `data-v`.
#[derive(Debug)]
struct DomCell {
    text: String,
    numbers: Vec<f64>,
}

/// Every table of a DOM.
fn dom_tables(dom: &str) -> Vec<DomTable> {
    between(dom, "<table", "</table>")
        .into_iter()
        .map(|table| {
            let tag = &table[..table.find('>').unwrap()];
            DomTable {
                source: attribute(tag, "data-source"),
                header: elements(table, "th").into_iter().map(|(_, t)| t).collect(),
                rows: between(table, "<tr", "</tr>")
                    .into_iter()
                    .filter(|row| row.contains("<td"))
                    .map(|row| {
                        elements(row, "td")
                            .into_iter()
                            .map(|(tag, text)| DomCell {
                                numbers: attribute(&tag, "data-v")
                                    .map(|v| v.split(' ').map(|n| n.parse().unwrap()).collect())
                                    .unwrap_or_default(),
                                text,
                            })
                            .collect()
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Each `<name …>text</name>` in `html`: the opening tag and the text.
fn elements(html: &str, name: &str) -> Vec<(String, String)> {
    let (open, close) = (format!("<{name}"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        // `<th` also opens `<thead>`: the name ends at a space or `>`.
        if !after.starts_with([' ', '>']) {
            rest = after;
            continue;
        }
        let Some(end) = after.find(&close) else { break };
        let inner = &after[..end];
        let tag = inner.find('>').unwrap();
        out.push((inner[..tag].to_string(), unescape(&inner[tag + 1..])));
        rest = &after[end + close.len()..];
    }
    out
}

/// The text between each `open` and the next `close`.
fn between<'a>(text: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// The value of attribute `name` in an opening tag.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[at..].find('"')?;
    Some(unescape(&tag[at..at + end]))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Checks every metrics table of the page (a table with a `data-source`) against the Parquet
/// table it names: the same rows, each number exact. Returns how many were checked.
fn check_metrics_tables(dir: &Dir, tables: &[DomTable]) -> usize {
    let mut checked = 0;
    for table in tables {
        let Some(source) = &table.source else {
            continue;
        };
        let metrics = read_metrics(&dir.join(source)).unwrap();
        assert_eq!(table.rows.len(), metrics.len(), "{source}");
        for m in &metrics {
            let row = table
                .rows
                .iter()
                .find(|r| {
                    r[0].text == m.split.as_str() && r[1].text == m.head && r[2].text == m.metric
                })
                .unwrap_or_else(|| panic!("{source}: no row of {m:?}"));
            assert_eq!(row[3].numbers, [m.value], "{source} {m:?}");
            let ci: Vec<f64> = m.ci_low.into_iter().chain(m.ci_high).collect();
            assert_eq!(row[4].numbers, ci, "{source} {m:?}");
            assert_eq!(row[5].numbers, [m.n as f64], "{source} {m:?}");
        }
        checked += 1;
    }
    checked
}

/// `(runs, "head metric", mean)` of each row of a comparison table.
pub(crate) fn comparison_rows(path: &Path) -> Vec<(String, String, f64)> {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let (runs, head, metric) = (text("runs"), text("head"), text("metric"));
        let mean = batch
            .column_by_name("mean")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .clone();
        for i in 0..batch.num_rows() {
            assert!(mean.is_valid(i));
            out.push((
                runs.value(i).to_string(),
                format!("{} {}", head.value(i), metric.value(i)),
                mean.value(i),
            ));
        }
    }
    out
}

#[test]
fn the_dom_reader_reads_tables_cells_and_numbers() {
    let dom = r#"<div><table class="sortable" data-source="r/eval/metrics.parquet"><thead><tr><th tabindex="0" aria-sort="ascending">a &amp; b</th></tr></thead><tbody><tr><td data-v="0.5 1e-7">0.500</td></tr></tbody></table></div><table><tr><td>x</td></tr></table>"#;
    let tables = dom_tables(dom);
    assert_eq!(tables.len(), 2);
    assert_eq!(tables[0].source.as_deref(), Some("r/eval/metrics.parquet"));
    assert_eq!(tables[0].header, ["a & b"]);
    assert_eq!(tables[0].rows[0][0].numbers, [0.5, 1e-7]);
    assert_eq!(tables[1].rows[0][0].text, "x");
}
