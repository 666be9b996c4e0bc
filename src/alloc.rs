//! The process's global allocator: blocks under [`LARGE_BLOCK_BYTES`] from mimalloc (the
//! `mimalloc` crate), larger ones from the system allocator (glibc's `malloc`), chosen by size
//! alone (docs/design.md, "The allocator").
//!
//! Why two. A request allocates and frees dozens of small blocks (hyper's buffers, the parsed
//! body, a write's events and answer, which live across the group commit's wait); glibc serves
//! them from arenas whose consolidation (`malloc_consolidate`, `unlink_chunk`) takes a tenth of
//! the CPU of a workload that writes, where mimalloc's per-thread free lists take a few
//! instructions. But the graph's large vectors (rows, links, index tables: hundreds of MiB at
//! 10 M contacts) regrow by copying under mimalloc, where glibc maps them on their own and moves
//! their pages with `mremap`; copying them under the graph's write lock stalls every request,
//! and the copies' peaks raise resident memory. So every block of [`LARGE_BLOCK_BYTES`] or more
//! goes to glibc exactly as without this allocator.
//!
//! The choice depends only on a block's size, which Rust passes to `dealloc` and `realloc` (the
//! layout a block was allocated or last resized with, `GlobalAlloc`'s contract), so every block
//! is freed by the allocator that made it. A `realloc` across the threshold allocates in the
//! other allocator, copies and frees: a vector growing past 256 KiB moves once.
//!
//! Used as `#[global_allocator]` by the `idrecon` binary and by the HTTP ceiling
//! (`examples/ceiling.rs`), so the ceiling every HTTP figure is divided by runs the same
//! allocator.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks of at least this many bytes come from the system allocator, smaller ones from
/// mimalloc. 256 KiB: above hyper's largest read buffer and every other per-request block,
/// below the graph's vectors at any size that matters.
pub const LARGE_BLOCK_BYTES: usize = 256 * 1024;

/// The split allocator of the module documentation; it holds no state (both halves are
/// process-wide). Hand-written dispatch rather than one allocator for everything, because
/// against glibc alone it raised `benches/http.sh`'s `checkout-mix` ratio by a fifth and `new`'s
/// by 7 % in alternating rounds (docs/design.md, "The allocator").
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitAllocator;

/// Whether a block of `size` bytes belongs to the system allocator.
#[inline]
fn is_large(size: usize) -> bool {
    size >= LARGE_BLOCK_BYTES
}

// SAFETY: every method forwards to `System` or to `MiMalloc` (both sound `GlobalAlloc`s) by the
// block's size; a block is always freed or resized by the allocator that allocated it, because
// the size decides and callers pass the size the block was allocated (or last resized) with.
// The cross-allocator `realloc` copies `min(old, new)` bytes between two distinct live blocks,
// then frees the old one, as `GlobalAlloc::realloc`'s default does.
unsafe impl GlobalAlloc for SplitAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout, which meets `GlobalAlloc`'s contract.
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
        // SAFETY: `layout.size()` is the size `ptr` was allocated with, so the same half that
        // allocated it frees it.
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
        let (was_large, will_be_large) = (is_large(layout.size()), is_large(new_size));
        // SAFETY: when both sizes fall on one side, that half resizes its own block. Otherwise
        // `new_layout` is valid (the caller guarantees `new_size` rounded up to the alignment
        // does not overflow), the other half allocates a distinct block, `min(old, new)` bytes
        // are in bounds of both, and the old block is freed by the half that made it.
        unsafe {
            match (was_large, will_be_large) {
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

    /// Every size class round-trips through both halves and across the threshold in both
    /// directions, keeping its bytes and its alignment.
    #[test]
    fn blocks_keep_their_bytes_across_the_threshold() {
        let a = SplitAllocator;
        for &(from, to) in &[
            (16, 64),
            (1000, LARGE_BLOCK_BYTES - 1),
            (LARGE_BLOCK_BYTES - 1, LARGE_BLOCK_BYTES),
            (100, 2 * LARGE_BLOCK_BYTES),
            (2 * LARGE_BLOCK_BYTES, 100),
            (LARGE_BLOCK_BYTES, 4 * LARGE_BLOCK_BYTES),
        ] {
            for align in [8, 64, 4096] {
                let layout = Layout::from_size_align(from, align).expect("valid layout");
                // SAFETY: non-zero sizes; every block is freed once with its current layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0);
                    for i in 0..from {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let q = a.realloc(p, layout, to);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "{from} → {to} at {align}");
                    for i in 0..from.min(to) {
                        assert_eq!(*q.add(i), (i % 251) as u8, "{from} → {to}, byte {i}");
                    }
                    a.dealloc(q, Layout::from_size_align(to, align).expect("valid layout"));
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_on_both_sides() {
        let a = SplitAllocator;
        for size in [24, LARGE_BLOCK_BYTES + 8] {
            let layout = Layout::from_size_align(size, 16).expect("valid layout");
            // SAFETY: non-zero size; freed once with its layout.
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert!((0..size).all(|i| *p.add(i) == 0));
                a.dealloc(p, layout);
            }
        }
    }
}
