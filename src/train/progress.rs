//! indicatif progress bars with the look shared by every long dace command.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` steps; hidden when stderr is not a terminal (CI logs stay readable).
pub fn bar(len: u64, prefix: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {per_sec:>10} ETA {eta:>4} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.into());
    bar
}
