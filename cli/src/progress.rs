//! Progress bars on stderr for long work; hidden when stderr is not a
//! terminal or when the output is JSON.
use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(total: u64, what: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {percent:>3}% {elapsed_precise} eta {eta}")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    // Only draw when the work takes more than a moment.
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    bar
}
