//! The process's global allocator: small blocks from mimalloc, large blocks from the system
//! allocator (glibc's `malloc`), chosen by size alone (issue 3, BENCHMARKS.md "thirteenth
//! pass").
//!
//! Why two. A request allocates and frees dozens of small blocks (hyper's buffers, the parsed
//! body, the events and the answer of a write, which live across the wait for the group
//! commit); glibc serves them from one arena with fast bins whose consolidation
//! (`malloc_consolidate`, `unlink_chunk`) showed up only in the workloads that write, and
//! mimalloc's per-thread free lists serve them in a few instructions. But mimalloc alone was
//! tried and dropped in the fourth pass: the graph's large vectors (rows, links, index tables,
//! 1 MiB value-arena pages: hundreds of MiB at 10 M contacts) regrow by copying under mimalloc,
//! where glibc moves their pages with `mremap`, which made start-up from a 10 M snapshot 50 %
//! slower and resident memory 158 bytes per contact instead of 119 (issue 3's limit is 150). So
//! every block of [`LARGE_BLOCK_BYTES`] or more goes to glibc exactly as before (which maps the
//! large ones on their own and regrows them with `mremap`), and everything smaller to mimalloc.
//!
//! The choice depends only on a block's size, which Rust passes to `dealloc` and `realloc`
//! (the layout a block was allocated with, `GlobalAlloc`'s contract), so every block is freed
//! by the allocator that made it. A `realloc` that crosses the threshold allocates in the other
//! allocator, copies and frees: a vector growing past 256 KiB moves once.
//!
//! Used as `#[global_allocator]` by the `idrecon` binary, the HTTP ceiling
//! (`examples/ceiling.rs`: the baseline runs the same allocator) and the benchmarks.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks of at least this many bytes come from the system allocator, smaller ones from
/// mimalloc. 256 KiB: above hyper's largest read buffer (and every per-request block), below
/// the value arena's 1 MiB pages and the graph's vectors at any size that matters.
pub const LARGE_BLOCK_BYTES: usize = 256 * 1024;

/// The split allocator described in the module documentation. Holds no state: both halves are
/// process-wide.
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitAllocator;

/// Whether a block of `size` bytes belongs to the system allocator.
#[inline]
fn is_large(size: usize) -> bool {
    size >= LARGE_BLOCK_BYTES
}

// SAFETY: every method forwards to `System` or `MiMalloc` (both sound `GlobalAlloc`s) by the
// block's size; a block is always freed or resized by the allocator that allocated it, because
// the size decides and `GlobalAlloc` callers pass the size the block was allocated (or last
// reallocated) with. The cross-allocator `realloc` copies `min(old, new)` bytes between two
// distinct live blocks, then frees the old one, as `GlobalAlloc::realloc`'s default does.
unsafe impl GlobalAlloc for SplitAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's (non-zero-size) layout.
        unsafe {
            if is_large(layout.size()) {
                System.alloc(layout)
            } else {
                MiMalloc.alloc(layout)
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if is_large(layout.size()) {
                System.alloc_zeroed(layout)
            } else {
                MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated with `layout` by this allocator, so by the half chosen by
        // the same size.
        unsafe {
            if is_large(layout.size()) {
                System.dealloc(ptr, layout)
            } else {
                MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let from_large = is_large(layout.size());
        let to_large = is_large(new_size);
        // SAFETY: same-half resizes are forwarded as they are; a crossing one allocates a new
        // block in the other half (the new layout is valid: `new_size` does not overflow when
        // rounded to `layout.align()`, `realloc`'s contract), copies the bytes both blocks
        // hold and frees the old block with its own layout.
        unsafe {
            match (from_large, to_large) {
                (true, true) => System.realloc(ptr, layout, new_size),
                (false, false) => MiMalloc.realloc(ptr, layout, new_size),
                _ => {
                    let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                    let new_ptr = self.alloc(new_layout);
                    if !new_ptr.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new_ptr
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates through `SplitAllocator` directly (the test binary's global allocator is the
    /// default one), so these tests exercise both halves and the crossings whatever the
    /// process uses.
    fn fill(ptr: *mut u8, len: usize) {
        for i in 0..len {
            // SAFETY: `ptr` points to a live block of at least `len` bytes.
            unsafe { ptr.add(i).write((i % 251) as u8) };
        }
    }

    fn check(ptr: *const u8, len: usize) {
        for i in 0..len {
            // SAFETY: as `fill`.
            assert_eq!(unsafe { ptr.add(i).read() }, (i % 251) as u8, "byte {i}");
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_across_the_threshold_both_ways() {
        let a = SplitAllocator;
        let small = 1000;
        let large = LARGE_BLOCK_BYTES + 4096;
        let layout = Layout::from_size_align(small, 8).expect("layout");
        // SAFETY: each block is used within its size and freed once with its last layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            fill(p, small);
            let p = a.realloc(p, layout, large);
            assert!(!p.is_null());
            check(p, small);
            fill(p, large);
            let large_layout = Layout::from_size_align(large, 8).expect("layout");
            let p = a.realloc(p, large_layout, small);
            assert!(!p.is_null());
            check(p, small);
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn both_halves_honour_alignment_and_zeroing() {
        let a = SplitAllocator;
        for size in [8, 4096, LARGE_BLOCK_BYTES - 1, LARGE_BLOCK_BYTES, 3 << 20] {
            for align in [8, 64, 4096] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: read within the block, freed once with its layout.
                unsafe {
                    let p = a.alloc_zeroed(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    assert!((0..size).step_by(997).all(|i| p.add(i).read() == 0));
                    a.dealloc(p, layout);
                }
            }
        }
    }

    #[test]
    fn same_half_realloc_grows_in_place_or_moves_with_the_bytes() {
        let a = SplitAllocator;
        // SAFETY: as above.
        unsafe {
            let mut layout = Layout::from_size_align(LARGE_BLOCK_BYTES, 16).expect("layout");
            let mut p = a.alloc(layout);
            fill(p, layout.size());
            for size in [LARGE_BLOCK_BYTES * 2, LARGE_BLOCK_BYTES * 8] {
                p = a.realloc(p, layout, size);
                assert!(!p.is_null());
                check(p, layout.size());
                fill(p, size);
                layout = Layout::from_size_align(size, 16).expect("layout");
            }
            a.dealloc(p, layout);
        }
    }
}
