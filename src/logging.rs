//! Concise logs on stderr that do not tear the progress bars.

use std::io::{IsTerminal, Write};

use mmflow_pipeline::Progress;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `info` (or `warn` with `--quiet`), `RUST_LOG` overrides.
pub fn init(quiet: bool, progress: Progress) {
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_writer(LineWriter { progress })
        .try_init();
}

/// Writes each log line above the progress bars.
#[derive(Clone)]
struct LineWriter {
    progress: Progress,
}

struct Line {
    progress: Progress,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for LineWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            progress: self.progress.clone(),
            buf: Vec::new(),
        }
    }
}

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let print = || {
            let _ = std::io::stderr().write_all(&buf);
        };
        match self.progress.multi() {
            Some(multi) => multi.suspend(print),
            None => print(),
        }
    }
}
