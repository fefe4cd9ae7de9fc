//! Progress of long offline work, and Ctrl-C.
//!
//! On a terminal (stderr, where it is drawn, so `jitflow export > file` still shows it) the
//! progress is an indicatif bar with rate and ETA; otherwise a plain line on stderr every
//! [`PLAIN_EVERY`] items and at the end, which reads well in CI logs and pipes.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

/// Items between two plain progress lines.
pub const PLAIN_EVERY: u64 = 10_000;

/// Set when Ctrl-C arrives; long work checks it between steps and stops cleanly.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Records a Ctrl-C.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether Ctrl-C arrived.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The progress of one piece of work.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: Option<u64>,
    done: u64,
    printed: u64,
}

impl Progress {
    /// Progress over `total` items (unknown: a spinner, or plain counts).
    pub fn new(label: &'static str, total: Option<u64>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(n) => ProgressBar::new(n).with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template(
                        "{spinner} {msg} {human_pos} ({per_sec}) {elapsed}",
                    )
                    .expect("a valid template"),
                ),
            };
            bar.set_message(label);
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            label,
            total,
            done: 0,
            printed: 0,
        }
    }

    /// `n` more items done.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None => {
                if self.done - self.printed >= PLAIN_EVERY {
                    self.printed = self.done;
                    self.plain();
                }
            }
        }
    }

    fn plain(&self) {
        match self.total {
            Some(t) => eprintln!("{}: {}/{}", self.label, self.done, t),
            None => eprintln!("{}: {}", self.label, self.done),
        }
    }

    /// The work ended (done or stopped): clears the bar, or prints the last plain line.
    pub fn finish(self) {
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => {
                if self.done != self.printed {
                    self.plain();
                }
            }
        }
    }
}
