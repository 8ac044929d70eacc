//! Fuzzing the file readers (MMSA pickle, `.csd`/HDF5, `.npz`, CSV, Parquet tables), the
//! config loader (any pipeline file, and pipelines of templates) and `embed_text`'s model
//! folders, on stable Rust and inside the normal test build: no instrumentation, no coverage
//! feedback, but structure-aware mutations of the repository's own inputs.
//!
//! Each input is derived from a seed file by stacked mutations drawn from a ChaCha stream
//! keyed by (target, `MMFLOW_FUZZ_SEED`, iteration), so any input can be rebuilt from those
//! three numbers alone. Inputs run in a child process (this test binary, re-run for one test)
//! under an address-space limit; inside it every input runs under `catch_unwind` with a
//! watchdog, and a global allocator refuses any single allocation above
//! [`MAX_ALLOCATION`], which turns an unchecked size read from a file into an abort. Before
//! each input runs it is written to `fuzz-<target>-current.<ext>`, so whatever ends the
//! child (a panic, an abort, a stack overflow, the memory limit, a hang) leaves the
//! reproducer behind; findings are copied to `fuzz-<target>-seed<S>-iter<I>.<ext>`.
//!
//! | variable | meaning |
//! |---|---|
//! | `MMFLOW_FUZZ_SECONDS` | time per target (default 3) |
//! | `MMFLOW_FUZZ_ITERATIONS` | at most this many inputs per target (default: no limit): with it, a faster machine runs no input a slower one did not (CI's smoke is the same inputs every time) |
//! | `MMFLOW_FUZZ_SEED` | stream seed (default 1) |
//! | `MMFLOW_FUZZ_REPORT_ONLY=1` | list findings, keep going after a crash, do not fail |
//! | `MMFLOW_FUZZ_REPLAY=FILE` | run one input in-process (the target whose extension it has) |
//! | `MMFLOW_FUZZ_DIR` | where inputs and reproducers go (default: cargo's target tmp dir) |
//! | `MMFLOW_FUZZ_CORPUS` | more seed folders, `:`-separated |
//! | `MMFLOW_FUZZ_HANG_SECONDS` | one input using more CPU time is a finding (default 5) |

mod models;
mod mutate;
mod parquet;
mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use models::MODEL;
use parquet::PARQUET;
use targets::{Seed, Target, CONFIG, CSD, CSV, NPZ, PICKLE, TEMPLATE};

#[test]
fn pickle() {
    fuzz(&PICKLE);
}

#[test]
fn csd() {
    fuzz(&CSD);
}

#[test]
fn npz() {
    fuzz(&NPZ);
}

#[test]
fn csv() {
    fuzz(&CSV);
}

#[test]
fn config() {
    fuzz(&CONFIG);
}

#[test]
fn model() {
    fuzz(&MODEL);
}

#[test]
fn template() {
    fuzz(&TEMPLATE);
}

#[test]
fn parquet() {
    fuzz(&PARQUET);
}

/// The harness itself: an input is a pure function of (target, seed, iteration), and the
/// zip writer the `.npz` mutator rebuilds members with writes files the `.npz` reader reads.
#[test]
fn inputs_are_reproducible_and_rebuilt_zips_are_valid() {
    for target in [
        &PICKLE, &CSD, &NPZ, &CSV, &CONFIG, &TEMPLATE, &MODEL, &PARQUET,
    ] {
        let corpus = corpus(target);
        for iteration in [0, 1, 1_000_003] {
            assert_eq!(
                input(target, &corpus, 5, iteration),
                input(target, &corpus, 5, iteration),
                "{} iteration {iteration}",
                target.name
            );
        }
        assert!(
            (0..8).any(|i| input(target, &corpus, 5, i) != input(target, &corpus, 6, i)),
            "{}: the seed changes nothing",
            target.name
        );
    }
    assert_eq!(mutate::crc32(b"123456789"), 0xcbf4_3926);
    let npz = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/npz/words.npz"))
        .unwrap();
    let members = mutate::unzip_stored(&npz).expect("np.savez writes a stored zip");
    let member_count = members.len();
    assert!(member_count > 0);
    let rebuilt = mutate::zip_stored(&members);
    assert_eq!(mutate::unzip_stored(&rebuilt), Some(members));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rebuilt.npz");
    std::fs::write(&path, &rebuilt).unwrap();
    let timing = mmflow_stages::ingest::readers::TimingOptions::default();
    let npz = mmflow_stages::ingest::npz_file::NpzSource::open(&path, &timing).unwrap();
    // `<video>/features` and `<video>/intervals` for every video.
    assert_eq!(npz.videos().len() * 2, member_count);
}

/// No single allocation while fuzzing may exceed this: every seed is a few MB, so a larger
/// one comes from a size read from the file and not checked against the file.
const MAX_ALLOCATION: usize = 1 << 30;
/// Address-space limit of the child (what a memory bomb of many small allocations meets).
const MEMORY_LIMIT_BYTES: u64 = 8 << 30;

/// Set in the child (`<target>:<first iteration>`).
const CHILD_ENV: &str = "MMFLOW_FUZZ_CHILD";
const FINDING_TAG: &str = "mmflow-fuzz-finding";
const DONE_TAG: &str = "mmflow-fuzz-done";
const HANG_TAG: &str = "mmflow-fuzz-hang";
const ALLOC_TAG: &str = "mmflow-fuzz-refused-allocation";
/// The child's exit code when its watchdog stops it.
const HANG_EXIT: i32 = 86;

/// The allocation cap, off (`usize::MAX`) except in a fuzzing child or a replay.
static ALLOCATION_CAP: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The system allocator, refusing single allocations above [`ALLOCATION_CAP`] (the caller
/// then gets an error from `try_reserve`, or aborts with "memory allocation of N bytes
/// failed"). Costs one relaxed load per allocation when off.
struct Capped;

/// Whether an allocation of `size` bytes is refused; if so, says where it came from (the
/// first frame in our crates) on stderr, since the abort that usually follows says nothing.
fn refuse(size: usize) -> bool {
    if size <= ALLOCATION_CAP.load(Ordering::Relaxed) {
        return false;
    }
    eprintln!("{ALLOC_TAG}\t{}", our_frame());
    true
}

/// Source folders of the code under test.
const OUR_SOURCES: [&str; 3] = ["stages/src", "pipeline/src", "schemas/src"];

/// The innermost frame of the current stack in the code under test (`file:line:column`).
fn our_frame() -> String {
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    trace
        .lines()
        .find_map(|l| {
            OUR_SOURCES
                .iter()
                .find_map(|o| l.find(o).map(|at| l[at..].to_string()))
        })
        .unwrap_or_else(|| "(no frame of ours)".into())
}

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refuse(new_size) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// The knobs, from the environment.
struct Settings {
    seconds: f64,
    /// Inputs `0..iterations` at most.
    iterations: u64,
    seed: u64,
    report_only: bool,
    hang: Duration,
    dir: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let number = |name: &str, default: f64| -> f64 {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
                Err(_) => default,
            }
        };
        Settings {
            seconds: number("MMFLOW_FUZZ_SECONDS", 3.0),
            iterations: std::env::var("MMFLOW_FUZZ_ITERATIONS").map_or(u64::MAX, |v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("MMFLOW_FUZZ_ITERATIONS={v}: not a number"))
            }),
            seed: std::env::var("MMFLOW_FUZZ_SEED").map_or(1, |v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("MMFLOW_FUZZ_SEED={v}: not a number"))
            }),
            report_only: std::env::var("MMFLOW_FUZZ_REPORT_ONLY").is_ok_and(|v| v != "0"),
            hang: Duration::from_secs_f64(number("MMFLOW_FUZZ_HANG_SECONDS", 5.0)),
            dir: std::env::var_os("MMFLOW_FUZZ_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz")),
        }
    }

    /// Where the input under test is written before it runs.
    fn current(&self, target: &Target) -> PathBuf {
        if target.in_directory {
            // The reader lists a directory: the input is the only file in its own.
            self.dir
                .join(format!("fuzz-{}-current", target.name))
                .join(format!("input.{}", target.ext))
        } else {
            self.dir
                .join(format!("fuzz-{}-current.{}", target.name, target.ext))
        }
    }

    fn progress(&self, target: &Target) -> PathBuf {
        self.dir.join(format!("fuzz-{}-progress", target.name))
    }

    fn log(&self, target: &Target) -> PathBuf {
        self.dir.join(format!("fuzz-{}-child.log", target.name))
    }

    fn reproducer(&self, target: &Target, iteration: u64) -> PathBuf {
        self.dir.join(format!(
            "fuzz-{}-seed{}-iter{iteration}.{}",
            target.name, self.seed, target.ext
        ))
    }
}

fn fuzz(target: &Target) {
    let settings = Settings::from_env();
    std::fs::create_dir_all(&settings.dir).unwrap();
    if let Some(file) = std::env::var_os("MMFLOW_FUZZ_REPLAY") {
        replay(target, &settings, Path::new(&file));
    } else if let Ok(child) = std::env::var(CHILD_ENV) {
        let (name, first) = child.split_once(':').expect("<target>:<iteration>");
        assert_eq!(name, target.name, "{CHILD_ENV} names another target");
        run_child(target, &settings, first.parse().unwrap());
    } else {
        run_parent(target, &settings);
    }
}

// ---------------------------------------------------------------- the corpus and inputs

fn corpus(target: &Target) -> Vec<Seed> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds: Vec<Seed> = (target.seeds)(target, root)
        .into_iter()
        .map(|bytes| Seed {
            numbers: (target.numbers)(&bytes),
            bytes,
        })
        .collect();
    assert!(!seeds.is_empty(), "no seed files for `{}`", target.name);
    seeds
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Input `iteration` of `target` under `seed`: a function of these three and the corpus.
fn input(target: &Target, corpus: &[Seed], seed: u64, iteration: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(target.name));
    rng.set_stream(iteration);
    (target.mutate)(&mut rng, corpus)
}

fn write_input(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------- the child

/// The last panic's message and location (set by the hook, taken after `catch_unwind`).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn record_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let mut location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if !OUR_SOURCES.iter().any(|o| location.contains(o)) {
            // A panic inside std or a dependency: name the frame of ours that called it.
            let message_location = std::mem::take(&mut location);
            location = format!("{} (in {message_location})", our_frame());
        }
        if let Ok(mut last) = LAST_PANIC.lock() {
            last.get_or_insert(format!(
                "{location}\t{}",
                message.replace(['\n', '\t'], " ")
            ));
        }
    }));
}

/// Milliseconds since `epoch` when the running input started; 0 between inputs.
static BUSY_SINCE: AtomicU64 = AtomicU64::new(0);

/// CPU time this process has used (from `/proc`, Linux; `None` elsewhere).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

/// Stops the process when one input has used more than `hang` of CPU time, or has run for
/// twelve times that on the wall clock (blocked); the input is on disk already. CPU time,
/// not wall time, so that a loaded machine does not turn slow inputs into findings.
fn watchdog(hang: Duration, epoch: Instant) {
    std::thread::spawn(move || {
        let mut seen: Option<(u64, Option<Duration>)> = None;
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let since = BUSY_SINCE.load(Ordering::SeqCst);
            if since == 0 {
                seen = None;
                continue;
            }
            let Some((_, cpu_at_start)) = seen.filter(|s| s.0 == since) else {
                seen = Some((since, cpu_time()));
                continue;
            };
            let wall =
                Duration::from_millis((epoch.elapsed().as_millis() as u64).saturating_sub(since));
            let cpu = match (cpu_at_start, cpu_time()) {
                (Some(start), Some(now)) => now.saturating_sub(start),
                _ => wall,
            };
            if cpu > hang || wall > hang * 12 {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "{HANG_TAG}\t{} ms of CPU time ({} ms on the wall clock)",
                    cpu.as_millis(),
                    wall.as_millis()
                );
                let _ = out.flush();
                std::process::exit(HANG_EXIT);
            }
        }
    });
}

fn run_child(target: &Target, settings: &Settings, first: u64) {
    let corpus = corpus(target);
    let current = settings.current(target);
    let progress = settings.progress(target);
    record_panics();
    let epoch = Instant::now();
    watchdog(settings.hang, epoch);
    ALLOCATION_CAP.store(MAX_ALLOCATION, Ordering::SeqCst);
    let deadline = epoch + Duration::from_secs_f64(settings.seconds);
    let mut iteration = first;
    while Instant::now() < deadline && iteration < settings.iterations {
        let bytes = input(target, &corpus, settings.seed, iteration);
        std::fs::write(&progress, iteration.to_string()).unwrap();
        write_input(&current, &bytes);
        BUSY_SINCE.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let outcome = std::panic::catch_unwind(|| (target.run)(&current));
        BUSY_SINCE.store(0, Ordering::SeqCst);
        if outcome.is_err() {
            let panic = LAST_PANIC.lock().unwrap().take().unwrap_or_default();
            let saved = settings.reproducer(target, iteration);
            write_input(&saved, &bytes);
            println!(
                "{FINDING_TAG}\tpanic\t{iteration}\t{}\t{panic}",
                saved.display()
            );
        }
        iteration += 1;
    }
    ALLOCATION_CAP.store(usize::MAX, Ordering::SeqCst);
    println!("{DONE_TAG}\t{}", iteration - first);
}

// ---------------------------------------------------------------- the parent

/// One finding: what happened, where (a panic's location, or the abort's message), the
/// iteration and the saved input.
struct Finding {
    kind: String,
    place: String,
    iteration: u64,
    file: String,
    message: String,
}

/// This test's name as the harness knows it (`fuzz::<target>`).
fn test_name(target: &Target) -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{module}::{}", target.name)
}

/// Runs the child from iteration `first` for `seconds`; its exit status (None: killed
/// after the time limit) and its output.
fn spawn_child(
    target: &Target,
    settings: &Settings,
    first: u64,
    seconds: f64,
) -> (Option<std::process::ExitStatus>, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if Path::new("/usr/bin/prlimit").exists() {
        let mut c = Command::new("/usr/bin/prlimit");
        c.arg(format!("--as={MEMORY_LIMIT_BYTES}")).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let log = settings.log(target);
    let out = std::fs::File::create(&log).unwrap();
    let mut child = cmd
        .args([
            &test_name(target),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}:{first}", target.name))
        .env("MMFLOW_FUZZ_SECONDS", seconds.to_string())
        .env("MMFLOW_FUZZ_ITERATIONS", settings.iterations.to_string())
        .env("MMFLOW_FUZZ_SEED", settings.seed.to_string())
        .env("MMFLOW_FUZZ_DIR", &settings.dir)
        .env(
            "MMFLOW_FUZZ_HANG_SECONDS",
            settings.hang.as_secs_f64().to_string(),
        )
        .env("RUST_BACKTRACE", "0")
        // Fewer thread arenas and pools: less address space, and one core per input.
        .env("MALLOC_ARENA_MAX", "2")
        .env("POLARS_MAX_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("the test binary starts itself");
    let limit = Duration::from_secs_f64(seconds) + settings.hang * 2 + Duration::from_secs(60);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    (status, output)
}

/// The rest of a line after `tag` and a tab (the harness may have written `test … ` first).
fn tagged<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    line.find(tag)
        .and_then(|at| line[at + tag.len()..].strip_prefix('\t'))
}

/// What ended a child that did not finish, from its last words: (kind, place, message).
fn crash_kind(status: Option<std::process::ExitStatus>, output: &str) -> (String, String, String) {
    let line = |needle: &str| {
        output
            .lines()
            .find_map(|l| l.find(needle).map(|at| l[at..].to_string()))
    };
    if let Some(ms) = output.lines().find_map(|l| tagged(l, HANG_TAG)) {
        let message = format!("one input still running after {ms}");
        return ("hang".into(), String::new(), message);
    }
    if let Some(l) = line("memory allocation of") {
        // The refusing allocator printed where the allocation came from.
        let place = output
            .lines()
            .rev()
            .find_map(|l| tagged(l, ALLOC_TAG))
            .unwrap_or_default();
        return ("allocation bomb".into(), place.into(), l);
    }
    if let Some(l) = line("has overflowed its stack") {
        return ("stack overflow".into(), String::new(), l);
    }
    if let Some(l) = line("fatal runtime error").or_else(|| line("panicked while")) {
        return ("abort".into(), String::new(), l);
    }
    match status {
        None => (
            "hang".into(),
            String::new(),
            "the child did not stop; killed".into(),
        ),
        Some(s) => {
            let last = output
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            (
                "crash".into(),
                String::new(),
                format!("{s}; last output: {last}"),
            )
        }
    }
}

fn run_parent(target: &Target, settings: &Settings) {
    let started = Instant::now();
    let seeds = corpus(target).len();
    let mut findings: Vec<Finding> = Vec::new();
    let mut iterations = 0u64;
    let mut first = 0u64;
    loop {
        let left = settings.seconds - started.elapsed().as_secs_f64();
        if left <= 0.0 {
            break;
        }
        let _ = std::fs::remove_file(settings.progress(target));
        let (status, output) = spawn_child(target, settings, first, left);
        for line in output.lines().filter_map(|l| tagged(l, FINDING_TAG)) {
            let f: Vec<&str> = line.splitn(5, '\t').collect();
            if let [kind, iteration, file, place, message] = f[..] {
                findings.push(Finding {
                    kind: kind.into(),
                    place: place.into(),
                    iteration: iteration.parse().unwrap_or(0),
                    file: file.into(),
                    message: message.into(),
                });
            }
        }
        if let Some(done) = output.lines().find_map(|l| tagged(l, DONE_TAG)) {
            iterations += done.trim().parse::<u64>().unwrap_or(0);
            break;
        }
        let Some(last) = std::fs::read_to_string(settings.progress(target))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            panic!("fuzz {}: the child ran no input:\n{output}", target.name);
        };
        iterations += last + 1 - first;
        let (kind, place, message) = crash_kind(status, &output);
        let saved = settings.reproducer(target, last);
        std::fs::copy(settings.current(target), &saved).unwrap();
        findings.push(Finding {
            kind,
            place,
            iteration: last,
            file: saved.display().to_string(),
            message,
        });
        if !settings.report_only {
            break;
        }
        first = last + 1;
    }
    report(
        target,
        settings,
        started.elapsed(),
        iterations,
        seeds,
        &findings,
    );
}

fn report(
    target: &Target,
    settings: &Settings,
    took: Duration,
    iterations: u64,
    seeds: usize,
    findings: &[Finding],
) {
    // One line per distinct finding: kind and place (a panic's location, else its message).
    let mut distinct: BTreeMap<(String, String), (usize, &Finding)> = BTreeMap::new();
    for f in findings {
        let place = if f.place.is_empty() {
            f.message.chars().filter(|c| !c.is_ascii_digit()).collect()
        } else {
            f.place.clone()
        };
        distinct.entry((f.kind.clone(), place)).or_insert((0, f)).0 += 1;
    }
    let lines: Vec<String> = distinct
        .iter()
        .map(|((kind, _), (count, f))| {
            let place = if f.place.is_empty() {
                String::new()
            } else {
                format!(" at {}", f.place)
            };
            format!(
                "- {kind}{place} ({count}×, first at iteration {}): {}\n  input: {}",
                f.iteration, f.message, f.file
            )
        })
        .collect();
    println!(
        "fuzz {}: {iterations} inputs in {:.1} s (seed {}, {seeds} seed files), {} findings ({} distinct)",
        target.name,
        took.as_secs_f64(),
        settings.seed,
        findings.len(),
        distinct.len()
    );
    for line in &lines {
        println!("{line}");
    }
    assert!(
        settings.report_only || findings.is_empty(),
        "fuzz {}: {} findings:\n{}\nreplay one with MMFLOW_FUZZ_REPLAY=<input> cargo test --test integration {}",
        target.name,
        findings.len(),
        lines.join("\n"),
        test_name(target)
    );
}

// ---------------------------------------------------------------- replay

/// Runs one saved input in this process (a panic fails the test with its backtrace).
fn replay(target: &Target, settings: &Settings, file: &Path) {
    if file.extension().is_none_or(|e| e != target.ext) {
        println!(
            "fuzz {}: not replaying {} (not a .{} file)",
            target.name,
            file.display(),
            target.ext
        );
        return;
    }
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let current = settings.current(target);
    write_input(&current, &bytes);
    ALLOCATION_CAP.store(MAX_ALLOCATION, Ordering::SeqCst);
    let started = Instant::now();
    (target.run)(&current);
    ALLOCATION_CAP.store(usize::MAX, Ordering::SeqCst);
    println!(
        "fuzz {}: {} ran in {:.2?} without a finding",
        target.name,
        file.display(),
        started.elapsed()
    );
}
