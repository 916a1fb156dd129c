//! The progress bar of `tstat_send` on a terminal, drawn from the driver's
//! [`Progress`] events.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::report::Progress;

/// A pass's bar, or the spinner of the wait between passes.
#[derive(Debug, Default)]
pub struct Bar {
    /// The bar on screen and the directories in its pass.
    shown: Mutex<Option<(ProgressBar, usize)>>,
}

impl Bar {
    /// Whether a bar asked for can be shown (stderr is a terminal).
    pub fn available(wanted: bool) -> bool {
        wanted && std::io::stderr().is_terminal()
    }

    /// Draws one step.
    pub fn update(&self, step: Progress<'_>) {
        let Ok(mut shown) = self.shown.lock() else {
            return;
        };
        match step {
            Progress::PassStarted { dirs, bytes } => {
                *shown = Some((
                    start(
                        bytes,
                        "{spinner} [{prefix}] {wide_msg} {bytes}/{total_bytes} ({percent}%, ETA {eta})",
                    ),
                    dirs,
                ));
            }
            Progress::Waiting { text } => {
                let bar = start(0, "{spinner} {msg} ({elapsed})");
                bar.set_message(text.to_string());
                *shown = Some((bar, 0));
            }
            Progress::DirStarted { index, name } => {
                if let Some((b, dirs)) = shown.as_ref() {
                    b.set_prefix(format!("{}/{dirs}", index + 1));
                    b.set_message(name.to_string());
                }
            }
            Progress::Messages { name, count } => {
                if let Some((b, _)) = shown.as_ref() {
                    b.set_message(format!("{name}: {count} messages"));
                }
            }
            Progress::DirDone { bytes } => {
                if let Some((b, _)) = shown.as_ref() {
                    b.inc(bytes);
                }
            }
            Progress::PassDone | Progress::WaitDone => {
                if let Some((b, _)) = shown.take() {
                    b.finish_and_clear();
                    super::set_progress_bar(None);
                }
            }
        }
    }
}

/// A bar registered so that lines printed meanwhile go above it.
fn start(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    super::set_progress_bar(Some(bar.clone()));
    bar
}
