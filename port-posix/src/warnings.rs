//! Rate-limited warnings.
//!
//! A subscriber whose queue stays full has every further message for it dropped, and each drop
//! is worth a warning, but one line per message is hundreds of thousands of lines a second
//! (measured: 470,000 in 4 s of one overloaded fan-in) on a router whose log lives in a few MB
//! of RAM or on flash. [`WarningLimit`] lets the first few of a window through and then counts
//! the rest, for one summary line when the window ends.

/// Warnings written one by one in a window.
const PER_WINDOW: u32 = 10;

/// The window, in milliseconds.
const WINDOW_MS: u64 = 10_000;

/// Admits at most [`PER_WINDOW`] warnings per [`WINDOW_MS`] and counts the others.
#[derive(Debug, Default)]
pub(crate) struct WarningLimit {
    /// When the current window started (ms on the worker's clock); `None` before the first.
    started: Option<u64>,
    /// Warnings written in the current window.
    written: u32,
    /// Warnings held back in the current window.
    held_back: u64,
}

impl WarningLimit {
    /// At `now` (ms), a warning is due: returns whether to write it (else it is counted).
    pub(crate) fn admit(&mut self, now: u64) -> bool {
        if self.started.is_none() {
            self.started = Some(now);
        }
        if self.written < PER_WINDOW {
            self.written += 1;
            true
        } else {
            self.held_back += 1;
            false
        }
    }

    /// Whether a window is open (a warning came and its window has not been ended).
    pub(crate) fn in_window(&self) -> bool {
        self.started.is_some()
    }

    /// Ends the window if it is over at `now`, returning how many warnings it held back (for
    /// a summary line) when there were any. The next warning starts a new window.
    pub(crate) fn end_window(&mut self, now: u64) -> Option<u64> {
        let started = self.started?;
        if now.saturating_sub(started) < WINDOW_MS {
            return None;
        }
        let held_back = core::mem::take(&mut self.held_back);
        *self = WarningLimit::default();
        (held_back > 0).then_some(held_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_window_pass_the_rest_are_counted_for_its_summary() {
        let mut limit = WarningLimit::default();
        assert_eq!(limit.end_window(0), None, "no window before a warning");
        assert!(!limit.in_window());
        let admitted = (0..1000).filter(|&n| limit.admit(n)).count();
        assert_eq!(admitted, PER_WINDOW as usize);
        assert_eq!(limit.end_window(WINDOW_MS - 1), None, "not over yet");
        assert_eq!(
            limit.end_window(WINDOW_MS),
            Some(1000 - u64::from(PER_WINDOW))
        );
        // A new window admits again; one without held-back warnings needs no summary.
        assert!(limit.admit(WINDOW_MS + 5));
        assert_eq!(limit.end_window(3 * WINDOW_MS), None);
        assert!(!limit.in_window(), "ended");
        assert!(limit.admit(3 * WINDOW_MS));
    }
}
