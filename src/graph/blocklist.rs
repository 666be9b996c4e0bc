//! Blocked values: emails and phone numbers that are stored on their row but never used for
//! matching, so they never link anyone (docs/behaviour.md §3.6; the idea of Segment's
//! "blocked values" and Amperity's "bad values").
//!
//! A value is blocked when it equals one of the exact entries (compared after the same
//! normalization as docs/behaviour.md §4: trimmed, ASCII-lowercased) or fully matches one of the
//! regular expressions (`regex` crate syntax, anchored at both ends; add `(?i)` for
//! case-insensitive patterns). The list applies to emails and phones alike.
//!
//! The list is configuration, not data: the graph consults it when it indexes a value (on every
//! insert, replay and snapshot load) and when it plans a request. Changing it never rewrites a
//! link already made (docs/behaviour.md §3.6).

use std::collections::HashSet;

use regex::RegexSet;

/// Exact values of [`BlockList::recommended`]: placeholder emails and "no value" words that
/// checkout forms commonly receive.
pub const RECOMMENDED_EXACT: &[&str] = &[
    "test@test.com",
    "test@example.com",
    "example@example.com",
    "email@example.com",
    "user@example.com",
    "customer@example.com",
    "noemail@noemail.com",
    "no@email.com",
    "none@none.com",
    "na@na.com",
    "null@null.com",
    "a@a.com",
    "abc@abc.com",
    "asdf@asdf.com",
    "null",
    "none",
    "nil",
    "n/a",
    "na",
    "undefined",
    "unknown",
    "test",
];

/// Regular expressions of [`BlockList::recommended`]: phone numbers made of one repeated digit
/// (`0000000000`, `+1111111111`), counting sequences, and `noreply`-style addresses.
pub const RECOMMENDED_PATTERNS: &[&str] = &[
    r"\+?(?:0+|1+|2+|3+|4+|5+|6+|7+|8+|9+)",
    r"\+?(?:0123456789|1234567890|123456789|12345678)",
    r"(?:noreply|no-reply|donotreply|do-not-reply|noemail|nomail)@.+",
];

/// Why a block list could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BlockListError {
    /// A pattern is not a valid regular expression.
    #[error("invalid blocked-value pattern: {0}")]
    Pattern(#[from] regex::Error),
}

/// A set of blocked values. See the module docs for the matching rule.
#[derive(Clone, Debug, Default)]
pub struct BlockList {
    exact: HashSet<Box<str>>,
    patterns: Option<RegexSet>,
    sources: Vec<String>,
}

impl BlockList {
    /// The empty list (the default: docs/behaviour.md §3 exactly).
    pub fn none() -> BlockList {
        BlockList::default()
    }

    /// The documented recommended list ([`RECOMMENDED_EXACT`], [`RECOMMENDED_PATTERNS`]),
    /// turned on by `--blocked-values recommended`.
    pub fn recommended() -> BlockList {
        // The built-in patterns are valid (checked by the unit tests).
        BlockList::new(
            RECOMMENDED_EXACT.iter().map(|s| s.to_string()),
            RECOMMENDED_PATTERNS.iter().map(|s| s.to_string()),
        )
        .unwrap_or_default()
    }

    /// A list of exact values and regular expressions.
    ///
    /// # Errors
    /// [`BlockListError::Pattern`] naming the first invalid pattern.
    pub fn new(
        exact: impl IntoIterator<Item = String>,
        patterns: impl IntoIterator<Item = String>,
    ) -> Result<BlockList, BlockListError> {
        let exact: HashSet<Box<str>> = exact
            .into_iter()
            .map(|v| v.trim().to_ascii_lowercase().into_boxed_str())
            .filter(|v| !v.is_empty())
            .collect();
        let patterns: Vec<String> = patterns.into_iter().collect();
        let mut sources: Vec<String> = exact.iter().map(|v| v.to_string()).collect();
        sources.sort();
        sources.extend(patterns.iter().map(|p| format!("/{p}/")));
        let anchored: Vec<String> = patterns.iter().map(|p| format!("^(?:{p})$")).collect();
        let patterns = if anchored.is_empty() {
            None
        } else {
            Some(RegexSet::new(&anchored)?)
        };
        Ok(BlockList {
            exact,
            patterns,
            sources,
        })
    }

    /// This list and `other` together.
    ///
    /// # Errors
    /// As [`BlockList::new`] (cannot fail for lists that were valid on their own).
    pub fn union(&self, other: &BlockList) -> Result<BlockList, BlockListError> {
        let patterns = self
            .patterns
            .iter()
            .chain(other.patterns.iter())
            .flat_map(|set| set.patterns().iter())
            .map(|p| {
                // Undo the anchoring added by `new`.
                p.strip_prefix("^(?:")
                    .and_then(|p| p.strip_suffix(")$"))
                    .unwrap_or(p)
                    .to_owned()
            });
        BlockList::new(
            self.exact
                .iter()
                .chain(other.exact.iter())
                .map(|v| v.to_string()),
            patterns,
        )
    }

    /// True when nothing is blocked.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.patterns.is_none()
    }

    /// The entries, exact values sorted then patterns as `/…/` (for logs and `--print-config`).
    pub fn entries(&self) -> &[String] {
        &self.sources
    }

    /// True when `value` (a normalized email or phone) is blocked.
    pub fn blocks(&self, value: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        let exact = if value.bytes().any(|b| b.is_ascii_uppercase()) {
            self.exact.contains(value.to_ascii_lowercase().as_str())
        } else {
            self.exact.contains(value)
        };
        exact
            || self
                .patterns
                .as_ref()
                .is_some_and(|set| set.is_match(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommended_list_blocks_the_documented_values_only() {
        let list = BlockList::recommended();
        assert_eq!(
            list.entries().len(),
            RECOMMENDED_EXACT.len() + RECOMMENDED_PATTERNS.len()
        );
        for blocked in [
            "test@test.com",
            "TEST@test.com",
            "null",
            "n/a",
            "0000000000",
            "+1111111111",
            "9",
            "1234567890",
            "noreply@shop.example",
        ] {
            assert!(list.blocks(blocked), "{blocked} should be blocked");
        }
        for allowed in [
            "lorraine@hillvalley.edu",
            "123456",
            "1234567891",
            "0000000001",
            "testing@test.com",
            "",
        ] {
            assert!(!list.blocks(allowed), "{allowed} should not be blocked");
        }
    }

    #[test]
    fn patterns_match_whole_values_and_bad_patterns_are_errors() {
        let list = BlockList::new(vec![" X@Y.z ".into()], vec!["[0-9]{3}".into()]).unwrap();
        assert!(list.blocks("x@y.z"));
        assert!(list.blocks("123"));
        assert!(!list.blocks("1234"));
        assert!(!list.blocks("a123"));
        assert!(BlockList::new(Vec::new(), vec!["(".into()]).is_err());
        assert!(BlockList::none().is_empty());
        assert!(!BlockList::none().blocks("anything"));
        let both = list.union(&BlockList::recommended()).unwrap();
        assert!(both.blocks("123") && both.blocks("null") && both.blocks("x@y.z"));
        assert!(!both.blocks("1234"));
    }
}
