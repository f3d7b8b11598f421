//! Key rules, written once and applied by every backend before any I/O.
//!
//! Keys are `/`-separated paths such as `services/web/10.0.0.1`. The rules:
//!
//! * one leading and one trailing `/` are ignored: `/a/b/`, `a/b/` and `a/b` are the same key
//!   (the Go library strips the leading slash on most backends, and ZooKeeper also the
//!   trailing one; doing both everywhere makes `dir` and `dir/` mean the same in `list`);
//! * after that, the key must not be empty, must not contain empty segments (`a//b`), must
//!   not contain `.` or `..` segments, and must not contain control characters (ZooKeeper
//!   rejects them in paths, and they break logs).
//!
//! A key that breaks a rule is [`Error::InvalidKey`] naming the
//! store, the key as given and the rule.
//!
//! ```
//! use valkeyrie_core::raw::Key;
//!
//! let key = Key::parse("memory", "/services/web/").unwrap();
//! assert_eq!(key.as_str(), "services/web");
//! assert_eq!(key.dir_prefix(), "services/web/");
//! assert!(key.contains("services/web/node1"));
//! assert!(!key.contains("services/website"));
//! assert!(Key::parse("memory", "a//b").is_err());
//! ```

use std::sync::Arc;

use crate::error::{Error, Result};

/// A validated, normalized key: no leading or trailing `/`, no empty, `.` or `..` segment.
/// Cheap to clone: a call's key is shared by the parts of the call that keep it (a lock's
/// renewal, release and guard, say) rather than copied into each.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Arc<str>);

impl Key {
    /// Validates and normalizes `raw` for `store`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the key is empty, has an empty, `.` or `..` segment, or a
    /// control character.
    pub fn parse(store: &'static str, raw: &str) -> Result<Key> {
        let invalid = |reason| Error::InvalidKey {
            store,
            key: raw.to_owned(),
            reason,
        };
        let trimmed = raw.strip_prefix('/').unwrap_or(raw);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(invalid("the key is empty"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(invalid("the key contains a control character"));
        }
        for segment in trimmed.split('/') {
            match segment {
                "" => return Err(invalid("the key has an empty segment (`//`)")),
                "." | ".." => return Err(invalid("the key has a `.` or `..` segment")),
                _ => {}
            }
        }
        Ok(Key(trimmed.into()))
    }

    /// The normalized key, for example `a/b`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix every key strictly below this one starts with: the key plus `/`.
    pub fn dir_prefix(&self) -> String {
        format!("{}/", self.0)
    }

    /// Whether `other` (a normalized key) is strictly below this key.
    pub fn contains(&self, other: &str) -> bool {
        other.len() > self.0.len() + 1 && other.starts_with(&*self.0) && other.as_bytes()[self.0.len()] == b'/'
    }

    /// The segments of the key, from the root down.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The parent key, or `None` for a top-level key.
    pub fn parent(&self) -> Option<Key> {
        self.0.rsplit_once('/').map(|(parent, _)| Key(parent.into()))
    }

    /// Appends a validated relative path: `Key(a).join("b/c") == Key(a/b/c)`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when `child` breaks a key rule.
    pub fn join(&self, store: &'static str, child: &str) -> Result<Key> {
        let child = Key::parse(store, child)?;
        Ok(Key(format!("{}/{}", self.0, child.0).into()))
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Key> for String {
    fn from(key: Key) -> String {
        key.0.as_ref().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn leading_and_trailing_slashes_are_normalized() {
        for raw in ["a/b", "/a/b", "a/b/", "/a/b/"] {
            assert_eq!(
                Key::parse("t", raw).map(String::from).ok().as_deref(),
                Some("a/b"),
                "{raw}"
            );
        }
    }

    #[test]
    fn bad_keys_are_rejected_with_the_rule() {
        for raw in ["", "/", "//", "a//b", "/a//", "./a", "a/..", "a/./b", "a\nb", "a\0"] {
            let err = Key::parse("t", raw).expect_err(raw);
            assert_eq!(err.kind(), ErrorKind::InvalidKey, "{raw}");
            assert_eq!(err.key(), Some(raw));
        }
    }

    #[test]
    fn unicode_and_dots_inside_segments_are_fine() {
        for raw in ["héllo/wörld", "日本/語", "a.b/..c/d..", "with space/x"] {
            assert!(Key::parse("t", raw).is_ok(), "{raw}");
        }
    }

    #[test]
    fn containment_respects_segment_boundaries() {
        let dir = Key::parse("t", "dir").unwrap_or_else(|e| panic!("{e}"));
        assert!(dir.contains("dir/a"));
        assert!(dir.contains("dir/a/b"));
        assert!(!dir.contains("dir"));
        assert!(!dir.contains("dir2/a"));
        assert!(!dir.contains("dir/"));
        assert_eq!(dir.join("t", "x/y").map(String::from).ok().as_deref(), Some("dir/x/y"));
        assert_eq!(
            Key::parse("t", "a/b/c")
                .ok()
                .and_then(|k| k.parent())
                .map(String::from)
                .as_deref(),
            Some("a/b")
        );
    }
}
