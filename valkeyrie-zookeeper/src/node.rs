//! The znode rules: which nodes are keys, and how values and indexes are stored.
//!
//! A key `a/b` is the znode `/a/b` (under the chroot) holding the raw value. Missing
//! parents are created holding the single byte `\x01`, the directory marker old libkv
//! versions wrote (the Go store still recognizes it): such a node is not a key, so a
//! directory that only exists as a prefix behaves as on every other backend, and it is
//! removed again once its last child is deleted. A value that starts with `\x01` is stored
//! with one more `\x01` in front, so no value is ever mistaken for the marker. Lock
//! contender nodes (`_c_<32 hex>-lock-<sequence>`, the Go store's layout) are never keys.

use valkeyrie_core::raw::Key;
use valkeyrie_core::{Error, Result};
use zookeeper_client::Stat;

use crate::ZOOKEEPER;

/// The data of a directory node made for its children, not written as a key.
pub(crate) const DIR_MARKER: &[u8] = &[0x01];

/// A node as a read found it, data and stat; `None` when there is none.
pub(crate) type Node = Option<(Vec<u8>, Stat)>;

/// The znode path of a normalized key.
pub(crate) fn path_of(key: &str) -> String {
    format!("/{key}")
}

/// The key of a znode path.
pub(crate) fn key_of(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

/// The value stored in a node's data; `None` for a directory node.
pub(crate) fn decode(data: Vec<u8>) -> Option<bytes::Bytes> {
    match data.first() {
        _ if data == DIR_MARKER => None,
        Some(0x01) => Some(bytes::Bytes::copy_from_slice(&data[1..])),
        _ => Some(bytes::Bytes::from(data)),
    }
}

/// A value as stored in a node's data: with an escape byte when it starts with `\x01`.
pub(crate) fn encode(value: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(value.len() + 1);
    if value.first() == Some(&0x01) {
        data.push(0x01);
    }
    data.extend_from_slice(value);
    data
}

/// The znode path of a key, or `InvalidKey` for a character ZooKeeper refuses in paths
/// (C1 controls, the private use area, U+FFF0–U+FFFF, and anything outside the BMP, which
/// Java would need surrogates for).
pub(crate) fn checked_path(key: &Key) -> Result<String> {
    let refused = key.as_str().chars().find(|&c| {
        matches!(c, '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..='\u{ffff}') || c > '\u{ffff}'
    });
    match refused {
        Some(_) => Err(Error::InvalidKey {
            store: ZOOKEEPER,
            key: key.to_string(),
            reason: "ZooKeeper cannot store a character of this key in a node path (outside the BMP, C1 control, private use or U+FFF0-U+FFFF)",
        }),
        None => Ok(path_of(key.as_str())),
    }
}

/// Whether a child name is a lock contender node of the Go store's layout:
/// `_c_<32 hex digits>-lock-<decimal sequence>`.
pub(crate) fn is_lock_node(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("_c_") else {
        return false;
    };
    let Some((guid, sequence)) = rest.split_once("-lock-") else {
        return false;
    };
    guid.len() == 32
        && guid.chars().all(|c| c.is_ascii_hexdigit())
        && !sequence.is_empty()
        && sequence.chars().all(|c| c.is_ascii_digit())
}

/// The last index of a node: the low 32 bits of its creation zxid above its data version.
///
/// The Go store's index is the bare data version, which restarts at 0 when a node is
/// re-created, so a stale pair can match a new node; the creation zxid tells incarnations
/// apart (and keeps the index from being 0). The Go store passes `int32(LastIndex)` to
/// ZooKeeper as the expected version, which is exactly the low half: Go services can
/// compare-and-set with indexes this store returned.
pub(crate) fn index_of(stat: &Stat) -> u64 {
    let incarnation = u64::from(stat.czxid as u32);
    let version = u64::from(stat.version as u32);
    (incarnation << 32) | version
}

/// Whether a node is still at `index`. An index with an empty high half came from a Go
/// service (a bare data version): for it, only the version is compared, as Go does.
pub(crate) fn index_matches(stat: &Stat, index: u64) -> bool {
    if index >> 32 == 0 {
        u64::from(stat.version as u32) == index
    } else {
        index_of(stat) == index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_look_like_the_directory_marker() {
        for value in [&b""[..], b"\x01", b"\x01\x01x", b"plain", b"\x00\x01"] {
            assert_eq!(decode(encode(value)).as_deref(), Some(value), "{value:?}");
        }
        assert_eq!(decode(DIR_MARKER.to_vec()), None);
        let emoji = Key::parse("zookeeper", "a/🦀").unwrap();
        assert!(checked_path(&emoji).is_err());
        assert_eq!(checked_path(&Key::parse("zookeeper", "a/é").unwrap()).unwrap(), "/a/é");
    }

    #[test]
    fn indexes_tell_incarnations_apart_and_go_compares_their_low_half() {
        let stat = |czxid: i64, version: i32| Stat {
            czxid,
            mzxid: czxid + i64::from(version),
            pzxid: czxid,
            ctime: 0,
            mtime: 0,
            version,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        };
        let node = stat(0x1_0000_0007, 3);
        let index = index_of(&node);
        assert_eq!(index, (7 << 32) | 3);
        assert_eq!(index as i32, 3, "Go's int32(LastIndex) is the data version");
        assert!(index_matches(&node, index));
        assert!(
            !index_matches(&stat(0x1_0000_0009, 3), index),
            "a re-created node is another one"
        );
        assert!(!index_matches(&stat(0x1_0000_0007, 4), index));
        assert!(index_matches(&node, 3), "a Go index: the version alone");
        assert!(!index_matches(&node, 2));
    }

    #[test]
    fn lock_nodes_and_paths() {
        assert!(is_lock_node("_c_0123456789abcdef0123456789abcdef-lock-0000000003"));
        assert!(!is_lock_node("child"));
        assert!(
            !is_lock_node("_c_report-lock-x"),
            "user keys that merely look alike are keys"
        );
        assert_eq!(path_of("a/b"), "/a/b");
        assert_eq!(key_of("/a/b"), "a/b");
    }
}
