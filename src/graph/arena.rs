//! The value arena: every email and phone number of the graph, back to back in fixed 1 MiB
//! pages, so that a contact's values cost their bytes and little more in resident memory.
//!
//! A row refers to its values by an 8-byte [`StrRef`] (offset and length) instead of a 16-byte
//! `Box<str>` pointing at its own heap block (whose allocator header and rounding cost another
//! 16–24 bytes per value). Pages are allocated at their full size once and never grow, so no
//! reallocation ever leaves a stale copy of a value in freed memory: [`Arena::wipe`] (erasure)
//! zeroes the only copy. Space is never reused; a wiped value's bytes stay zero.

use std::num::NonZeroU8;

/// Bytes per page. A value never spans two pages.
const PAGE: usize = 1 << 20;
/// Pages addressable by a `u32` offset (4 GiB of values, about 100 million contacts).
const MAX_PAGES: usize = (u32::MAX as usize + 1) / PAGE;

/// Where a value lives in the [`Arena`]: byte offset and length (1 to 255 bytes, enough for
/// the 254-byte emails and 32-character phones of docs/behaviour.md §4; never empty, so
/// `Option<StrRef>` is 8 bytes too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrRef {
    offset: u32,
    len: NonZeroU8,
}

/// Why a value cannot be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArenaError {
    /// Empty or longer than 255 bytes (only a damaged or hand-made log or snapshot can carry
    /// one: docs/behaviour.md §4 makes empty values absent).
    #[error("value empty or longer than 255 bytes")]
    BadLength,
    /// 4 GiB of values are stored already.
    #[error("the value arena is full")]
    Full,
}

/// Append-only storage of short strings in fixed pages. See the module docs.
#[derive(Debug, Default)]
pub struct Arena {
    pages: Vec<Vec<u8>>,
}

impl Clone for Arena {
    /// Pages of the clone get their full capacity too, so they never reallocate either.
    fn clone(&self) -> Self {
        let pages = self
            .pages
            .iter()
            .map(|page| {
                let mut copy = Vec::with_capacity(PAGE);
                copy.extend_from_slice(page);
                copy
            })
            .collect();
        Arena { pages }
    }
}

impl Arena {
    /// Stores `value` and returns where.
    ///
    /// # Errors
    /// [`ArenaError::BadLength`] for an empty value or one above 255 bytes;
    /// [`ArenaError::Full`] past 4 GiB in total.
    pub fn push(&mut self, value: &str) -> Result<StrRef, ArenaError> {
        let len = u8::try_from(value.len())
            .ok()
            .and_then(NonZeroU8::new)
            .ok_or(ArenaError::BadLength)?;
        let fits = self
            .pages
            .last()
            .is_some_and(|page| page.len() + value.len() <= PAGE);
        if !fits {
            if self.pages.len() >= MAX_PAGES {
                return Err(ArenaError::Full);
            }
            self.pages.push(Vec::with_capacity(PAGE));
        }
        let index = self.pages.len() - 1;
        let page = &mut self.pages[index];
        let offset = index * PAGE + page.len();
        page.extend_from_slice(value.as_bytes());
        Ok(StrRef {
            offset: offset as u32,
            len,
        })
    }

    fn range(r: StrRef) -> (usize, std::ops::Range<usize>) {
        let offset = r.offset as usize;
        let within = offset % PAGE;
        (offset / PAGE, within..within + usize::from(r.len.get()))
    }

    /// The bytes of a stored value (empty for a reference this arena did not give out).
    pub fn bytes(&self, r: StrRef) -> &[u8] {
        let (page, range) = Arena::range(r);
        self.pages
            .get(page)
            .and_then(|p| p.get(range))
            .unwrap_or_default()
    }

    /// A stored value as text ([`stored_text`]).
    pub fn get(&self, r: StrRef) -> &str {
        stored_text(self.bytes(r))
    }

    /// Overwrites a stored value with zeros (erasure); its space is not reused.
    pub fn wipe(&mut self, r: StrRef) {
        let (page, range) = Arena::range(r);
        if let Some(bytes) = self.pages.get_mut(page).and_then(|p| p.get_mut(range)) {
            zeroize::Zeroize::zeroize(bytes);
        }
    }

    /// Whether any page holds `needle` (tests of erasure).
    #[cfg(test)]
    pub(crate) fn pages_contain(&self, needle: &[u8]) -> bool {
        self.pages
            .iter()
            .any(|page| page.windows(needle.len()).any(|w| w == needle))
    }
}

/// A stored value's bytes as text. Values are stored from `&str`, and erased ones are zero
/// bytes, so the bytes are always UTF-8; anything else (only a damaged arena could hold it)
/// reads as empty rather than panicking.
pub fn stored_text(bytes: &[u8]) -> &str {
    // Most values are ASCII, which a word-at-a-time scan confirms in a fraction of what the
    // full UTF-8 check costs on short strings.
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        return unsafe { std::str::from_utf8_unchecked(bytes) };
    }
    std::str::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_across_pages_and_wipe_in_place() {
        let mut arena = Arena::default();
        let value = "x".repeat(250);
        let refs: Vec<StrRef> = (0..10_000).map(|_| arena.push(&value).unwrap()).collect();
        assert!(arena.pages.len() > 1, "spans pages");
        assert!(refs.iter().all(|r| arena.get(*r) == value));
        assert!(
            arena.pages.iter().all(|p| p.capacity() == PAGE),
            "pages never grow"
        );
        let short = arena.push("lorraine@hillvalley.edu").unwrap();
        assert_eq!(arena.get(short), "lorraine@hillvalley.edu");
        arena.wipe(short);
        assert_eq!(arena.bytes(short), &[0u8; 23]);
        assert_eq!(arena.get(refs[0]), value, "neighbours untouched");
        assert_eq!(arena.push(&"y".repeat(256)), Err(ArenaError::BadLength));
        assert_eq!(arena.push(""), Err(ArenaError::BadLength));
        assert_eq!(std::mem::size_of::<Option<StrRef>>(), 8);
        assert_eq!(
            arena.push(&"é".repeat(127)).map(|r| arena.get(r).len()),
            Ok(254)
        );
    }
}
