//! Progress bars for long stages (hidden with `--quiet` or when stderr is not a terminal).

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress display of a whole run; cheap to clone and share between stages.
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    prefix: String,
}

impl Progress {
    /// Progress drawn on stderr (when it is a terminal).
    pub fn stderr() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        Progress {
            multi: Some(multi),
            prefix: String::new(),
        }
    }

    /// No progress display.
    pub fn hidden() -> Self {
        Progress {
            multi: None,
            prefix: String::new(),
        }
    }

    /// The underlying display, to print log lines without tearing the bars.
    pub fn multi(&self) -> Option<&MultiProgress> {
        self.multi.as_ref()
    }

    /// The same display with bars labelled by a stage id.
    pub fn for_stage(&self, stage: &str) -> Self {
        Progress {
            multi: self.multi.clone(),
            prefix: stage.to_string(),
        }
    }

    /// A bar of `total` steps described by `what`; finished and removed when dropped.
    pub fn bar(&self, what: &str, total: u64) -> Bar {
        let Some(multi) = &self.multi else {
            return Bar(ProgressBar::hidden());
        };
        let bar = multi.add(ProgressBar::new(total));
        let style =
            ProgressStyle::with_template("{prefix:>12} {msg:24} [{bar:30}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(self.prefix.clone());
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        Bar(bar)
    }
}

/// One progress bar.
pub struct Bar(ProgressBar);

impl Bar {
    /// Advances by `n` steps.
    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    /// Changes the description.
    pub fn set_message(&self, what: &str) {
        self.0.set_message(what.to_string());
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
