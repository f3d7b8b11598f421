//! Memory of this process: the resident size from `/proc/self/status` (Linux), whose peak
//! (`VmHWM`) is reset before each run through `/proc/self/clear_refs` so each run reports
//! its own; and, for one call at a time, the peak of heap bytes held above the level at
//! its start, counted by the process's allocator. The resident size alone cannot show what
//! a `list` holds: the allocator reuses what earlier workloads freed, so it rarely grows.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// The allocator of the bench process: the system's, counting the bytes allocated and
/// freed while [`heap_peak_during`] measures. Otherwise each call costs one relaxed load,
/// so the other workloads run as they would without it.
pub(crate) struct CountingAllocator;

/// Whether a measurement runs.
static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated minus bytes freed since the measurement started (negative when it freed
/// what was allocated before).
static HELD: AtomicIsize = AtomicIsize::new(0);
/// The highest `HELD` of the measurement.
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn signed(bytes: usize) -> isize {
    isize::try_from(bytes).unwrap_or(isize::MAX)
}

fn grew(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        let held = HELD.fetch_add(signed(bytes), Ordering::Relaxed) + signed(bytes);
        PEAK.fetch_max(held, Ordering::Relaxed);
    }
}

fn shrank(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        HELD.fetch_sub(signed(bytes), Ordering::Relaxed);
    }
}

// SAFETY: every call goes to `System` unchanged, with the caller's arguments; the counting
// reads only the sizes and never touches the memory.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s size rules.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        moved
    }
}

/// Runs `call` and returns its output with the peak of heap bytes the process held above
/// the level at its start, in bytes. One measurement at a time: the counters are global.
pub(crate) async fn heap_peak_during<F: Future>(call: F) -> (F::Output, u64) {
    HELD.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let output = call.await;
    COUNTING.store(false, Ordering::Relaxed);
    let peak = u64::try_from(PEAK.load(Ordering::Relaxed)).unwrap_or(0);
    (output, peak)
}

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
