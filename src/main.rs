//! `mmflow`: declarative, reproducible multimodal sentiment analysis pipelines.
//!
//! A thin layer over the engine (`mmflow-pipeline`), the stage kinds (`mmflow-stages`) and
//! the study of finished runs (`mmflow-study`: compare, report).
//! Exit codes: 0 success, 1 a stage (or the run) failed, 2 bad config or usage.
//! `--json` (on `run`, `plan`, `sweep`, `compare`, `inspect`): one JSON document on stdout
//! for programs (see [`json`]).

mod inspect;
mod json;
mod logging;
mod show;
mod sweep;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mmflow_pipeline::plan::PlanStatus;
use mmflow_pipeline::sweep::ExecutorChoice;
use mmflow_pipeline::{EngineError, Pipeline, Progress, RunOptions, StageOutcome};
use mmflow_study::{compare, report};

/// Declarative, reproducible multimodal sentiment analysis pipelines.
#[derive(Parser)]
#[command(name = "mmflow", version, about, long_about = None)]
struct Cli {
    /// Only print warnings and errors (no progress bars).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: every stage whose inputs, params or outputs changed, and nothing else.
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Run this stage even if it is up to date (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Show what would run, and why, without running anything.
        #[arg(long)]
        dry_run: bool,
        /// After a stage fails, keep running the stages that do not depend on it.
        #[arg(long)]
        keep_going: bool,
        /// If another run holds the run directory, wait for it instead of refusing.
        #[arg(long)]
        wait: bool,
        /// Print what each stage did as one JSON document (with --dry-run: the plan's).
        #[arg(long)]
        json: bool,
    },
    /// Show the stages, their inputs and outputs, and which would run and why.
    Plan {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Treat this stage as forced (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Print the plan as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Check a pipeline file and report every problem at once; runs nothing.
    Validate {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Print the schema, mmflow metadata and first rows of a Parquet table.
    Show {
        /// The Parquet file.
        path: PathBuf,
        /// Rows to print.
        #[arg(short = 'n', long, default_value_t = 10)]
        rows: usize,
    },
    /// List the stage kinds (a Markdown table), or one kind's params.
    Kinds {
        /// Print every param of this kind: key, type, default and meaning (generated from
        /// the params type).
        #[arg(long, value_name = "KIND")]
        params: Option<String>,
    },
    /// Run the file's `[sweep]`: each point (one factor at a time, or the grid) over each seed,
    /// then compare them all (also written to `<run dir>/mmflow.sweep/comparison.parquet`).
    Sweep {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Where the runs execute: `local` or `slurm` (default: `[sweep] executor`, else local).
        #[arg(long, value_name = "EXECUTOR")]
        executor: Option<ExecutorChoice>,
        /// Local executor: most runs at once (default: `[sweep] jobs`, else 1).
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
        /// Slurm executor: wait until the jobs have finished, then compare.
        #[arg(long)]
        wait: bool,
        /// Run nothing: compare the runs that finished, naming the others (and their jobs).
        #[arg(long, conflicts_with_all = ["executor", "jobs", "wait"])]
        collect: bool,
        /// Run only the run with this index among points × seeds (what a job array task does).
        #[arg(long, hide = true, conflicts_with = "collect")]
        task: Option<usize>,
        /// Run only the stages every run shares (the job before a job array).
        #[arg(long, hide = true, conflicts_with_all = ["collect", "task"])]
        shared_stages: bool,
        /// The sweep's identity when it was submitted.
        #[arg(long, hide = true)]
        expect: Option<String>,
        /// Print the runs (finished or why not) and the comparison table's path as one JSON
        /// document; the account of the runs goes to stderr.
        #[arg(long)]
        json: bool,
    },
    /// Write the report of finished runs: results (seeds grouped, CIs), learning curves,
    /// predictions against labels, every metric, flags, pipeline and settings; several runs or
    /// a sweep side by side (default folder: `<RUN>/mmflow.report`).
    Report {
        /// Run directories, or a sweep's folder (`<run dir>/mmflow.sweep`).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where to write the report (a folder; required for several runs).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// `markdown` (report.md + SVG files) or `html` (one self-contained report.html).
        #[arg(long, value_name = "FORMAT", default_value = "markdown")]
        format: report::Format,
    },
    /// Manage the run-cache a pipeline's runs share.
    Cache {
        #[command(subcommand)]
        action: CacheCommand,
    },
    /// Compare the evaluate stages of finished runs: settings that differ, metrics side by
    /// side (runs differing only by seed grouped: mean ± std), change from the first, noise.
    Compare {
        /// Run directories (e.g. `data/runs/va data/runs/va_seed7`).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Split whose metrics are compared.
        #[arg(long, default_value = "test")]
        split: String,
        /// A metric to show: `CCC` (every head) or `arousal/CCC` (repeatable; default: the usual ones).
        #[arg(long = "metric", value_name = "METRIC")]
        metrics: Vec<String>,
        /// Order by this metric, best first.
        #[arg(long, value_name = "METRIC")]
        sort: Option<String>,
        /// Also write the comparison as a Parquet table.
        #[arg(long, value_name = "FILE")]
        parquet: Option<PathBuf>,
        /// Print the comparison table's rows (as `--parquet` writes them) as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// List a finished run's stages (kind, fingerprint, time, report) and outputs (table kind,
    /// rows, size, path); `--verify` checks each against the lock.
    Inspect {
        /// The run directory.
        run: PathBuf,
        /// Only this output, `stage.output` (repeatable).
        #[arg(long = "table", value_name = "STAGE.OUTPUT")]
        tables: Vec<String>,
        /// Check every listed output against the lock (size and content hash); exit 1 if
        /// one is not the file its stage wrote.
        #[arg(long)]
        verify: bool,
        /// Print the run as one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Remove the entries of the pipeline's run-cache that no run has stored or restored for
    /// `--older-than` days (files still linked from a run directory stay there).
    Prune {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Age in days (e.g. `30`, `0.5`; `0` removes every entry; a huge number none).
        #[arg(long, value_name = "DAYS", allow_negative_numbers = true)]
        older_than: Days,
        /// Count what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args)]
struct PipelineArgs {
    /// The pipeline file (TOML).
    file: PathBuf,
    /// Override a value of the file: `--set stages.mosei.params.scale=1.0` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Run directory (default: `data/runs/<pipeline name>`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Training allocates and frees many tensor-sized buffers per step: mimalloc reuses them
/// where glibc's malloc would hand them back to the kernel (see Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 2 hands freed pages back to the kernel 10 ms after they empty (its purge delay),
/// so a training step's large buffers (a batch's activations and gradients, tens of MB each)
/// came back as fresh pages the kernel zeroes on first touch, step after step: 17 % of TFN's
/// epoch. 100 ms keeps them between steps. Measured: TFN 5 epochs 13.7 → 11.3 s (peak RSS
/// 627 → 777 MB); the `csd` stage on 160 MOSEI videos unchanged in time, peak 128 → 130 MB.
/// (Version 3's 1 s delay doubled the `csd` stage's peak; see Cargo.toml.)
fn keep_freed_pages_briefly() {
    /// `mi_option_purge_delay` in mimalloc 2's `mi_option_t` (`include/mimalloc.h`), which
    /// the bindings do not name.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets one of mimalloc's integer options before any thread but this one runs.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 100) };
}

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    keep_freed_pages_briefly();
    mmflow_stages::run_elementwise_ops_inline();
    let cli = Cli::parse();
    let progress = if cli.quiet {
        Progress::hidden()
    } else {
        Progress::stderr()
    };
    logging::init(cli.quiet, progress.clone());
    match execute(cli.command, progress) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn execute(command: Command, progress: Progress) -> anyhow::Result<u8> {
    match command {
        Command::Report { runs, out, format } => write_report(runs, out, format),
        Command::Sweep {
            pipeline,
            executor,
            jobs,
            wait,
            collect,
            task,
            shared_stages,
            expect,
            json,
        } => run_sweep(sweep::Request {
            file: &pipeline.file,
            set: &pipeline.set,
            out: pipeline.out.as_ref(),
            executor,
            jobs,
            wait,
            collect,
            part: match (task, shared_stages) {
                (Some(index), _) => sweep::Part::Task(index),
                (None, true) => sweep::Part::Shared,
                (None, false) => sweep::Part::All,
            },
            expect: expect.as_deref(),
            progress,
            json,
        }),
        Command::Compare {
            runs,
            split,
            metrics,
            sort,
            parquet,
            json,
        } => print_comparison(
            compare::Options {
                runs,
                split,
                metrics,
                sort,
                parquet,
            },
            json,
        ),
        Command::Inspect {
            run,
            tables,
            verify,
            json,
        } => inspect(&inspect::Request {
            run,
            tables,
            verify,
            json,
        }),
        Command::Run {
            pipeline,
            force,
            dry_run,
            keep_going,
            wait,
            json,
        } => match load(&pipeline) {
            None => Ok(EXIT_USAGE),
            Some(p) if dry_run => print_plan(&p, &force, json),
            Some(p) => {
                let options = RunOptions {
                    force: force.into_iter().collect(),
                    keep_going,
                    wait_for_lock: wait,
                    progress,
                };
                run_pipeline(&p, &options, json)
            }
        },
        Command::Cache {
            action:
                CacheCommand::Prune {
                    pipeline,
                    older_than,
                    dry_run,
                },
        } => match load(&pipeline) {
            Some(p) => prune_cache(&p, older_than, dry_run),
            None => Ok(EXIT_USAGE),
        },
        Command::Plan {
            pipeline,
            force,
            json,
        } => match load(&pipeline) {
            Some(p) => print_plan(&p, &force, json),
            None => Ok(EXIT_USAGE),
        },
        Command::Validate { pipeline } => Ok(validate(&pipeline)),
        Command::Show { path, rows } => {
            show::show(&path, rows)?;
            Ok(0)
        }
        Command::Kinds { params } => Ok(print_kinds(params.as_deref())),
    }
}

/// `mmflow report`.
fn write_report(
    runs: Vec<PathBuf>,
    out: Option<PathBuf>,
    format: report::Format,
) -> anyhow::Result<u8> {
    if runs.len() > 1 && out.is_none() {
        eprintln!("error: a report of several runs needs --out DIR (a new folder)");
        return Ok(EXIT_USAGE);
    }
    let path = report::report(&report::Options { runs, out, format })?;
    println!("report written to {}", path.display());
    Ok(0)
}

/// `mmflow sweep`.
fn run_sweep(request: sweep::Request<'_>) -> anyhow::Result<u8> {
    Ok(match sweep::sweep(request)? {
        sweep::Outcome::Done | sweep::Outcome::Submitted => 0,
        sweep::Outcome::Invalid => EXIT_USAGE,
        sweep::Outcome::Failed => EXIT_FAILED,
    })
}

/// `mmflow compare`: the table as Markdown, or the `--json` document.
fn print_comparison(options: compare::Options, json: bool) -> anyhow::Result<u8> {
    let (comparison, order) = compare::comparison(&options)?;
    if json {
        json::print(&json::CompareDocument {
            format: json::FORMAT,
            split: options.split,
            runs: options.runs,
            rows: comparison.rows(),
        })?;
    } else {
        print!("{}", comparison.markdown(&order));
    }
    Ok(0)
}

/// `mmflow run`: the pipeline, then its summary (or the `--json` document).
fn run_pipeline(p: &Pipeline, options: &RunOptions, json: bool) -> anyhow::Result<u8> {
    match mmflow_pipeline::run(p, options) {
        Ok(summary) => {
            if json {
                json::print(&json::RunDocument::new(p, &summary.stages))?;
            } else {
                print_summary(p, &summary.stages);
            }
            Ok(if summary.failed() { EXIT_FAILED } else { 0 })
        }
        Err(
            e @ (EngineError::Busy { .. }
            | EngineError::Usage(_)
            | EngineError::NotADirectory { .. }),
        ) => {
            eprintln!("error: {e}");
            Ok(EXIT_USAGE)
        }
        Err(e) => Err(e.into()),
    }
}

/// `mmflow validate`.
fn validate(pipeline: &PipelineArgs) -> u8 {
    match load(pipeline) {
        Some(p) => {
            println!(
                "{}: ok ({} stages, run directory {})",
                pipeline.file.display(),
                p.stages.len(),
                p.run_dir.display()
            );
            0
        }
        None => EXIT_USAGE,
    }
}

/// `mmflow kinds [--params KIND]`.
fn print_kinds(params: Option<&str>) -> u8 {
    let registry = mmflow_stages::registry();
    let Some(kind) = params else {
        print!("{}", mmflow_pipeline::docs::kinds_markdown(&registry));
        return 0;
    };
    let Some(stage) = registry.get(kind) else {
        eprintln!(
            "error: no stage kind `{kind}`; the kinds are {}",
            registry
                .kinds()
                .map(|k| k.kind())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return EXIT_USAGE;
    };
    print!("{}", mmflow_pipeline::docs::params_markdown(stage.as_ref()));
    0
}

/// An age in days: any number ≥ 0 (`inf` and numbers too large for a date mean that
/// nothing is that old).
#[derive(Debug, Clone, Copy)]
struct Days(f64);

impl std::str::FromStr for Days {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().parse::<f64>() {
            Ok(days) if days >= 0.0 => Ok(Days(days)),
            _ => Err(format!(
                "--older-than takes a number of days ≥ 0, not `{text}`"
            )),
        }
    }
}

impl Days {
    /// The moment `self` days ago; the Unix epoch when that is before it (nothing is older).
    fn ago(self) -> std::time::SystemTime {
        std::time::Duration::try_from_secs_f64(self.0 * 86_400.0)
            .ok()
            .and_then(|age| std::time::SystemTime::now().checked_sub(age))
            .unwrap_or(std::time::UNIX_EPOCH)
    }
}

impl std::fmt::Display for Days {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How many of the things prune left in place are listed by name.
const MAX_SKIPPED_SHOWN: usize = 20;

/// `mmflow cache prune`: the pipeline's run-cache pruned of entries unused for `days` days.
fn prune_cache(p: &Pipeline, days: Days, dry_run: bool) -> anyhow::Result<u8> {
    let Some(folder) = p.run_cache.folder(&p.run_dir) else {
        eprintln!(
            "error: no run-cache: `run_cache` is off in this pipeline, or its run directory {} \
             (the cache lies beside it) does not exist",
            p.run_dir.display()
        );
        return Ok(EXIT_USAGE);
    };
    let cache = mmflow_pipeline::run_cache::RunCache::at(&folder);
    let pruned = cache
        .prune(days.ago(), dry_run)
        .map_err(|e| anyhow::anyhow!("pruning the run-cache {}: {e}", folder.display()))?;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} entries ({:.1} MB) unused for {days} days; kept {} ({:.1} MB); {verb} {} abandoned work folders · {}",
        pruned.removed,
        mb(pruned.removed_bytes),
        pruned.kept,
        mb(pruned.kept_bytes),
        pruned.abandoned,
        folder.display()
    );
    print_skipped(&pruned.skipped);
    Ok(0)
}

/// Lists what prune left because mmflow did not make it.
fn print_skipped(skipped: &[PathBuf]) {
    if skipped.is_empty() {
        return;
    }
    println!(
        "skipped {} thing{} mmflow did not make (left as they are):",
        skipped.len(),
        if skipped.len() == 1 { "" } else { "s" }
    );
    for path in skipped.iter().take(MAX_SKIPPED_SHOWN) {
        println!("  {}", path.display());
    }
    if skipped.len() > MAX_SKIPPED_SHOWN {
        println!("  … and {} more", skipped.len() - MAX_SKIPPED_SHOWN);
    }
}

/// `mmflow inspect`: the run listed (as text or JSON); exit 1 when a checked output changed,
/// 2 when `--table` names no output of the run.
fn inspect(request: &inspect::Request) -> anyhow::Result<u8> {
    let (document, changed) = match inspect::inspect(request) {
        Ok(found) => found,
        Err(e) if e.is::<inspect::InspectError>() => {
            eprintln!("error: {e}");
            return Ok(EXIT_USAGE);
        }
        Err(e) => return Err(e),
    };
    if request.json {
        json::print(&document)?;
    } else {
        inspect::print_text(&document);
    }
    let problems = document
        .stages
        .iter()
        .flat_map(|s| &s.outputs)
        .filter_map(|o| o.problem.as_deref());
    for problem in problems {
        eprintln!("error: {problem}");
    }
    Ok(if changed > 0 { EXIT_FAILED } else { 0 })
}

/// Loads and validates; prints every problem and returns None if there are any.
fn load(args: &PipelineArgs) -> Option<Pipeline> {
    let registry = mmflow_stages::registry();
    match mmflow_pipeline::load(&args.file, &args.set, &registry) {
        Ok(mut p) => {
            if let Some(out) = &args.out {
                p.run_dir = out.clone();
            }
            Some(p)
        }
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!(
                "error: {} problem{} in {}; nothing was run",
                problems.count(),
                if problems.count() == 1 { "" } else { "s" },
                args.file.display()
            );
            None
        }
    }
}

fn print_plan(p: &Pipeline, force: &[String], json: bool) -> anyhow::Result<u8> {
    for id in force {
        if p.stage(id).is_none() {
            eprintln!("error: --force {id}: the pipeline has no stage `{id}`");
            return Ok(EXIT_USAGE);
        }
    }
    let forced: BTreeSet<String> = force.iter().cloned().collect();
    let manifest = mmflow_pipeline::manifest::Manifest::load(&p.run_dir)?;
    let statuses = mmflow_pipeline::plan::plan(p, &manifest, &forced)?;
    if json {
        json::print(&json::PlanDocument::new(p, &statuses))?;
        return Ok(0);
    }
    println!(
        "pipeline `{}` ({} stages) · run directory {} · seed {} · device {}",
        p.name,
        p.stages.len(),
        p.run_dir.display(),
        p.seed,
        p.device.as_str()
    );
    for (stage, (_, status)) in p.stages.iter().zip(&statuses) {
        let inputs: Vec<String> = stage
            .inputs
            .values()
            .flatten()
            .map(|r| r.to_string())
            .collect();
        let outputs: Vec<&str> = stage.outputs.iter().map(|o| o.name.as_str()).collect();
        let status = match status {
            PlanStatus::UpToDate => "up to date".to_string(),
            PlanStatus::WillRun(why) => format!("will run: {why}"),
            PlanStatus::Restore(why) => format!("will be restored from the run-cache: {why}"),
            PlanStatus::CannotRun(why) => format!("cannot run: {why}"),
            PlanStatus::AfterUpstream(up) => {
                format!(
                    "will run if {} change{} its outputs",
                    up.join(", "),
                    if up.len() == 1 { "s" } else { "" }
                )
            }
        };
        println!("\n  {} ({})  {status}", stage.id, stage.stage.kind());
        if !inputs.is_empty() {
            println!("      reads  {}", inputs.join(", "));
        }
        println!("      writes {}", outputs.join(", "));
    }
    Ok(0)
}

fn print_summary(p: &Pipeline, outcomes: &[(String, StageOutcome)]) {
    let width = outcomes.iter().map(|(id, _)| id.len()).max().unwrap_or(0);
    let (mut ran, mut restored, mut skipped, mut failed) = (0, 0, 0, 0);
    for (id, outcome) in outcomes {
        let line = match outcome {
            StageOutcome::Ran { reason, seconds } => {
                ran += 1;
                format!("ran in {seconds:.2} s ({reason})")
            }
            StageOutcome::Restored { reason, seconds } => {
                restored += 1;
                format!("restored from the run-cache in {seconds:.2} s ({reason})")
            }
            StageOutcome::UpToDate => {
                skipped += 1;
                "up to date".into()
            }
            StageOutcome::Failed { error } => {
                failed += 1;
                format!("FAILED: {error}")
            }
            StageOutcome::NotRun => "not run (an upstream stage failed)".into(),
        };
        let kind = p.stage(id).map(|s| s.stage.kind()).unwrap_or("");
        println!("  {id:<width$}  {kind:<12} {line}");
    }
    println!(
        "{ran} ran, {restored} restored, {skipped} up to date, {failed} failed · outputs in {}",
        p.run_dir.display()
    );
}
