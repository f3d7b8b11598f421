//! Resident memory of this process, from `/proc/self/status` (Linux). The peak (`VmHWM`)
//! is reset before each run through `/proc/self/clear_refs`, so each run reports its own.

/// Resets the peak to the current resident size; a no-op where Linux does not allow it.
pub(crate) fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The resident size now, in KiB (0 if unknown).
pub(crate) fn current_kib() -> u64 {
    status_kib("VmRSS:")
}

/// The peak resident size since the last reset, in KiB (0 if unknown).
pub(crate) fn peak_kib() -> u64 {
    status_kib("VmHWM:")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}
