//! Object names, derived exactly as whereabouts derives them so that a
//! cluster's existing objects are found by name:
//!
//! - `IPPool`: `[<network_name>-]<range>`, where the range (Go's
//!   `IPNet.String()`, e.g. `2001::/116`) has every ':' and '/' replaced by
//!   '-': `10.0.0.0/8` -> `10.0.0.0-8`, `2001::/116` -> `2001---116`.
//! - `OverlappingRangeIPReservation`: `[<network_name>-]<address>` with ':'
//!   replaced by '-', after appending '0' to an address that ends in ':'
//!   (`2001::` -> `2001--0`); IPv4-mapped IPv6 addresses print as IPv4, as
//!   Go prints them.
//!
//! An empty `network_name` is the unnamed network (no prefix). Names are
//! checked against Kubernetes' object name rules (DNS-1123 subdomain), which
//! whereabouts leaves to the API server: a name that would be refused there
//! (`::1` -> `--1`, an upper-case `network_name`) is refused here, early and
//! with the reason.

use std::fmt;
use std::net::IpAddr;
use std::ops::Deref;

use super::cidr::Cidr;

/// Why a name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error(
        "{kind} name {} (from {source_value}) is not a valid Kubernetes object name: {reason}",
        crate::excerpt(.name)
    )]
    InvalidName {
        kind: &'static str,
        name: String,
        source_value: String,
        reason: &'static str,
    },
}

impl NamingError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            NamingError::InvalidName { .. } => "invalid_object_name",
        }
    }
}

/// The name of an `IPPool`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolName(String);

/// The name of an `OverlappingRangeIPReservation`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReservationName(String);

macro_rules! name_type {
    ($t:ty) => {
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $t {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$t> for String {
            fn from(n: $t) -> String {
                n.0
            }
        }
    };
}

name_type!(PoolName);
name_type!(ReservationName);

fn with_network(network_name: Option<&str>, rest: &str) -> String {
    match network_name {
        Some(n) if !n.is_empty() => format!("{n}-{rest}"),
        _ => rest.to_owned(),
    }
}

/// whereabouts' `normalizeRange`.
fn normalize_range(range: &str) -> String {
    let mut s = range.to_owned();
    if s.ends_with(':') {
        s.push('0');
    }
    s.replace([':', '/'], "-")
}

/// The `IPPool` name for `cidr` in the network `network_name`.
pub fn pool_name(network_name: Option<&str>, cidr: &Cidr) -> Result<PoolName, NamingError> {
    let name = with_network(network_name, &normalize_range(&cidr.to_string()));
    check("IPPool", &name, &cidr.to_string())?;
    Ok(PoolName(name))
}

/// The name whereabouts gives a per-node `IPPool` when `node_slice_size` is
/// set: `[<network_name>-]<node>-<slice range>`. hereabouts does not
/// allocate from such pools; this lets tooling find what whereabouts left.
pub fn node_slice_pool_name(
    network_name: Option<&str>,
    node: &str,
    slice: &Cidr,
) -> Result<PoolName, NamingError> {
    let name = with_network(
        network_name,
        &format!("{node}-{}", normalize_range(&slice.to_string())),
    );
    check("IPPool", &name, &slice.to_string())?;
    Ok(PoolName(name))
}

/// The `OverlappingRangeIPReservation` name for `ip` in the network
/// `network_name`.
pub fn reservation_name(
    network_name: Option<&str>,
    ip: IpAddr,
) -> Result<ReservationName, NamingError> {
    let mut s = ip.to_canonical().to_string();
    if s.ends_with(':') {
        s.push('0');
    }
    let name = with_network(network_name, &s.replace(':', "-"));
    check("OverlappingRangeIPReservation", &name, &ip.to_string())?;
    Ok(ReservationName(name))
}

/// The address an `OverlappingRangeIPReservation` of `network_name` named
/// `name` reserves: the reverse of [`reservation_name`]. `None` when the
/// name is not one of that network's reservation names.
pub fn reservation_address(network_name: Option<&str>, name: &str) -> Option<IpAddr> {
    let rest = match network_name.filter(|n| !n.is_empty()) {
        Some(n) => name.strip_prefix(n)?.strip_prefix('-')?,
        None => name,
    };
    let ip = if rest.contains('.') && !rest.contains('-') {
        rest.parse().ok()?
    } else {
        rest.replace('-', ":").parse().ok()?
    };
    (reservation_name(network_name, ip).ok()?.as_str() == name).then_some(ip)
}

/// Offsets per IPPool object. A whereabouts allocation entry is about 150
/// bytes of JSON, so a full shard stays near 20 KiB. The limit that
/// matters is not etcd's 1.5 MiB but the API server's cost per write,
/// which grows with the entries (decoding, schema validation and
/// managed-fields bookkeeping of every entry): under `make bench`,
/// replacing a 2,048-entry pool took 0.3-1.5 s and a 256-entry one about
/// twice as long as a 128-entry one. On an idle API server one replace
/// takes about 2 ms plus 0.08 ms per entry (2026-12-03, 80 replaces per
/// size: 1.8-2.4 ms with 1 entry, 4.6-5.1 with 32, 6.3-8.0 with 64,
/// 12.1-12.4 with 128; `make bench` prints the same as the floor's
/// "IPPool replaced" table). Every commit rewrites its shards whole, so
/// the span bounds the cost of an allocation however full the range, and
/// an allocation into a nearly empty shard costs about 10 ms less than one
/// into a full shard. The span is part of the stored layout (an offset
/// lives in exactly one object, which is what makes a pool write's
/// resourceVersion a fence), so it cannot change for an existing range.
pub const SHARD_SPAN: u128 = 128;

/// The shard that holds `offset` in the standard layout.
pub fn shard_index(offset: u128) -> u128 {
    offset / SHARD_SPAN
}

/// The name of shard `index` of the pool `base`: the base pool itself holds
/// shard 0 (so a small range is exactly whereabouts' one object), shard
/// `k > 0` is `<base>-s<k>`.
pub fn shard_name(base: &str, index: u128) -> String {
    if index == 0 {
        base.to_owned()
    } else {
        format!("{base}-s{index}")
    }
}

/// The base pool of the object `name` whose shard label says `index`: the
/// reverse of [`shard_name`]. A name that does not end as its index says
/// is its own base.
pub fn shard_base<'a>(name: &'a str, index: Option<&str>) -> &'a str {
    match index.filter(|i| *i != "0") {
        Some(i) => name
            .strip_suffix(i)
            .and_then(|n| n.strip_suffix("-s"))
            .unwrap_or(name),
        None => name,
    }
}

/// `network_name` from a pool name: whatever precedes the range part (the
/// reverse of [`pool_name`]).
pub fn network_name_of(pool: &str, cidr: &Cidr) -> Option<String> {
    let unnamed = pool_name(None, cidr).ok()?.into_string();
    pool.strip_suffix(&unnamed)
        .and_then(|prefix| prefix.strip_suffix('-'))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
}

/// The network names a pool named `pool` for `cidr` may belong to. A
/// hereabouts pool is `<network_name>-<range>`, but whereabouts' node-slice
/// pools are `<network_name>-<node>-<slice>` (both parts may hold dashes):
/// so also each shorter `-` prefix that `declared` holds, and none when the
/// name has no prefix or its prefix is no declared network name (a
/// node-slice pool of an unnamed network is `<node>-<slice>`).
pub fn possible_network_names(
    pool: &str,
    cidr: &Cidr,
    declared: &std::collections::HashSet<String>,
) -> Vec<Option<String>> {
    let Some(prefix) = network_name_of(pool, cidr) else {
        return vec![None];
    };
    let mut names: Vec<Option<String>> = prefix
        .match_indices('-')
        .map(|(i, _)| &prefix[..i])
        .filter(|n| declared.contains(*n))
        .map(|n| Some(n.to_owned()))
        .collect();
    if !declared.contains(&prefix) {
        names.push(None);
    }
    names.push(Some(prefix));
    names
}

/// Checks a DNS-1123 subdomain: at most 253 characters, dot-separated labels
/// of lower-case letters, digits and '-', each starting and ending with a
/// letter or digit.
pub fn check_object_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters");
    }
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return Err("it has an empty part between dots");
        };
        if !bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        {
            return Err("only lower-case letters, digits, '-' and '.' are allowed");
        }
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return Err("each part must start and end with a letter or digit");
        }
    }
    Ok(())
}

fn check(kind: &'static str, name: &str, source_value: &str) -> Result<(), NamingError> {
    check_object_name(name).map_err(|reason| NamingError::InvalidName {
        kind,
        name: name.to_owned(),
        source_value: source_value.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_names_reverse_to_their_address() {
        for (network, ip) in [
            (None, "100.64.2.1"),
            (Some("blue"), "100.64.2.1"),
            (None, "2001:db8::1"),
            (Some("blue-net"), "2001:db8::"),
            (Some("x"), "fd00::ffff:1.2.3.4"),
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            let name = reservation_name(network, ip).expect("name");
            assert_eq!(
                reservation_address(network, name.as_str()),
                Some(ip.to_canonical()),
                "{name:?}"
            );
        }
        assert_eq!(reservation_address(Some("blue"), "red-100.64.2.1"), None);
        assert_eq!(reservation_address(None, "blue-100.64.2.1"), None);
        assert_eq!(
            reservation_address(Some("blue"), "blue-100.64.2.1"),
            Some("100.64.2.1".parse().expect("ip"))
        );
        assert_eq!(reservation_address(None, "not-an-address"), None);
        assert_eq!(reservation_address(None, "2001-db8--01"), None);
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("test CIDR")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn pool_names_match_whereabouts() {
        assert_eq!(
            pool_name(None, &cidr("10.0.0.0/8"))
                .expect("valid")
                .as_str(),
            "10.0.0.0-8"
        );
        assert_eq!(
            pool_name(Some(""), &cidr("10.0.0.0/8"))
                .expect("valid")
                .as_str(),
            "10.0.0.0-8"
        );
        assert_eq!(
            pool_name(Some("test"), &cidr("10.0.0.0/8"))
                .expect("valid")
                .as_str(),
            "test-10.0.0.0-8"
        );
        assert_eq!(
            pool_name(None, &cidr("2001::/116"))
                .expect("valid")
                .as_str(),
            "2001---116"
        );
        assert_eq!(
            pool_name(None, &cidr("2001::1/116"))
                .expect("valid")
                .as_str(),
            "2001---116"
        );
        assert_eq!(
            pool_name(None, &cidr("fd00:0:0:10::/64"))
                .expect("valid")
                .as_str(),
            "fd00-0-0-10---64"
        );
        assert_eq!(
            pool_name(Some("net-a"), &cidr("192.168.2.230/24"))
                .expect("valid")
                .as_str(),
            "net-a-192.168.2.0-24"
        );
    }

    #[test]
    fn node_slice_pool_names_match_whereabouts() {
        let c = cidr("10.0.0.0/8");
        let name = |net| node_slice_pool_name(net, "testnode", &c).expect("valid");
        assert_eq!(name(None).as_str(), "testnode-10.0.0.0-8");
        assert_eq!(
            name(Some("testnetwork")).as_str(),
            "testnetwork-testnode-10.0.0.0-8"
        );
    }

    #[test]
    fn reservation_names_match_whereabouts() {
        assert_eq!(
            reservation_name(None, ip("2001::1"))
                .expect("valid")
                .as_str(),
            "2001--1"
        );
        assert_eq!(
            reservation_name(None, ip("2001::"))
                .expect("valid")
                .as_str(),
            "2001--0"
        );
        assert_eq!(
            reservation_name(None, ip("10.0.0.1"))
                .expect("valid")
                .as_str(),
            "10.0.0.1"
        );
        assert_eq!(
            reservation_name(Some("blue"), ip("10.0.0.1"))
                .expect("valid")
                .as_str(),
            "blue-10.0.0.1"
        );
        assert_eq!(
            reservation_name(None, ip("::ffff:10.0.0.1"))
                .expect("valid")
                .as_str(),
            "10.0.0.1"
        );
        assert_eq!(
            reservation_name(None, ip("fd00::1:0:0:2"))
                .expect("valid")
                .as_str(),
            "fd00--1-0-0-2"
        );
    }

    #[test]
    fn shard_names_reverse_to_their_base() {
        for (base, index) in [
            ("net-10.0.0.0-8", 0u128),
            ("net-10.0.0.0-8", 7),
            ("2001---64", 123_456),
        ] {
            let name = shard_name(base, index);
            let label = index.to_string();
            assert_eq!(shard_base(&name, Some(&label)), base);
        }
        assert_eq!(shard_name("p", 0), "p");
        assert_eq!(shard_index(SHARD_SPAN * 3 + 5), 3);
        // A label that does not match the name leaves the name alone.
        assert_eq!(shard_base("p-s3", Some("4")), "p-s3");
        assert_eq!(shard_base("p-s3", None), "p-s3");
    }

    #[test]
    fn network_names_reverse_from_pool_names() {
        let c = cidr("10.0.0.0/8");
        assert_eq!(network_name_of("10.0.0.0-8", &c), None);
        assert_eq!(
            network_name_of("blue-10.0.0.0-8", &c).as_deref(),
            Some("blue")
        );
        assert_eq!(network_name_of("other", &c), None);
        let declared: std::collections::HashSet<String> = ["blue".to_owned()].into();
        // whereabouts' node-slice pool `blue-node-1-10.0.0.0-8`.
        let names = possible_network_names("blue-node-1-10.0.0.0-8", &c, &declared);
        assert!(names.contains(&Some("blue".to_owned())), "{names:?}");
        // ...or an unnamed network's node-slice pool of node `blue-node-1`.
        assert!(names.contains(&None), "{names:?}");
        // A declared prefix is that network, not the unnamed one.
        assert_eq!(
            possible_network_names("blue-10.0.0.0-8", &c, &declared),
            vec![Some("blue".to_owned())]
        );
        assert_eq!(
            possible_network_names("10.0.0.0-8", &c, &declared),
            vec![None]
        );
    }

    #[test]
    fn refuses_names_kubernetes_refuses() {
        let err = reservation_name(None, ip("::1")).expect_err("--1 is not a name");
        assert_eq!(err.metric_label(), "invalid_object_name");
        assert!(err.to_string().contains("\"--1\""));
        assert!(pool_name(Some("Blue"), &cidr("10.0.0.0/8")).is_err());
        assert!(pool_name(Some("a_b"), &cidr("10.0.0.0/8")).is_err());
        assert!(pool_name(Some(&"a".repeat(250)), &cidr("10.0.0.0/8")).is_err());
        assert!(pool_name(None, &cidr("::/64")).is_err());
    }
}
