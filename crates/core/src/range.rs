//! [`IpRange`]: one allocatable range, i.e. a CIDR narrowed by
//! `range_start`/`range_end`, without the network and last addresses, minus
//! `exclude`. Everything is an offset (`u128`) from the CIDR's network
//! address, so a /64 or wider is handled at any offset.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::cidr::{Cidr, CidrError, Family, parse_ip};
use super::warning::ConfigWarning;

/// The most `exclude` entries one range takes: far beyond any hand-written
/// list, and it bounds the work a hostile configuration or claim causes.
pub const MAX_EXCLUSIONS: usize = 1024;

/// Why a range cannot be built. Every variant names the configuration field
/// (e.g. `ipam.ipRanges[1].range_start`) and the value found there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("{field}: {source}")]
    InvalidCidr {
        field: String,
        value: String,
        source: CidrError,
    },
    #[error("{field}: range start {} is not an IP address", crate::excerpt(.value))]
    InvalidStart { field: String, value: String },
    #[error("{field}: range end {} is not an IP address", crate::excerpt(.value))]
    InvalidEnd { field: String, value: String },
    #[error("{field}: range start {value} is outside {cidr}")]
    StartOutsideCidr {
        field: String,
        value: String,
        cidr: Cidr,
    },
    #[error("{field}: range end {value} is outside {cidr}")]
    EndOutsideCidr {
        field: String,
        value: String,
        cidr: Cidr,
    },
    #[error("{field}: range end {end} is before range start {start}")]
    Inverted {
        field: String,
        start: IpAddr,
        end: IpAddr,
    },
    #[error(
        "{field}: range {value} holds no usable address (the network and last addresses of {cidr} are never handed out)"
    )]
    Empty {
        field: String,
        value: String,
        cidr: Cidr,
    },
    #[error(
        "{field}: {cidr} has no usable address: a /{prefix} leaves nothing once the network and last addresses are set aside"
    )]
    NoUsableAddress {
        field: String,
        cidr: Cidr,
        prefix: u8,
    },
    #[error("{field}: {} is neither a CIDR nor an IP address", crate::excerpt(.value))]
    InvalidExclusion { field: String, value: String },
    #[error("{field}: {count} entries; at most {max} are accepted")]
    TooManyExclusions {
        field: String,
        count: usize,
        max: usize,
    },
    #[error("{field}: the exclusions {value} cover every usable address of {range}")]
    ExcludedEntirely {
        field: String,
        value: String,
        range: String,
    },
}

impl RangeError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RangeError::InvalidCidr { .. } => "invalid_cidr",
            RangeError::InvalidStart { .. } => "invalid_range_start",
            RangeError::InvalidEnd { .. } => "invalid_range_end",
            RangeError::StartOutsideCidr { .. } => "range_start_outside_cidr",
            RangeError::EndOutsideCidr { .. } => "range_end_outside_cidr",
            RangeError::Inverted { .. } => "range_inverted",
            RangeError::Empty { .. } => "range_empty",
            RangeError::NoUsableAddress { .. } => "range_no_usable_address",
            RangeError::InvalidExclusion { .. } => "invalid_exclusion",
            RangeError::TooManyExclusions { .. } => "too_many_exclusions",
            RangeError::ExcludedEntirely { .. } => "range_excluded_entirely",
        }
    }

    /// The configuration field the error is about.
    pub fn field(&self) -> &str {
        match self {
            RangeError::InvalidCidr { field, .. }
            | RangeError::InvalidStart { field, .. }
            | RangeError::InvalidEnd { field, .. }
            | RangeError::StartOutsideCidr { field, .. }
            | RangeError::EndOutsideCidr { field, .. }
            | RangeError::Inverted { field, .. }
            | RangeError::Empty { field, .. }
            | RangeError::NoUsableAddress { field, .. }
            | RangeError::InvalidExclusion { field, .. }
            | RangeError::TooManyExclusions { field, .. }
            | RangeError::ExcludedEntirely { field, .. } => field,
        }
    }
}

/// Why one address of a CIDR is not handed out by its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Not in the CIDR at all (or of the other family).
    OutsideCidr,
    /// The network address (offset 0).
    NetworkAddress,
    /// The last address: IPv4's broadcast address; for IPv6, whereabouts
    /// never hands it out either.
    LastAddress,
    /// Below `range_start`.
    BeforeStart,
    /// Above `range_end`.
    AfterEnd,
    /// Inside an `exclude` entry.
    Excluded,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unusable::OutsideCidr => "it is outside the range's CIDR",
            Unusable::NetworkAddress => "it is the network address",
            Unusable::LastAddress => "it is the last (broadcast) address",
            Unusable::BeforeStart => "it is below range_start",
            Unusable::AfterEnd => "it is above range_end",
            Unusable::Excluded => "it is excluded",
        })
    }
}

/// One allocatable range.
///
/// Invariants: `1 <= first <= last <= cidr.last_offset() - 1`; `excluded`
/// is sorted, merged (no two intervals touch), clipped to `[first, last]`,
/// and leaves at least one usable offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IpRange {
    cidr: Cidr,
    first: u128,
    last: u128,
    excluded: Vec<(u128, u128)>,
}

/// One exclusion as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    Cidr(Cidr),
    Address(IpAddr),
}

impl Exclusion {
    /// Parses a CIDR or a bare address (whereabouts' `parseExcludedRange`).
    pub fn parse(s: &str) -> Option<Self> {
        if s.contains('/') {
            s.parse().ok().map(Exclusion::Cidr)
        } else {
            parse_ip(s).map(Exclusion::Address)
        }
    }

    fn family(&self) -> Family {
        match self {
            Exclusion::Cidr(c) => c.family(),
            Exclusion::Address(ip) => Family::of(*ip),
        }
    }
}

/// The textual fields of one range, as found in a configuration: the input
/// of [`IpRange::parse`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeFields<'a> {
    /// Where these fields live, e.g. `ipam` or `ipam.ipRanges[2]`.
    pub path: &'a str,
    /// `range`: a CIDR or `A-B/len`.
    pub range: &'a str,
    pub range_start: Option<&'a str>,
    pub range_end: Option<&'a str>,
    pub exclude: &'a [&'a str],
}

impl IpRange {
    /// A whole CIDR, without its network and last addresses.
    pub fn from_cidr(cidr: Cidr) -> Result<Self, RangeError> {
        Self::new(cidr, None, None, &[])
    }

    /// Builds a range from typed values; errors name the fields `range`,
    /// `range_start`, `range_end` and `exclude`.
    pub fn new(
        cidr: Cidr,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        exclude: &[Exclusion],
    ) -> Result<Self, RangeError> {
        let mut warnings = Vec::new();
        let fields = Fields::new("");
        Self::build(&fields, cidr, start, end, exclude, &mut warnings)
    }

    /// Parses and validates one range from its configuration fields,
    /// returning the range and anything accepted but worth a warning.
    ///
    /// `range` may be `A-B/len`, as in whereabouts: the CIDR is `B/len`, and
    /// `A` and `B` replace `range_start` and `range_end`.
    pub fn parse(f: &RangeFields<'_>) -> Result<(Self, Vec<ConfigWarning>), RangeError> {
        let fields = Fields::new(f.path);
        let mut warnings = Vec::new();
        let invalid_cidr = |value: &str, source| RangeError::InvalidCidr {
            field: fields.range.clone(),
            value: value.to_owned(),
            source,
        };
        let (cidr, start, end) = if let Some((a, b)) = f.range.split_once('-') {
            let start = parse_ip(a).ok_or_else(|| RangeError::InvalidStart {
                field: fields.range.clone(),
                value: a.to_owned(),
            })?;
            let (end, cidr) = Cidr::parse_with_host(b).map_err(|e| invalid_cidr(b, e))?;
            if !cidr.contains(start) {
                return Err(RangeError::StartOutsideCidr {
                    field: fields.range.clone(),
                    value: a.to_owned(),
                    cidr,
                });
            }
            for (field, given) in [(&fields.start, f.range_start), (&fields.end, f.range_end)] {
                if given.is_some() {
                    warnings.push(ConfigWarning {
                        field: field.clone(),
                        message: format!(
                            "ignored: range {:?} already gives the start and end",
                            f.range
                        ),
                    });
                }
            }
            (cidr, Some(start), Some(end))
        } else {
            let cidr: Cidr = f.range.parse().map_err(|e| invalid_cidr(f.range, e))?;
            let start = match f.range_start {
                Some(s) => Some(parse_ip(s).ok_or_else(|| RangeError::InvalidStart {
                    field: fields.start.clone(),
                    value: s.to_owned(),
                })?),
                None => None,
            };
            let end = match f.range_end {
                Some(s) => Some(parse_ip(s).ok_or_else(|| RangeError::InvalidEnd {
                    field: fields.end.clone(),
                    value: s.to_owned(),
                })?),
                None => None,
            };
            (cidr, start, end)
        };
        if f.exclude.len() > MAX_EXCLUSIONS {
            return Err(RangeError::TooManyExclusions {
                field: fields.exclude.clone(),
                count: f.exclude.len(),
                max: MAX_EXCLUSIONS,
            });
        }
        let mut exclusions = Vec::with_capacity(f.exclude.len());
        for (i, raw) in f.exclude.iter().enumerate() {
            let ex = Exclusion::parse(raw).ok_or_else(|| RangeError::InvalidExclusion {
                field: format!("{}[{i}]", fields.exclude),
                value: (*raw).to_owned(),
            })?;
            if ex.family() != cidr.family() {
                warnings.push(ConfigWarning {
                    field: format!("{}[{i}]", fields.exclude),
                    message: format!("ignored: {raw} is not {}, as {cidr} is", cidr.family()),
                });
            }
            exclusions.push(ex);
        }
        // In the `A-B/len` form, start and end come from `range` itself.
        let build_fields = if f.range.contains('-') {
            Fields {
                start: fields.range.clone(),
                end: fields.range.clone(),
                ..fields
            }
        } else {
            fields
        };
        let range = Self::build(&build_fields, cidr, start, end, &exclusions, &mut warnings)?;
        Ok((range, warnings))
    }

    fn build(
        fields: &Fields,
        cidr: Cidr,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        exclude: &[Exclusion],
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<Self, RangeError> {
        let max = cidr.last_offset();
        if cidr.host_bits() < 2 {
            return Err(RangeError::NoUsableAddress {
                field: fields.range.clone(),
                cidr,
                prefix: cidr.prefix_len(),
            });
        }
        // Network and last addresses are never handed out (whereabouts'
        // FirstUsableIP/LastUsableIP, for both families).
        let (lo, hi) = (1u128, max - 1);
        let mut first = lo;
        if let Some(ip) = start {
            let offset = cidr
                .offset_of(ip)
                .ok_or_else(|| RangeError::StartOutsideCidr {
                    field: fields.start.clone(),
                    value: ip.to_string(),
                    cidr,
                })?;
            // range_start at the network address is whereabouts' default.
            first = offset.max(lo);
        }
        let mut last = hi;
        if let Some(ip) = end {
            match cidr.offset_of(ip) {
                Some(offset) => last = offset.min(hi),
                None if Family::of(ip) == cidr.family() && ip_after(ip, cidr.last_address()) => {
                    warnings.push(ConfigWarning {
                        field: fields.end.clone(),
                        message: format!(
                            "{ip} is past the end of {cidr}; the range ends at {}",
                            cidr.ip_at(hi).map_or_else(String::new, |a| a.to_string())
                        ),
                    });
                }
                None => {
                    return Err(RangeError::EndOutsideCidr {
                        field: fields.end.clone(),
                        value: ip.to_string(),
                        cidr,
                    });
                }
            }
        }
        if first > last {
            return Err(match (start, end) {
                (Some(start), Some(end)) if ip_after(start, end) => RangeError::Inverted {
                    field: fields.end.clone(),
                    start,
                    end,
                },
                _ => RangeError::Empty {
                    field: if start.is_some() {
                        fields.start.clone()
                    } else {
                        fields.end.clone()
                    },
                    value: format!(
                        "{}-{}",
                        start.map_or_else(|| "network".to_owned(), |s| s.to_string()),
                        end.map_or_else(|| "last".to_owned(), |e| e.to_string())
                    ),
                    cidr,
                },
            });
        }

        let mut intervals: Vec<(u128, u128)> = exclude
            .iter()
            .filter_map(|ex| {
                let (lo_ex, hi_ex) = match *ex {
                    Exclusion::Address(ip) => {
                        let o = cidr.offset_of(ip)?;
                        (o, o)
                    }
                    Exclusion::Cidr(ex) => clip_cidr(&cidr, &ex)?,
                };
                let (a, b) = (lo_ex.max(first), hi_ex.min(last));
                (a <= b).then_some((a, b))
            })
            .collect();
        intervals.sort_unstable();
        let mut excluded: Vec<(u128, u128)> = Vec::with_capacity(intervals.len());
        for (a, b) in intervals {
            match excluded.last_mut() {
                Some((_, prev_end)) if a <= prev_end.saturating_add(1) => {
                    *prev_end = (*prev_end).max(b);
                }
                _ => excluded.push((a, b)),
            }
        }
        let range = IpRange {
            cidr,
            first,
            last,
            excluded,
        };
        if range.usable_count() == 0 {
            return Err(RangeError::ExcludedEntirely {
                field: fields.exclude.clone(),
                value: exclude
                    .iter()
                    .map(|e| match e {
                        Exclusion::Cidr(c) => c.to_string(),
                        Exclusion::Address(a) => a.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                range: range.to_string(),
            });
        }
        Ok(range)
    }

    /// The CIDR: offsets are relative to its network address.
    pub fn cidr(&self) -> &Cidr {
        &self.cidr
    }

    /// The lowest offset handed out (after `range_start`).
    pub fn first_offset(&self) -> u128 {
        self.first
    }

    /// The highest offset handed out (after `range_end`).
    pub fn last_offset(&self) -> u128 {
        self.last
    }

    /// The address at `first_offset()`.
    pub fn first_ip(&self) -> IpAddr {
        self.ip_at(self.first).unwrap_or(self.cidr.network())
    }

    /// The address at `last_offset()`.
    pub fn last_ip(&self) -> IpAddr {
        self.ip_at(self.last).unwrap_or(self.cidr.network())
    }

    /// Excluded offsets inside `[first_offset, last_offset]`: sorted,
    /// disjoint, inclusive intervals.
    /// Whether every address this range hands out `other` hands out too
    /// (same CIDR, limits within, `other`'s exclusions kept): a range the
    /// nodes narrowed further (a flat file adding `range_start` or
    /// `exclude`) is within what the network declares; one that drops a
    /// declared exclusion is not.
    pub fn within(&self, other: &IpRange) -> bool {
        self.cidr == other.cidr
            && self.first >= other.first
            && self.last <= other.last
            && other.excluded.iter().all(|&(a, b)| {
                let (a, b) = (a.max(self.first), b.min(self.last));
                a > b || self.excluded.iter().any(|&(x, y)| x <= a && b <= y)
            })
    }

    pub fn excluded(&self) -> &[(u128, u128)] {
        &self.excluded
    }

    /// How many addresses this range can hand out.
    pub fn usable_count(&self) -> u128 {
        let span = self.last - self.first + 1;
        let excluded: u128 = self.excluded.iter().map(|(a, b)| b - a + 1).sum();
        span - excluded
    }

    /// How many of the offsets `lo..=hi` this range can hand out (one
    /// shard's share of [`usable_count`](Self::usable_count)).
    pub fn usable_count_between(&self, lo: u128, hi: u128) -> u128 {
        let (lo, hi) = (lo.max(self.first), hi.min(self.last));
        if lo > hi {
            return 0;
        }
        let excluded: u128 = self
            .excluded
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (a.max(lo), b.min(hi));
                if a > b { 0 } else { b - a + 1 }
            })
            .sum();
        hi - lo + 1 - excluded
    }

    /// The lowest offset of `lo..=hi` this range hands out.
    pub fn first_usable_between(&self, lo: u128, hi: u128) -> Option<u128> {
        let mut o = lo.max(self.first);
        for &(a, b) in &self.excluded {
            if b < o {
                continue;
            }
            if a > o {
                break;
            }
            o = b.checked_add(1)?;
        }
        (o <= hi.min(self.last)).then_some(o)
    }

    /// The highest offset of `lo..=hi` this range hands out.
    pub fn last_usable_between(&self, lo: u128, hi: u128) -> Option<u128> {
        let mut o = hi.min(self.last);
        for &(a, b) in self.excluded.iter().rev() {
            if a > o {
                continue;
            }
            if b < o {
                break;
            }
            o = a.checked_sub(1)?;
        }
        (o >= lo.max(self.first)).then_some(o)
    }

    /// Whether `ip` is inside the CIDR (handed out or not).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(ip)
    }

    /// The offset of `ip` in the CIDR.
    pub fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        self.cidr.offset_of(ip)
    }

    /// The address at `offset` in the CIDR.
    pub fn ip_at(&self, offset: u128) -> Option<IpAddr> {
        self.cidr.ip_at(offset)
    }

    /// Why `offset` is not handed out, or `None` if it may be.
    pub fn unusable_reason(&self, offset: u128) -> Option<Unusable> {
        if offset > self.cidr.last_offset() {
            Some(Unusable::OutsideCidr)
        } else if offset == 0 {
            Some(Unusable::NetworkAddress)
        } else if offset == self.cidr.last_offset() {
            Some(Unusable::LastAddress)
        } else if offset < self.first {
            Some(Unusable::BeforeStart)
        } else if offset > self.last {
            Some(Unusable::AfterEnd)
        } else if self.is_excluded(offset) {
            Some(Unusable::Excluded)
        } else {
            None
        }
    }

    /// Why `ip` is not handed out, or `None` if it may be.
    pub fn unusable_ip_reason(&self, ip: IpAddr) -> Option<Unusable> {
        match self.offset_of(ip) {
            Some(o) => self.unusable_reason(o),
            None => Some(Unusable::OutsideCidr),
        }
    }

    /// Whether `offset` may be handed out.
    pub fn is_usable(&self, offset: u128) -> bool {
        offset >= self.first && offset <= self.last && !self.is_excluded(offset)
    }

    fn is_excluded(&self, offset: u128) -> bool {
        let i = self.excluded.partition_point(|&(a, _)| a <= offset);
        i > 0 && self.excluded.get(i - 1).is_some_and(|&(_, b)| offset <= b)
    }
}

/// The offsets of `ex` inside `cidr`, if they meet.
fn clip_cidr(cidr: &Cidr, ex: &Cidr) -> Option<(u128, u128)> {
    if ex.family() != cidr.family() || !cidr.overlaps(ex) {
        return None;
    }
    if ex.prefix_len() <= cidr.prefix_len() {
        // The exclusion swallows the whole CIDR.
        Some((0, cidr.last_offset()))
    } else {
        let a = cidr.offset_of(ex.network())?;
        Some((a, a + ex.last_offset()))
    }
}

fn ip_after(a: IpAddr, b: IpAddr) -> bool {
    super::cidr::ip_bits(a) > super::cidr::ip_bits(b)
}

/// Full field names for one range's keys.
struct Fields {
    range: String,
    start: String,
    end: String,
    exclude: String,
}

impl Fields {
    fn new(path: &str) -> Self {
        let key = |k: &str| {
            if path.is_empty() {
                k.to_owned()
            } else {
                format!("{path}.{k}")
            }
        };
        Fields {
            range: key("range"),
            start: key("range_start"),
            end: key("range_end"),
            exclude: key("exclude"),
        }
    }
}

impl fmt::Display for IpRange {
    /// `192.168.1.5-192.168.1.12 of 192.168.1.0/24`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{} of {}", self.first_ip(), self.last_ip(), self.cidr)?;
        if !self.excluded.is_empty() {
            write!(f, " ({} excluded intervals)", self.excluded.len())?;
        }
        Ok(())
    }
}

impl FromStr for IpRange {
    type Err = RangeError;

    /// A range from a bare `range` value: a CIDR or `A-B/len`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IpRange::parse(&RangeFields {
            path: "",
            range: s,
            ..RangeFields::default()
        })
        .map(|(r, _)| r)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_range_is_within_another_only_if_it_hands_out_no_more() {
        let parse = |range: &str, start: Option<&str>, end: Option<&str>, exclude: &[&str]| {
            IpRange::parse(&RangeFields {
                path: "t",
                range,
                range_start: start,
                range_end: end,
                exclude,
            })
            .expect("range")
            .0
        };
        let declared = parse(
            "100.64.9.0/24",
            Some("100.64.9.10"),
            None,
            &["100.64.9.100/30"],
        );
        assert!(declared.within(&declared));
        let narrower = parse(
            "100.64.9.0/24",
            Some("100.64.9.20"),
            Some("100.64.9.200"),
            &["100.64.9.100/30", "100.64.9.50"],
        );
        assert!(narrower.within(&declared));
        assert!(!declared.within(&narrower));
        let no_start = parse("100.64.9.0/24", None, None, &["100.64.9.100/30"]);
        assert!(!no_start.within(&declared), "drops range_start");
        let no_exclude = parse("100.64.9.0/24", Some("100.64.9.10"), None, &[]);
        assert!(!no_exclude.within(&declared), "drops the exclusion");
        let past = parse(
            "100.64.9.0/24",
            Some("100.64.9.10"),
            Some("100.64.9.99"),
            &[],
        );
        assert!(past.within(&declared), "ends before the exclusion");
        let other = parse("100.64.8.0/24", None, None, &[]);
        assert!(!other.within(&declared));
    }
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn parse(
        range: &str,
        start: Option<&str>,
        end: Option<&str>,
        exclude: &[&str],
    ) -> Result<IpRange, RangeError> {
        IpRange::parse(&RangeFields {
            path: "ipam",
            range,
            range_start: start,
            range_end: end,
            exclude,
        })
        .map(|(r, _)| r)
    }

    #[test]
    fn whole_cidr_skips_network_and_broadcast() {
        let r: IpRange = "192.168.1.0/24".parse().expect("valid");
        assert_eq!(r.first_ip(), ip("192.168.1.1"));
        assert_eq!(r.last_ip(), ip("192.168.1.254"));
        assert_eq!(r.usable_count(), 254);
        assert_eq!(
            r.unusable_ip_reason(ip("192.168.1.0")),
            Some(Unusable::NetworkAddress)
        );
        assert_eq!(
            r.unusable_ip_reason(ip("192.168.1.255")),
            Some(Unusable::LastAddress)
        );
        assert_eq!(
            r.unusable_ip_reason(ip("192.168.2.1")),
            Some(Unusable::OutsideCidr)
        );
    }

    #[test]
    fn start_end_form() {
        let r: IpRange = "192.168.1.5-192.168.1.25/24".parse().expect("valid");
        assert_eq!(r.cidr().to_string(), "192.168.1.0/24");
        assert_eq!(r.first_ip(), ip("192.168.1.5"));
        assert_eq!(r.last_ip(), ip("192.168.1.25"));
        let r: IpRange = "00192.00168.1.5-000000192.168.1.25/24"
            .parse()
            .expect("valid");
        assert_eq!(r.first_ip(), ip("192.168.1.5"));
    }

    #[test]
    fn start_outside_cidr_names_the_start() {
        let err = parse("192.168.1.5-192.168.2.25/28", None, None, &[]).expect_err("must fail");
        assert!(
            matches!(&err, RangeError::StartOutsideCidr { value, .. } if value == "192.168.1.5")
        );
        assert_eq!(err.field(), "ipam.range");
        assert_eq!(
            err.to_string(),
            "ipam.range: range start 192.168.1.5 is outside 192.168.2.16/28"
        );
        let err = parse("10.0.0.0/24", Some("10.0.1.1"), None, &[]).expect_err("must fail");
        assert_eq!(err.field(), "ipam.range_start");
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse("10.0.0.0/24", Some("10.0.0.9"), Some("10.0.0.3"), &[])
                .expect_err("inverted")
                .metric_label(),
            "range_inverted"
        );
        assert_eq!(
            parse("10.0.0.0/24", Some("10.0.0.255"), None, &[])
                .expect_err("empty")
                .metric_label(),
            "range_empty"
        );
        for small in ["10.0.0.0/31", "10.0.0.1/32", "::/127", "::1/128"] {
            assert_eq!(
                parse(small, None, None, &[])
                    .expect_err("no usable")
                    .metric_label(),
                "range_no_usable_address"
            );
        }
        assert_eq!(
            parse("10.0.0.0/24", None, None, &["10.0.0.0/24"])
                .expect_err("all excluded")
                .field(),
            "ipam.exclude"
        );
        assert_eq!(
            parse("10.0.0.0/24", None, None, &["10.0.0.0/25", "10.0.0.128/25"])
                .expect_err("all excluded")
                .metric_label(),
            "range_excluded_entirely"
        );
        assert_eq!(
            parse("10.0.0.0/24", None, None, &["ok", "10.0.0.1/33"])
                .expect_err("bad")
                .field(),
            "ipam.exclude[0]"
        );
        assert_eq!(
            parse("10.0.0.0/24", Some("x"), None, &[])
                .expect_err("bad")
                .field(),
            "ipam.range_start"
        );
        assert_eq!(
            parse("10.0.0.0/24", None, Some("::1"), &[])
                .expect_err("bad")
                .field(),
            "ipam.range_end"
        );
        assert_eq!(
            parse("10.0.0.0/24", None, Some("9.0.0.1"), &[])
                .expect_err("bad")
                .field(),
            "ipam.range_end"
        );
        assert!(matches!(
            parse("10.0.0.0/24x", None, None, &[]),
            Err(RangeError::InvalidCidr { .. })
        ));
    }

    #[test]
    fn whereabouts_clamps() {
        // range_start at the network address and range_end past the CIDR
        // are accepted and clamped, as whereabouts ignores them.
        let (r, warnings) = IpRange::parse(&RangeFields {
            path: "ipam",
            range: "192.168.0.0/29",
            range_start: Some("192.168.0.0"),
            range_end: Some("192.168.0.8"),
            exclude: &[],
        })
        .expect("valid");
        assert_eq!(
            (r.first_ip(), r.last_ip()),
            (ip("192.168.0.1"), ip("192.168.0.6"))
        );
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].field, "ipam.range_end");
    }

    #[test]
    fn exclusions_merge_and_clip() {
        let r = parse(
            "192.168.0.0/28",
            None,
            None,
            &[
                "192.168.0.0/30",
                "192.168.0.6/31",
                "192.168.0.8/31",
                "192.168.0.4/30",
                "10.0.0.0/8",
                "::1",
            ],
        )
        .expect("valid");
        assert_eq!(r.excluded(), &[(1, 9)]);
        assert_eq!(r.usable_count(), 5);
        assert!(!r.is_usable(9));
        assert!(r.is_usable(10));
        // One shard's share: the exclusions and the limits inside it only.
        assert_eq!(r.usable_count_between(0, 9), 0);
        assert_eq!(r.usable_count_between(8, 11), 2);
        assert_eq!(r.usable_count_between(0, u128::MAX), r.usable_count());
        assert_eq!(r.usable_count_between(11, 10), 0);
        assert_eq!(r.first_usable_between(0, 15), Some(10));
        assert_eq!(r.last_usable_between(0, 15), Some(14));
        assert_eq!(r.first_usable_between(0, 9), None);
        assert_eq!(r.last_usable_between(0, 9), None);
        assert_eq!(r.last_usable_between(0, 11), Some(11));
        assert_eq!(r.first_usable_between(12, 12), Some(12));
    }

    #[test]
    fn shard_shares_add_up() {
        let r: IpRange = "198.51.100.0/24".parse().expect("valid");
        assert_eq!(r.usable_count_between(0, 127), 127);
        assert_eq!(r.usable_count_between(128, 255), 127);
        let r: IpRange = "2001:db8::/30".parse().expect("valid");
        let span = 1u128 << 97;
        assert_eq!(
            r.usable_count_between(0, span - 1) + r.usable_count_between(span, u128::MAX),
            r.usable_count()
        );
    }

    #[test]
    fn wide_ipv6() {
        let r: IpRange = "2001:db8::/30".parse().expect("valid");
        assert_eq!(r.last_offset(), (1u128 << 98) - 2);
        let r: IpRange = "::/0".parse().expect("valid");
        assert_eq!(r.usable_count(), u128::MAX - 1);
    }
}
