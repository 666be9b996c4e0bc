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
//! mimalloc is called through its C API ([`libmimalloc_sys`]) rather than the `mimalloc`
//! crate's `GlobalAlloc`, which passes every layout to `mi_malloc_aligned`. In mimalloc 3 that
//! function has a fast path only for blocks of at most 1 KiB whose size class has a free block
//! at hand; every other request (hyper's 8 KiB read buffers, a response, any block whose page
//! just filled) goes through `mi_theap_malloc_zero_aligned_at_generic`, which for a size class
//! that is not a power of two over-allocates and marks the page as holding interior pointers:
//! about 100 instructions per allocation, 2 200 per pure-read `/identify` (callgrind,
//! BENCHMARKS.md "fifteenth pass"). A layout whose alignment is at most
//! [`MI_MAX_ALIGN_SIZE`] and at most its size needs no aligned allocation at all, because
//! every mimalloc block of 16 bytes or more is 16-byte aligned and every smaller one 8-byte
//! aligned (mimalloc's `_mi_page_malloc_zero` asserts it), so such layouts go to plain
//! `mi_malloc` / `mi_zalloc` / `mi_realloc`, exactly the rule the standard library's `System`
//! allocator applies to `malloc` (`MIN_ALIGN`). Other layouts keep the `_aligned` calls.
//!
//! Used as `#[global_allocator]` by the `idrecon` binary, the HTTP ceiling
//! (`examples/ceiling.rs`: the baseline runs the same allocator) and the benchmarks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Blocks of at least this many bytes come from the system allocator, smaller ones from
/// mimalloc. 256 KiB: above hyper's largest read buffer (and every per-request block), below
/// the value arena's 1 MiB pages and the graph's vectors at any size that matters.
pub const LARGE_BLOCK_BYTES: usize = 256 * 1024;

/// The alignment every mimalloc block of at least this many bytes has (mimalloc's
/// `MI_MAX_ALIGN_SIZE`, `sizeof(max_align_t)` on x86-64 and AArch64); smaller blocks are
/// 8-byte aligned.
pub const MI_MAX_ALIGN_SIZE: usize = 16;

/// Whether plain `mi_malloc(size)` already returns a block aligned for `align`: the alignment
/// is at most [`MI_MAX_ALIGN_SIZE`] and at most the size (so a block under 16 bytes, 8-byte
/// aligned, is only asked for 8 or less).
#[inline]
fn naturally_aligned(align: usize, size: usize) -> bool {
    align <= MI_MAX_ALIGN_SIZE && align <= size
}

/// The small-block half: mimalloc, by its C API, with the fast path of the module
/// documentation.
struct Small;

impl Small {
    #[inline]
    unsafe fn alloc(layout: Layout) -> *mut u8 {
        // SAFETY: plain C calls; the size is non-zero (`GlobalAlloc`'s contract) and the
        // alignment a power of two (`Layout`'s invariant).
        unsafe {
            if naturally_aligned(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if naturally_aligned(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(ptr: *mut u8) {
        // SAFETY: `ptr` came from one of mimalloc's allocation functions; `mi_free` takes
        // blocks of every one of them, aligned ones included.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is a live mimalloc block. `mi_realloc` keeps the block when it fits and
        // otherwise moves it into a `mi_malloc` block, aligned for `layout.align()` when that
        // is natural for `new_size` (mimalloc's own `mi_realloc_aligned` does the same for
        // small alignments); other alignments keep `mi_realloc_aligned`.
        unsafe {
            if naturally_aligned(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// The split allocator described in the module documentation. Holds no state: both halves are
/// process-wide.
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitAllocator;

/// Whether a block of `size` bytes belongs to the system allocator.
#[inline]
fn is_large(size: usize) -> bool {
    size >= LARGE_BLOCK_BYTES
}

// SAFETY: every method forwards to `System` (a sound `GlobalAlloc`) or to mimalloc through
// [`Small`] (whose functions return blocks aligned as asked, see `naturally_aligned`) by the
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
                Small::alloc(layout)
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
                Small::alloc_zeroed(layout)
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
                Small::dealloc(ptr)
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
                (false, false) => Small::realloc(ptr, layout, new_size),
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

    /// The fast path's claim: plain `mi_malloc` blocks are aligned for every layout
    /// `naturally_aligned` sends there, across size classes (powers of two and not, under and
    /// over 1 KiB) and through `realloc` between natural and over-aligned layouts.
    #[test]
    fn small_blocks_are_aligned_for_every_natural_and_over_aligned_layout() {
        let a = SplitAllocator;
        let sizes = [
            1, 3, 7, 8, 12, 15, 16, 24, 40, 48, 80, 100, 1000, 1500, 3000, 8192, 70_000,
        ];
        let aligns = [1, 2, 4, 8, 16, 32, 64, 256];
        let mut live = Vec::new();
        // SAFETY: every block is used within its size and freed once with its last layout.
        unsafe {
            for &size in &sizes {
                for &align in &aligns {
                    let layout = Layout::from_size_align(size, align).expect("layout");
                    // Several blocks of one layout, so a page's later blocks are checked too.
                    for round in 0..8 {
                        let p = if round % 2 == 0 {
                            a.alloc(layout)
                        } else {
                            a.alloc_zeroed(layout)
                        };
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        if round % 2 == 1 {
                            assert!((0..size).all(|i| p.add(i).read() == 0));
                        }
                        fill(p, size);
                        live.push((p, layout));
                    }
                }
            }
            for (p, layout) in live {
                check(p, layout.size());
                // Grow, then shrink below the alignment: the block moves or stays, aligned.
                let grown = layout.size() * 3 + 5;
                let q = a.realloc(p, layout, grown);
                assert!(!q.is_null());
                assert_eq!(q as usize % layout.align(), 0, "{layout:?} -> {grown}");
                check(q, layout.size());
                let grown_layout = Layout::from_size_align(grown, layout.align()).expect("layout");
                let r = a.realloc(q, grown_layout, 2);
                assert!(!r.is_null());
                assert_eq!(r as usize % layout.align(), 0, "{layout:?} -> 2");
                check(r, layout.size().min(2));
                a.dealloc(
                    r,
                    Layout::from_size_align(2, layout.align()).expect("layout"),
                );
            }
        }
    }

    #[test]
    fn natural_alignment_is_at_most_sixteen_and_at_most_the_size() {
        assert!(naturally_aligned(1, 1));
        assert!(naturally_aligned(8, 8));
        assert!(naturally_aligned(16, 16));
        assert!(naturally_aligned(16, 4096));
        assert!(!naturally_aligned(16, 8));
        assert!(!naturally_aligned(8, 4));
        assert!(!naturally_aligned(32, 4096));
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
