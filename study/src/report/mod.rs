//! The report of finished runs: one run, several runs side by side, or a sweep's folder. One
//! page (`page.rs`) written as Markdown (`report.md` with SVG plots beside it) or as one
//! self-contained HTML file (`report.html`: plots inline, sortable tables, values on hover):
//! the results (every evaluation compared, seeds grouped, a metric by setting with each
//! seed's run and the CIs), learning curves (best epoch, early stop and learning-rate changes
//! marked; overlaid across runs), predictions against labels with the residuals per head and
//! evaluation side by side, every metric with n and CI, the flags, the pipeline and the
//! settings.
//!
//! Tables are found by the kind the lock records for them: histories
//! ([`mmflow_schemas::history::TABLE`]), and per stage that wrote metrics its predictions and
//! diagnostics. The same runs give the same bytes.
//!
//! The report is built in a fresh staging folder beside its destination and renamed into
//! place, so it is complete or absent. The destination must be new, an empty folder, or a
//! folder mmflow marked as a report (see [`MARKER`]); anything else is refused before
//! anything is written.

mod build;
mod by_setting;
mod curves;
mod destination;
mod evaluations;
mod html;
mod inputs;
mod markdown;
mod page;
mod pipeline;
mod scatter;
mod svg;

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::staging::{parent_of, Parents, Staging};
pub use destination::MARKER;
use destination::{write_marker, Destination};
pub use html::HTML;
use inputs::Study;
pub use markdown::MARKDOWN;

/// Default report folder inside the run directory (or the sweep's folder). Stage ids are
/// letters, digits, `_` and `-` only, so a name with a dot can never be a stage's output
/// folder, and a sweep's runs are named by their settings and seed.
pub const DEFAULT_FOLDER: &str = "mmflow.report";

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `report.md` with SVG files beside it.
    #[default]
    Markdown,
    /// One self-contained `report.html`.
    Html,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "markdown" | "md" => Ok(Format::Markdown),
            "html" => Ok(Format::Html),
            _ => Err(format!("`{text}`: the formats are `markdown` and `html`")),
        }
    }
}

/// What to report and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run directories, or one sweep's folder.
    pub runs: Vec<PathBuf>,
    /// The report folder (default: `<run or sweep folder>/mmflow.report`; required for
    /// several runs).
    pub out: Option<PathBuf>,
    /// Markdown or HTML.
    pub format: Format,
}

/// Writes the report of `options.runs` to its folder; returns the path of the report's page.
pub fn report(options: &Options) -> Result<PathBuf> {
    let study = Study::load(&options.runs)?;
    let Some(dest) = options
        .out
        .clone()
        .or_else(|| study.default_destination(&options.runs))
    else {
        bail!("a report of several runs needs --out DIR (a new folder)");
    };
    let found = Destination::check(&dest, &study.dirs())?;
    let page = build::page(&study)?;
    let (files, main) = match options.format {
        Format::Markdown => (markdown::render(&page), MARKDOWN),
        Format::Html => (vec![(HTML.to_string(), html::render(&page))], HTML),
    };
    let parents = Parents::create(parent_of(&dest))
        .with_context(|| format!("creating the folder of {}", dest.display()))?;
    let staging = Staging::beside(&dest)
        .with_context(|| format!("creating a staging folder beside {}", dest.display()))?;
    write_files(staging.path(), &files)?;
    let names: Vec<String> = files.into_iter().map(|(name, _)| name).collect();
    write_marker(staging.path(), &names)?;
    found.replace_with(staging, &dest)?;
    parents.keep();
    Ok(dest.join(main))
}

/// Writes each `(name, contents)` into `dir`.
fn write_files(dir: &Path, files: &[(String, String)]) -> Result<()> {
    for (name, contents) in files {
        let path = dir.join(name);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
