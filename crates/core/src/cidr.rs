//! IP address parsing and the [`Cidr`] newtype: a network address plus a
//! prefix length, with host bits cleared, that cannot hold anything else.
//!
//! Addresses are handled as `u128` so that IPv4 and IPv6 share one code path;
//! an *offset* is the distance from a CIDR's network address, which is also
//! the key whereabouts uses in an `IPPool`'s `spec.allocations` map.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits: 32 or 128.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The numeric value of an address (IPv4 in the low 32 bits).
pub(crate) fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of a numeric value; IPv4 values above `u32::MAX` are cut to
/// their low 32 bits (callers stay inside a CIDR, so this never happens).
pub(crate) fn ip_from_bits(family: Family, bits: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from((bits & 0xffff_ffff) as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

/// Parses an IP address the way whereabouts does (Kubernetes'
/// `ParseIPSloppy`): standard notation, and also IPv4 octets with leading
/// zeros, read as decimal (`"010.0.0.1"` is `10.0.0.1`).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if s.contains(':') {
        // An IPv6 address whose embedded IPv4 tail has leading zeros.
        let (head, tail) = s.rsplit_once(':')?;
        if !tail.contains('.') {
            return None;
        }
        let v4 = parse_v4_sloppy(tail)?;
        format!("{head}:{v4}")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    } else {
        parse_v4_sloppy(s).map(IpAddr::V4)
    }
}

fn parse_v4_sloppy(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        *octet = parse_small_decimal(parts.next()?, 255)?.try_into().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// A decimal number of ASCII digits only (leading zeros allowed), at most `max`.
fn parse_small_decimal(s: &str, max: u16) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = s.trim_start_matches('0');
    if significant.is_empty() {
        return Some(0);
    }
    if significant.len() > 3 {
        return None;
    }
    let value: u16 = significant.parse().ok()?;
    (value <= max).then_some(value)
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{} is not a CIDR: it has no \"/<prefix length>\"", crate::excerpt(.value))]
    MissingPrefix { value: String },
    #[error("{} is not a CIDR: {} is not an IP address", crate::excerpt(.value), crate::excerpt(.address))]
    InvalidAddress { value: String, address: String },
    #[error(
        "{} is not a CIDR: prefix length {} is not a number from 0 to {max}",
        crate::excerpt(.value),
        crate::excerpt(.prefix)
    )]
    InvalidPrefix {
        value: String,
        prefix: String,
        max: u8,
    },
    #[error(
        "{} is an IPv4-mapped IPv6 range; write it as the IPv4 range it stands for",
        crate::excerpt(.value)
    )]
    Ipv4Mapped { value: String },
}

impl CidrError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            CidrError::MissingPrefix { .. } => "cidr_missing_prefix",
            CidrError::InvalidAddress { .. } => "cidr_invalid_address",
            CidrError::InvalidPrefix { .. } => "cidr_invalid_prefix",
            CidrError::Ipv4Mapped { .. } => "cidr_ipv4_mapped",
        }
    }
}

/// An IP network: its network address (host bits always zero) and prefix
/// length. Displays as Go's `net.IPNet.String()` does for the same network
/// (`10.0.0.0/8`, `2001::/116`), which is what whereabouts writes into
/// `IPPool.spec.range` and derives pool names from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix_len` bits; host bits are cleared.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        let family = Family::of(addr);
        if prefix_len > family.bits() {
            return Err(CidrError::InvalidPrefix {
                value: format!("{addr}/{prefix_len}"),
                prefix: prefix_len.to_string(),
                max: family.bits(),
            });
        }
        let cidr = Cidr {
            network: ip_from_bits(family, ip_bits(addr) & !host_mask(family, prefix_len)),
            prefix_len,
        };
        if let IpAddr::V6(v6) = cidr.network
            && prefix_len >= 96
            && v6.to_ipv4_mapped().is_some()
        {
            return Err(CidrError::Ipv4Mapped {
                value: format!("{addr}/{prefix_len}"),
            });
        }
        Ok(cidr)
    }

    /// Parses `addr/len`, returning the address as written (host bits kept)
    /// and its network: `"10.1.2.3/24"` gives `(10.1.2.3, 10.1.2.0/24)`.
    /// Accepts what whereabouts accepts (`ParseCIDRSloppy`): IPv4 octets and
    /// prefix lengths with leading zeros.
    pub fn parse_with_host(s: &str) -> Result<(IpAddr, Cidr), CidrError> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| CidrError::MissingPrefix {
            value: s.to_owned(),
        })?;
        let ip = parse_ip(addr).ok_or_else(|| CidrError::InvalidAddress {
            value: s.to_owned(),
            address: addr.to_owned(),
        })?;
        let max = Family::of(ip).bits();
        let prefix_len = parse_small_decimal(prefix, u16::from(max))
            .and_then(|p| u8::try_from(p).ok())
            .ok_or_else(|| CidrError::InvalidPrefix {
                value: s.to_owned(),
                prefix: prefix.to_owned(),
                max,
            })?;
        let cidr = Cidr::new(ip, prefix_len).map_err(|e| match e {
            CidrError::Ipv4Mapped { .. } => CidrError::Ipv4Mapped {
                value: s.to_owned(),
            },
            other => other,
        })?;
        Ok((ip, cidr))
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The address family.
    pub fn family(&self) -> Family {
        Family::of(self.network)
    }

    /// Number of host bits: 32 or 128 minus the prefix length.
    pub fn host_bits(&self) -> u8 {
        self.family().bits() - self.prefix_len
    }

    /// The largest offset in the network (its size minus one; `u128::MAX`
    /// for `::/0`, whose size does not fit in a `u128`).
    pub fn last_offset(&self) -> u128 {
        host_mask(self.family(), self.prefix_len)
    }

    /// The last address of the network (the broadcast address for IPv4).
    pub fn last_address(&self) -> IpAddr {
        ip_from_bits(self.family(), ip_bits(self.network) | self.last_offset())
    }

    /// Whether `ip` belongs to this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some()
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The offset of `ip` from the network address, if `ip` is inside.
    pub fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        if Family::of(ip) != self.family() {
            return None;
        }
        let bits = ip_bits(ip);
        let net = ip_bits(self.network);
        (bits & !self.last_offset() == net).then(|| bits - net)
    }

    /// The address at `offset` from the network address, if inside.
    pub fn ip_at(&self, offset: u128) -> Option<IpAddr> {
        (offset <= self.last_offset())
            .then(|| ip_from_bits(self.family(), ip_bits(self.network) | offset))
    }
}

fn host_mask(family: Family, prefix_len: u8) -> u128 {
    let host_bits = u32::from(family.bits().saturating_sub(prefix_len));
    if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `addr/len`; host bits are cleared (`"10.1.2.3/24"` is
    /// `10.1.2.0/24`), as Go's `net.ParseCIDR` does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cidr::parse_with_host(s).map(|(_, cidr)| cidr)
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn parses_and_masks() {
        let c: Cidr = "192.168.2.230/24".parse().expect("valid");
        assert_eq!(c.to_string(), "192.168.2.0/24");
        assert_eq!(c.last_offset(), 255);
        assert_eq!(c.last_address(), ip("192.168.2.255"));
        let c: Cidr = "2001::1/116".parse().expect("valid");
        assert_eq!(c.to_string(), "2001::/116");
        assert_eq!(c.last_offset(), 4095);
    }

    #[test]
    fn sloppy_leading_zeros() {
        assert_eq!(parse_ip("00192.00168.01.209"), Some(ip("192.168.1.209")));
        assert_eq!(parse_ip("000000192.168.1.25"), Some(ip("192.168.1.25")));
        assert_eq!(parse_ip("::ffff:010.0.0.1"), Some(ip("::ffff:10.0.0.1")));
        assert_eq!(parse_ip("256.0.0.1"), None);
        assert_eq!(parse_ip("1.2.3"), None);
        assert_eq!(parse_ip("1.2.3.4.5"), None);
        assert_eq!(parse_ip("+1.2.3.4"), None);
        let c: Cidr = "00192.00168.1.0/024".parse().expect("valid");
        assert_eq!(c.to_string(), "192.168.1.0/24");
    }

    #[test]
    fn rejects_bad_cidrs() {
        assert!(matches!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrError::MissingPrefix { .. })
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::InvalidPrefix { .. })
        ));
        assert!(matches!(
            "10.0.0.0/".parse::<Cidr>(),
            Err(CidrError::InvalidPrefix { .. })
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::InvalidAddress { .. })
        ));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::InvalidPrefix { .. })
        ));
        assert!(matches!(
            "::ffff:10.0.0.0/104".parse::<Cidr>(),
            Err(CidrError::Ipv4Mapped { .. })
        ));
    }

    #[test]
    fn offsets_cover_the_whole_ipv6_space() {
        let c: Cidr = "::/0".parse().expect("valid");
        assert_eq!(c.last_offset(), u128::MAX);
        assert_eq!(
            c.ip_at(u128::MAX),
            Some(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        );
        let c: Cidr = "fd00::/64".parse().expect("valid");
        let far = (1u128 << 63) + 5;
        let addr = c.ip_at(far).expect("inside");
        assert_eq!(addr, ip("fd00::8000:0:0:5"));
        assert_eq!(c.offset_of(addr), Some(far));
        assert_eq!(c.offset_of(ip("fd00:0:0:1::")), None);
        assert_eq!(c.offset_of(ip("10.0.0.1")), None);
    }

    #[test]
    fn serde_round_trip() {
        let c: Cidr = serde_json::from_str("\"10.1.2.3/8\"").expect("valid");
        assert_eq!(
            serde_json::to_string(&c).expect("serialises"),
            "\"10.0.0.0/8\""
        );
        assert!(serde_json::from_str::<Cidr>("\"nope\"").is_err());
    }
}
