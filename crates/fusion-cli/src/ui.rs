//! What the program shows while it works: text or JSON on stdout, warnings on stderr,
//! and progress bars fed by the library's [`fusion_run::Observer`] calls.

use std::time::Duration;

use anyhow::Result;
use fusion_core::Progress;
use fusion_run::{Loaded, Observer, describe};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// How much the program prints: text with progress bars, nothing, or one JSON value.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    /// No output except errors.
    pub quiet: bool,
    /// One JSON value on stdout, no text, no bars.
    pub json: bool,
    /// Print a line per training epoch.
    pub epochs: bool,
}

impl Ui {
    /// A line of text (not in quiet or JSON mode).
    pub fn say(&self, text: impl std::fmt::Display) {
        if !self.quiet && !self.json {
            print_line(&mut std::io::stdout().lock(), &text);
        }
    }

    /// A warning on stderr (not in quiet mode).
    pub fn warn(&self, text: impl std::fmt::Display) {
        if !self.quiet {
            print_line(&mut std::io::stderr().lock(), &text);
        }
    }

    /// The command's result as JSON (JSON mode only).
    pub fn result(&self, value: &impl Serialize) -> Result<()> {
        if self.json {
            print_line(&mut std::io::stdout().lock(), &serde_json::to_string(value)?);
        }
        Ok(())
    }

    /// A progress bar with rate and ETA on stderr (hidden in quiet/JSON mode and when
    /// stderr is not a terminal).
    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if self.quiet || self.json {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        let style = ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// Shows a library call's progress: a bar while features are extracted, then what the
/// loading found (bad lines, records and files) and a summary line.
pub struct Shown {
    ui: Ui,
    bar: std::sync::Mutex<Option<ProgressBar>>,
    training: std::sync::Mutex<Option<ProgressBar>>,
}

impl Shown {
    /// Shows through `ui`.
    pub fn new(ui: Ui) -> Self {
        Self {
            ui,
            bar: std::sync::Mutex::new(None),
            training: std::sync::Mutex::new(None),
        }
    }
}

/// The bar in `slot`, whatever a panicking holder left.
fn lock(slot: &std::sync::Mutex<Option<ProgressBar>>) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Observer for Shown {
    fn features(&self, done: usize, total: usize) {
        let mut bar = lock(&self.bar);
        let bar = bar.get_or_insert_with(|| self.ui.bar(0, "features"));
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }

    fn loaded(&self, loaded: &Loaded) {
        let bar = self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let (ui, manifest) = (self.ui, &loaded.manifest);
        let path = manifest.path.display();
        for line in &manifest.rejected {
            ui.warn(format!("skipped {path}: {line}"));
        }
        for field in &manifest.unknown_fields {
            ui.warn(format!("{path}: {}", fusion_core::with_suggestion(&field.to_string())));
        }
        let extraction = &loaded.extraction;
        for problem in &extraction.absent {
            ui.warn(format!("unusable file, its modality left out: {}", describe(problem)));
        }
        for problem in &extraction.problems {
            ui.warn(format!("skipped record {}", describe(problem)));
        }
        for error in &extraction.cache_errors {
            ui.warn(format!("warning: features not cached: {error}"));
        }
        ui.say(format!(
            "{} records: {} usable, {} skipped, {} files unusable (modality left out), {} unreadable manifest lines; features {} from cache, {} computed",
            loaded.considered(),
            extraction.records.len(),
            loaded.skipped_records(),
            extraction.absent.len(),
            manifest.rejected.len(),
            extraction.cached,
            extraction.computed
        ));
    }

    fn training(&self, epochs: usize, steps: usize) {
        *lock(&self.training) = Some(self.ui.bar((epochs * steps) as u64, "training"));
    }

    fn progress(&self, progress: &Progress<'_>) {
        let training = lock(&self.training);
        let Some(bar) = training.as_ref() else {
            return;
        };
        match progress {
            Progress::Step {
                epoch,
                step,
                steps,
                loss,
            } => {
                bar.set_position(((epoch - 1) * steps + step) as u64);
                bar.set_message(format!("epoch {epoch} loss {loss:.3}"));
            }
            Progress::Epoch(record) if self.ui.epochs => {
                let val = match (record.val_accuracy, record.val_r2) {
                    (Some(a), _) => format!(", val accuracy {a:.4}"),
                    (None, Some(r2)) => format!(", val R² {r2:.4}"),
                    (None, None) => String::new(),
                };
                let line = format!("epoch {:>3}: train loss {:.4}{val}", record.epoch, record.train_loss);
                // A hidden bar (no terminal) drops its println: print the line plainly.
                if bar.is_hidden() {
                    self.ui.say(line);
                } else {
                    bar.println(line);
                }
            }
            Progress::Epoch(_) => {}
        }
    }

    fn trained(&self) {
        if let Some(bar) = lock(&self.training).take() {
            bar.finish_and_clear();
        }
    }

    fn step(&self, text: &str) {
        self.ui.say(text);
    }

    fn warn(&self, text: &str) {
        self.ui.warn(text);
    }
}

/// A score to four decimals, or `–` where there is none.
pub fn four_places(value: Option<f64>) -> String {
    value.map_or("–".to_string(), |v| format!("{v:.4}"))
}

/// One line on `out`. A reader that went away (`fusion eval --json | head -c 10`) or a
/// full disk costs the line, never the command: its files are written already.
pub fn print_line(out: &mut impl std::io::Write, text: &impl std::fmt::Display) {
    let _ = writeln!(out, "{text}");
}
