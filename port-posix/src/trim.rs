//! Giving freed heap memory back to the system after many connections close.
//!
//! glibc's malloc keeps what was freed inside its heaps (only the top of a heap is trimmed), so
//! a broker that once held 19,000 connections stayed at its peak RSS after they left (measured:
//! 40 MB before and after). musl's allocator returns whole groups by itself. [`Trimmer`] asks
//! glibc to release free pages (`malloc_trim(0)`) when the connection count has halved since
//! the last peak, so this happens a few times per wave of disconnects, never per connection.

/// Connections below which no trim is worth its cost.
const MIN_PEAK: usize = 1024;

/// Tracks the open connections and trims the heap after they halve from a peak.
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    peak: usize,
}

impl Trimmer {
    /// The count of open connections changed to `open`.
    pub(crate) fn update(&mut self, open: usize) {
        if open > self.peak {
            self.peak = open;
        } else if self.peak >= MIN_PEAK && open <= self.peak / 2 {
            release_free_memory();
            self.peak = open;
        }
    }
}

/// Returns the allocator's free pages to the system (glibc); nothing to do elsewhere.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn release_free_memory() -> bool {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> core::ffi::c_int;
    }
    // SAFETY: glibc's `malloc_trim(size_t)` takes no pointer and may be called from any thread
    // at any time (it takes the arena locks itself); it only releases memory malloc holds free.
    unsafe { malloc_trim(0) != 0 }
}

/// Returns the allocator's free pages to the system (glibc); nothing to do elsewhere.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_after_the_count_halves_from_a_large_peak() {
        let mut trimmer = Trimmer::default();
        for open in [10, 500, 1000, 600, 501] {
            trimmer.update(open);
        }
        assert_eq!(trimmer.peak, 1000, "a peak below MIN_PEAK is never trimmed");
        trimmer.update(2000);
        trimmer.update(1001);
        assert_eq!(trimmer.peak, 2000, "not yet halved");
        trimmer.update(1000);
        assert_eq!(
            trimmer.peak, 1000,
            "halved: trimmed, the count is the new peak"
        );
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn malloc_trim_returns_freed_memory() {
        fn rss_kb() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        }
        // 64 MB in small blocks (below the mmap threshold, so they live in the heap), every
        // other one kept so that the heap's top cannot simply shrink.
        let mut blocks: Vec<Vec<u8>> = (0..65_536).map(|i| vec![i as u8; 1024]).collect();
        let keep: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
        drop(blocks);
        let before = rss_kb();
        release_free_memory();
        let after = rss_kb();
        assert!(
            after + 16 * 1024 < before,
            "malloc_trim released less than 16 MB: {before} KB -> {after} KB"
        );
        drop(keep);
    }
}
