//! Compact forms of what the indexes keep once per allocation: a UID as its
//! 16 bytes when it is a UUID (as the API server makes every UID), and
//! namespace names shared. At 60,000 allocations each saved byte of an
//! entry kept in the claim, pod and reservation indexes is about 60 KB
//! (`make bench`'s scale run).

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// An object's UID: the bytes of a lowercase hyphenated UUID, or the text
/// of anything else (kept as it came: UIDs are opaque to clients).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Uid {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl Uid {
    pub fn new(text: &str) -> Uid {
        uuid_bytes(text).map_or_else(|| Uid::Text(text.into()), Uid::Uuid)
    }

    /// Whether it is the UID `text`.
    pub fn is(&self, text: &str) -> bool {
        match self {
            Uid::Uuid(bytes) => uuid_bytes(text).is_some_and(|b| b == *bytes),
            Uid::Text(own) => **own == *text,
        }
    }
}

impl Default for Uid {
    fn default() -> Self {
        Uid::Text("".into())
    }
}

/// The 16 bytes of `text` when it is a UUID written as `Uid` writes one
/// back (lowercase hex, hyphens after the 8th, 12th, 16th and 20th digit),
/// so that every UID reads back exactly as it came.
fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let raw = text.as_bytes();
    if raw.len() != 36 {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut digits = raw
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 8 | 13 | 18 | 23));
    if [8, 13, 18, 23].iter().any(|&i| raw[i] != b'-') {
        return None;
    }
    for byte in &mut bytes {
        let (_, high) = digits.next()?;
        let (_, low) = digits.next()?;
        *byte = (hex_digit(*high)? << 4) | hex_digit(*low)?;
    }
    Some(bytes)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uid::Text(text) => f.write_str(text),
            Uid::Uuid(bytes) => {
                for (i, byte) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// A pool entry's `id`: the 32 bytes of a container ID written as 64
/// lowercase hex digits (as container runtimes make them), or the text of
/// anything else (hereabouts' hold and cooldown markers, uppercase or
/// hand-made IDs), kept as it came so that it reads back exactly.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ContainerId {
    Hex([u8; 32]),
    Text(Box<str>),
}

impl ContainerId {
    pub fn new(text: &str) -> ContainerId {
        hex_bytes(text).map_or_else(|| ContainerId::Text(text.into()), ContainerId::Hex)
    }

    /// Whether it is the ID `text`.
    pub fn is(&self, text: &str) -> bool {
        match self {
            ContainerId::Hex(bytes) => hex_bytes(text).is_some_and(|b| b == *bytes),
            ContainerId::Text(own) => **own == *text,
        }
    }
}

/// The 32 bytes of `text` when it is 64 lowercase hex digits.
fn hex_bytes(text: &str) -> Option<[u8; 32]> {
    let raw = text.as_bytes();
    if raw.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(raw.chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(bytes)
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerId::Text(text) => f.write_str(text),
            ContainerId::Hex(bytes) => bytes.iter().try_for_each(|b| write!(f, "{b:02x}")),
        }
    }
}

impl fmt::Debug for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Values the indexes share, one set per kind.
pub type Shared<T> = LazyLock<Mutex<HashSet<Arc<T>>>>;

/// How many values a [`Shared`] set keeps; past that it starts again
/// (values already shared stay shared, by their own counts).
const KEPT: usize = 4096;

/// `value` as the copy in `set` every entry holding the same value shares.
pub fn shared<T>(set: &Shared<T>, value: &T) -> Arc<T>
where
    T: Hash + Eq + ?Sized,
    for<'a> Arc<T>: From<&'a T>,
{
    let mut kept = set.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(copy) = kept.get(value) {
        return copy.clone();
    }
    if kept.len() >= KEPT {
        kept.clear();
    }
    let copy = Arc::from(value);
    kept.insert(copy.clone());
    copy
}

/// The namespace names the indexes hold (a cluster has few).
static NAMESPACES: Shared<str> = LazyLock::new(Default::default);

/// `name` as a string shared with every entry that names it.
pub fn namespace(name: &str) -> Arc<str> {
    shared(&NAMESPACES, name)
}

/// The interface and network names pool entries and claims hold (`net1`,
/// `net2`, a cluster's NADs: few).
static NAMES: Shared<str> = LazyLock::new(Default::default);

/// `name` as a string shared with every entry that holds it.
pub fn name(name: &str) -> Arc<str> {
    shared(&NAMES, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_read_back_exactly_as_they_came() {
        let runtime = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let hold = hereabouts_core::ledger::hold_marker(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        );
        for text in [
            runtime,
            // Not 64 lowercase hex digits: kept as text.
            "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef",
            &hold,
            "",
        ] {
            let id = ContainerId::new(text);
            assert_eq!(id.to_string(), text);
            assert!(id.is(text), "{text:?} is itself");
        }
        assert!(matches!(ContainerId::new(runtime), ContainerId::Hex(_)));
        let upper = runtime.to_uppercase();
        assert!(
            !ContainerId::new(runtime).is(&upper),
            "IDs compare as text, as the API keeps them"
        );
        assert!(!ContainerId::new(runtime).is(&runtime[..63]));
    }

    #[test]
    fn uids_read_back_exactly_as_they_came() {
        for text in [
            "0f8a6b2c-1d3e-4f50-9a7b-c8d9e0f1a2b3",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            // Not as the API server writes them: kept as text.
            "0F8A6B2C-1D3E-4F50-9A7B-C8D9E0F1A2B3",
            "0f8a6b2c1d3e4f509a7bc8d9e0f1a2b3",
            "0f8a6b2c-1d3e-4f50-9a7b-c8d9e0f1a2bz",
            "0f8a6b2c-1d3e-4f50-9a7b+c8d9e0f1a2b3",
            "pod-uid",
            "",
            "é8a6b2c-1d3e-4f50-9a7b-c8d9e0f1a2b",
        ] {
            let uid = Uid::new(text);
            assert_eq!(uid.to_string(), text);
            assert!(uid.is(text), "{text:?}");
        }
        assert!(matches!(
            Uid::new("0f8a6b2c-1d3e-4f50-9a7b-c8d9e0f1a2b3"),
            Uid::Uuid(_)
        ));
        assert!(matches!(Uid::new("pod-uid"), Uid::Text(_)));
        assert_eq!(Uid::default().to_string(), "");
    }

    #[test]
    fn uids_differ_as_their_text_does() {
        let a = Uid::new("0f8a6b2c-1d3e-4f50-9a7b-c8d9e0f1a2b3");
        let b = Uid::new("0f8a6b2c-1d3e-4f50-9a7b-c8d9e0f1a2b4");
        assert_ne!(a, b);
        assert!(!a.is("0f8a6b2c-1d3e-4f50-9a7b-c8d9e0f1a2b4"));
        assert!(!a.is("0F8A6B2C-1D3E-4F50-9A7B-C8D9E0F1A2B3"));
        assert!(!Uid::new("pod-uid").is("pod-uid2"));
        assert_eq!(a, Uid::new("0f8a6b2c-1d3e-4f50-9a7b-c8d9e0f1a2b3"));
    }

    #[test]
    fn namespaces_are_shared() {
        let a = namespace("team-a");
        assert!(Arc::ptr_eq(&a, &namespace("team-a")));
        assert_eq!(&*namespace("team-b"), "team-b");
    }
}
