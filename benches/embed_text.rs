//! `embed_text` on a segments table with a `text` column: the stage's work as `mmflow run`
//! does it (model folder loaded, texts tokenized, sorted, batched, embedded, written), timed,
//! with the process's peak resident memory. Driven by `benches/embed_text.py`, which writes the
//! table and times sentence-transformers on the same sentences:
//!
//!     cargo bench --bench embed_text -- SEGMENTS MODEL_FOLDER OUT [BATCH_SIZE] [POOLING]
//!
//! Prints one JSON line: segments, seconds, segments per second, peak RSS (MiB), the report.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use mmflow_schemas::TableMeta;
use mmflow_stages::embed_text::{embed_segments, EmbedTextParams};
use mmflow_stages::text_encoder::Pooling;

/// Peak resident set size of this process in MiB (Linux `VmHWM`), 0 where unknown.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    // As the `mmflow` binary runs them.
    mmflow_stages::run_elementwise_ops_inline();
    // `cargo bench` adds `--bench`; only the positional arguments matter.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [segments, model, out, rest @ ..] = args.as_slice() else {
        eprintln!("usage: embed_text SEGMENTS MODEL_FOLDER OUT [BATCH_SIZE] [mean|cls|tokens]");
        std::process::exit(2);
    };
    let batch_size = rest.first().map_or(32, |b| b.parse().expect("batch size"));
    let pooling = match rest.get(1).map(String::as_str) {
        None | Some("mean") => Pooling::Mean,
        Some("cls") => Pooling::Cls,
        Some("tokens") => Pooling::Tokens,
        Some(other) => panic!("unknown pooling {other}"),
    };
    let params = EmbedTextParams {
        model: PathBuf::from(model),
        pooling,
        max_length: None,
        batch_size,
    };
    let start = Instant::now();
    let report = embed_segments(
        segments.as_ref(),
        out.as_ref(),
        &params,
        &Device::Cpu,
        &TableMeta::default(),
        &|_| {},
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let seconds = start.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "segments": report.segments,
        "seconds": seconds,
        "per_second": report.segments as f64 / seconds,
        "peak_rss_mib": peak_rss_mib(),
        "report": report,
    });
    println!("{line}");
}
