//! [`Pool`]: the in-memory allocator for one range, the state of one
//! whereabouts `IPPool`.
//!
//! Allocations are keyed by offset from the CIDR's network address (the
//! decimal string of that offset is the `IPPool.spec.allocations` key). The
//! lowest free address comes from a B-tree of maximal occupied runs
//! (everything outside the range, exclusions, allocations and addresses
//! reserved by overlapping pools), so one allocation costs O(log n) and
//! memory grows with the number of allocations, never with the range size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::range::{IpRange, Unusable};
use super::runs::Runs;

/// Who holds an address: one entry of `IPPool.spec.allocations`, with the
/// same JSON field names (`id`, `podref`, `ifname`).
///
/// The strings are shared, not copied: a ledger names every allocation in
/// its truth, its owner index and each allocator variant's indexes, and a
/// clone costs three reference counts instead of three strings (`make
/// bench`: about 1 KiB per allocation less at 60,000 allocations).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Allocation {
    /// The container (sandbox) ID of the attachment.
    #[serde(rename = "id", with = "shared_str")]
    pub container_id: Arc<str>,
    /// `namespace/name` of the pod.
    #[serde(rename = "podref", with = "shared_str")]
    pub pod_ref: Arc<str>,
    /// The pod's interface name (e.g. `net1`).
    #[serde(
        rename = "ifname",
        default,
        skip_serializing_if = "shared_str::is_empty",
        with = "shared_str"
    )]
    pub ifname: Arc<str>,
}

/// `Arc<str>` as a JSON string (serde's own impl needs its `rc` feature,
/// which would rebuild every crate that uses serde).
mod shared_str {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(deserializer).map(Arc::from)
    }

    pub fn is_empty(s: &Arc<str>) -> bool {
        s.is_empty()
    }
}

/// (pod reference, interface): who an allocation belongs to.
pub type Owner = (Arc<str>, Arc<str>);

/// The owner key of (`pod_ref`, `ifname`), for a lookup.
pub fn owner_key(pod_ref: &str, ifname: &str) -> Owner {
    (Arc::from(pod_ref), Arc::from(ifname))
}

impl Allocation {
    pub fn new(
        container_id: impl Into<Arc<str>>,
        pod_ref: impl Into<Arc<str>>,
        ifname: impl Into<Arc<str>>,
    ) -> Self {
        Allocation {
            container_id: container_id.into(),
            pod_ref: pod_ref.into(),
            ifname: ifname.into(),
        }
    }
}

/// What [`Pool::allocate`] and friends did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new address was taken: the pool changed.
    Allocated,
    /// The (pod, interface) already held this address; nothing changed.
    Existing,
    /// The (pod, interface) already held this address under another
    /// container ID, which was updated (as whereabouts does): the pool
    /// changed.
    ContainerIdUpdated,
}

/// An address handed to an owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub offset: u128,
    pub ip: IpAddr,
    /// The range's prefix length, for the CNI result (`ip/prefix_len`).
    pub prefix_len: u8,
    pub outcome: Outcome,
}

impl Assigned {
    /// Whether the pool must be written back.
    pub fn changed(&self) -> bool {
        self.outcome != Outcome::Existing
    }
}

/// An allocation taken out of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub offset: u128,
    pub ip: IpAddr,
    pub allocation: Allocation,
}

/// Why an address could not be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no free address left in {range} ({allocated} allocated)")]
    Exhausted { range: String, allocated: usize },
    #[error("requested address {ip} is outside {cidr}")]
    OutsideRange { ip: IpAddr, cidr: String },
    #[error("requested address {ip} is not handed out by {range}: {reason}")]
    NotAllocatable {
        ip: IpAddr,
        range: String,
        reason: Unusable,
    },
    #[error("requested address {ip} is already held by {holder}")]
    Taken { ip: IpAddr, holder: String },
    #[error("requested address {ip} is reserved by an overlapping range")]
    ReservedElsewhere { ip: IpAddr },
    #[error("{pod_ref} interface {ifname:?} already holds {held}, not the requested {requested}")]
    OwnerHoldsOther {
        pod_ref: String,
        ifname: String,
        held: IpAddr,
        requested: IpAddr,
    },
    #[error(
        "gave up after {probes} free addresses of {range} were all reserved by overlapping ranges"
    )]
    ProbeLimit { range: String, probes: u64 },
}

impl AllocError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AllocError::Exhausted { .. } => "exhausted",
            AllocError::OutsideRange { .. } => "outside_range",
            AllocError::NotAllocatable { .. } => "not_allocatable",
            AllocError::Taken { .. } => "taken",
            AllocError::ReservedElsewhere { .. } => "reserved_elsewhere",
            AllocError::OwnerHoldsOther { .. } => "owner_holds_other",
            AllocError::ProbeLimit { .. } => "probe_limit",
        }
    }
}

/// Something odd found while loading existing allocations; loading goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadIssue {
    #[error("allocation key {key:?} is not a decimal offset; entry dropped")]
    InvalidKey { key: String },
    #[error("allocation at offset {offset} is outside {cidr}; entry dropped")]
    OutsideCidr { offset: u128, cidr: String },
    #[error("allocation at offset {offset} appears twice; the later entry was dropped")]
    DuplicateOffset { offset: u128 },
    #[error(
        "{ip} (offset {offset}) is held by {pod_ref} but {reason}; kept, never handed out again"
    )]
    NotUsable {
        offset: u128,
        ip: IpAddr,
        pod_ref: String,
        reason: Unusable,
    },
    #[error(
        "{pod_ref} interface {ifname:?} holds both offset {kept} and {offset}; \
         asking again returns offset {kept}"
    )]
    DuplicateOwner {
        offset: u128,
        kept: u128,
        pod_ref: String,
        ifname: String,
    },
}

impl LoadIssue {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LoadIssue::InvalidKey { .. } => "invalid_key",
            LoadIssue::OutsideCidr { .. } => "outside_cidr",
            LoadIssue::DuplicateOffset { .. } => "duplicate_offset",
            LoadIssue::NotUsable { .. } => "not_usable",
            LoadIssue::DuplicateOwner { .. } => "duplicate_owner",
        }
    }
}

/// The `IPPool.spec.allocations` key of an offset: its decimal string.
pub fn allocation_key(offset: u128) -> String {
    offset.to_string()
}

/// The offset of an `IPPool.spec.allocations` key. Read as whereabouts
/// reads it (Go's `strconv.ParseInt(key, 10, 64)`), so an entry edited by
/// hand to `"+5"` or `"005"` holds offset 5 for both: the address is never
/// handed out again while whereabouts believes it taken. Keys that are no
/// offset at all (`"-1"`, `"1e9"`, `" 5"`, beyond `u128`) hold nothing.
pub fn parse_allocation_key(key: &str) -> Option<u128> {
    let digits = key.strip_prefix('+').unwrap_or(key);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How many free addresses [`Pool::allocate_avoiding`] may pass over before
/// giving up.
pub const AVOID_PROBE_LIMIT: u64 = 1 << 20;

/// The allocations of one range, with indexes for idempotent allocation
/// (by pod reference and interface) and release (by container ID and
/// interface).
#[derive(Clone)]
pub struct Pool {
    range: IpRange,
    allocations: BTreeMap<u128, Allocation>,
    /// (pod_ref, ifname) -> offset.
    by_owner: BTreeMap<Owner, u128>,
    /// (container_id, ifname, offset).
    by_container: BTreeSet<(Arc<str>, Arc<str>, u128)>,
    /// Further offsets of owners that hold more than one (only ever filled
    /// by loading a faulty pool; normally empty).
    doubled_owners: HashMap<Owner, BTreeSet<u128>>,
    /// Offsets reserved by overlapping pools.
    foreign: BTreeSet<u128>,
    /// Offsets that are not free: outside `[first, last]`, excluded,
    /// allocated or foreign.
    occupied: Runs,
    /// Usable offsets that are allocated or foreign.
    taken_usable: u128,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("range", &self.range.to_string())
            .field("allocated", &self.allocations.len())
            .field("foreign", &self.foreign.len())
            .field("runs", &self.occupied.len())
            .finish()
    }
}

impl Pool {
    /// An empty pool for `range`.
    pub fn new(range: IpRange) -> Self {
        let mut occupied = Runs::default();
        occupied.insert_interval(0, range.first_offset() - 1);
        occupied.insert_interval(range.last_offset() + 1, range.cidr().last_offset());
        for &(a, b) in range.excluded() {
            occupied.insert_interval(a, b);
        }
        Pool {
            range,
            allocations: BTreeMap::new(),
            by_owner: BTreeMap::new(),
            by_container: BTreeSet::new(),
            doubled_owners: HashMap::new(),
            foreign: BTreeSet::new(),
            occupied,
            taken_usable: 0,
        }
    }

    /// A pool holding existing allocations (e.g. read from an `IPPool`).
    /// Entries that cannot be represented are dropped and reported; entries
    /// at addresses the range would not hand out (after a configuration
    /// change) are kept, since a pod holds them, and reported.
    pub fn from_allocations(
        range: IpRange,
        allocations: impl IntoIterator<Item = (u128, Allocation)>,
    ) -> (Self, Vec<LoadIssue>) {
        let mut entries: Vec<(u128, Allocation)> = allocations.into_iter().collect();
        // Stable: among duplicates, the first given wins.
        entries.sort_by_key(|(o, _)| *o);
        let mut pool = Pool::new(range);
        let mut issues = Vec::new();
        for (offset, allocation) in entries {
            if offset > pool.range.cidr().last_offset() {
                issues.push(LoadIssue::OutsideCidr {
                    offset,
                    cidr: pool.range.cidr().to_string(),
                });
                continue;
            }
            if pool.allocations.contains_key(&offset) {
                issues.push(LoadIssue::DuplicateOffset { offset });
                continue;
            }
            if let Some(reason) = pool.range.unusable_reason(offset) {
                issues.push(LoadIssue::NotUsable {
                    offset,
                    ip: pool.ip(offset),
                    pod_ref: allocation.pod_ref.to_string(),
                    reason,
                });
            }
            let owner = (allocation.pod_ref.clone(), allocation.ifname.clone());
            if let Some(&kept) = pool.by_owner.get(&owner) {
                issues.push(LoadIssue::DuplicateOwner {
                    offset,
                    kept,
                    pod_ref: owner.0.to_string(),
                    ifname: owner.1.to_string(),
                });
                pool.doubled_owners.entry(owner).or_default().insert(offset);
                pool.insert_unindexed_owner(offset, allocation);
            } else {
                pool.insert(offset, allocation);
            }
        }
        (pool, issues)
    }

    /// Like [`Pool::from_allocations`], from `IPPool.spec.allocations`
    /// entries keyed by decimal offset strings.
    pub fn from_keyed<K: AsRef<str>>(
        range: IpRange,
        allocations: impl IntoIterator<Item = (K, Allocation)>,
    ) -> (Self, Vec<LoadIssue>) {
        let mut issues = Vec::new();
        let parsed: Vec<(u128, Allocation)> = allocations
            .into_iter()
            .filter_map(|(k, a)| match parse_allocation_key(k.as_ref()) {
                Some(o) => Some((o, a)),
                None => {
                    issues.push(LoadIssue::InvalidKey {
                        key: k.as_ref().to_owned(),
                    });
                    None
                }
            })
            .collect();
        let (pool, more) = Pool::from_allocations(range, parsed);
        issues.extend(more);
        (pool, issues)
    }

    /// The range this pool allocates from.
    pub fn range(&self) -> &IpRange {
        &self.range
    }

    /// Number of allocations.
    pub fn len(&self) -> usize {
        self.allocations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.allocations.is_empty()
    }

    /// Addresses that could still be handed out (neither allocated nor
    /// reserved by an overlapping range).
    pub fn free_count(&self) -> u128 {
        self.range.usable_count() - self.taken_usable
    }

    /// The allocation at `offset`.
    pub fn get(&self, offset: u128) -> Option<&Allocation> {
        self.allocations.get(&offset)
    }

    /// The allocation of `ip`.
    pub fn get_ip(&self, ip: IpAddr) -> Option<&Allocation> {
        self.range.offset_of(ip).and_then(|o| self.get(o))
    }

    /// The address held by (pod reference, interface).
    pub fn find_owner(&self, pod_ref: &str, ifname: &str) -> Option<(u128, &Allocation)> {
        let offset = *self.by_owner.get(&owner_key(pod_ref, ifname))?;
        self.allocations.get(&offset).map(|a| (offset, a))
    }

    /// Allocations in ascending offset order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, IpAddr, &Allocation)> + '_ {
        self.allocations.iter().map(|(&o, a)| (o, self.ip(o), a))
    }

    /// Allocations as `IPPool.spec.allocations` entries.
    pub fn keyed(&self) -> impl Iterator<Item = (String, &Allocation)> + '_ {
        self.allocations
            .iter()
            .map(|(&o, a)| (allocation_key(o), a))
    }

    /// The offset the next [`Pool::allocate`] would take.
    pub fn peek_lowest_free(&self) -> Option<u128> {
        self.occupied
            .first_gap_from(self.range.first_offset())
            .filter(|&o| o <= self.range.last_offset())
    }

    /// Hands `owner` the lowest free address, or the address its (pod
    /// reference, interface) already holds.
    pub fn allocate(&mut self, owner: Allocation) -> Result<Assigned, AllocError> {
        self.allocate_avoiding(owner, |_| false)
    }

    /// Like [`Pool::allocate`], passing over free addresses for which
    /// `reserved_elsewhere` is true (addresses that overlapping ranges hold).
    /// Costs one call per address passed over; gives up after
    /// [`AVOID_PROBE_LIMIT`]. For many such addresses, prefer
    /// [`Pool::mark_foreign`], which keeps allocation O(log n).
    pub fn allocate_avoiding(
        &mut self,
        owner: Allocation,
        mut reserved_elsewhere: impl FnMut(IpAddr) -> bool,
    ) -> Result<Assigned, AllocError> {
        if let Some(existing) = self.existing(&owner) {
            return Ok(existing);
        }
        let mut candidate = self.peek_lowest_free();
        let mut probes = 0u64;
        while let Some(offset) = candidate {
            if !reserved_elsewhere(self.ip(offset)) {
                return Ok(self.take(offset, owner));
            }
            probes += 1;
            if probes >= AVOID_PROBE_LIMIT {
                return Err(AllocError::ProbeLimit {
                    range: self.range.to_string(),
                    probes,
                });
            }
            candidate = offset
                .checked_add(1)
                .and_then(|next| self.occupied.first_gap_from(next))
                .filter(|&o| o <= self.range.last_offset());
        }
        Err(AllocError::Exhausted {
            range: self.range.to_string(),
            allocated: self.allocations.len(),
        })
    }

    /// Hands `owner` exactly `ip`, or fails: the address must be usable and
    /// free, and the owner must not hold another address in this pool.
    pub fn allocate_static(
        &mut self,
        ip: IpAddr,
        owner: Allocation,
    ) -> Result<Assigned, AllocError> {
        let offset = self
            .range
            .offset_of(ip)
            .ok_or_else(|| AllocError::OutsideRange {
                ip,
                cidr: self.range.cidr().to_string(),
            })?;
        if let Some(existing) = self.existing(&owner) {
            if existing.offset == offset {
                return Ok(existing);
            }
            return Err(AllocError::OwnerHoldsOther {
                pod_ref: owner.pod_ref.to_string(),
                ifname: owner.ifname.to_string(),
                held: existing.ip,
                requested: ip,
            });
        }
        if let Some(holder) = self.allocations.get(&offset) {
            return Err(AllocError::Taken {
                ip,
                holder: format!("{} interface {:?}", holder.pod_ref, holder.ifname),
            });
        }
        if let Some(reason) = self.range.unusable_reason(offset) {
            return Err(AllocError::NotAllocatable {
                ip,
                range: self.range.to_string(),
                reason,
            });
        }
        if self.foreign.contains(&offset) {
            return Err(AllocError::ReservedElsewhere { ip });
        }
        Ok(self.take(offset, owner))
    }

    /// Releases what (container ID, interface) holds, as a CNI DEL does.
    /// Should the pool hold several, releases the lowest.
    pub fn release(&mut self, container_id: &str, ifname: &str) -> Option<Released> {
        let (container_id, ifname): (Arc<str>, Arc<str>) = (container_id.into(), ifname.into());
        let lo = (container_id.clone(), ifname.clone(), 0u128);
        let hi = (container_id, ifname, u128::MAX);
        let &(_, _, offset) = self.by_container.range(lo..=hi).next()?;
        self.release_offset(offset)
    }

    /// Releases what (pod reference, interface) holds.
    pub fn release_owner(&mut self, pod_ref: &str, ifname: &str) -> Option<Released> {
        let (offset, _) = self.find_owner(pod_ref, ifname)?;
        self.release_offset(offset)
    }

    /// Releases the address of `ip`.
    pub fn release_ip(&mut self, ip: IpAddr) -> Option<Released> {
        self.release_offset(self.range.offset_of(ip)?)
    }

    /// Releases the allocation at `offset`.
    pub fn release_offset(&mut self, offset: u128) -> Option<Released> {
        let allocation = self.allocations.remove(&offset)?;
        let owner = (allocation.pod_ref.clone(), allocation.ifname.clone());
        if self.by_owner.get(&owner) == Some(&offset) {
            self.by_owner.remove(&owner);
            // Another entry of the same owner (from a faulty pool) takes over.
            if let Some(extra) = self.doubled_owners.get_mut(&owner) {
                if let Some(next) = extra.pop_first() {
                    self.by_owner.insert(owner.clone(), next);
                }
                if extra.is_empty() {
                    self.doubled_owners.remove(&owner);
                }
            }
        } else if let Some(extra) = self.doubled_owners.get_mut(&owner) {
            extra.remove(&offset);
            if extra.is_empty() {
                self.doubled_owners.remove(&owner);
            }
        }
        self.by_container.remove(&(
            allocation.container_id.clone(),
            allocation.ifname.clone(),
            offset,
        ));
        if !self.foreign.contains(&offset) && self.range.is_usable(offset) {
            self.occupied.remove(offset);
            self.taken_usable -= 1;
        }
        Some(Released {
            offset,
            ip: self.ip(offset),
            allocation,
        })
    }

    /// Marks `ip` as reserved by an overlapping range: it is passed over
    /// until [`Pool::unmark_foreign`]. Returns whether it was newly marked
    /// (false also when `ip` is outside the CIDR).
    pub fn mark_foreign(&mut self, ip: IpAddr) -> bool {
        let Some(offset) = self.range.offset_of(ip) else {
            return false;
        };
        if !self.foreign.insert(offset) {
            return false;
        }
        if !self.allocations.contains_key(&offset) && self.range.is_usable(offset) {
            self.occupied.insert(offset);
            self.taken_usable += 1;
        }
        true
    }

    /// Undoes [`Pool::mark_foreign`]. Returns whether `ip` was marked.
    pub fn unmark_foreign(&mut self, ip: IpAddr) -> bool {
        let Some(offset) = self.range.offset_of(ip) else {
            return false;
        };
        if !self.foreign.remove(&offset) {
            return false;
        }
        if !self.allocations.contains_key(&offset) && self.range.is_usable(offset) {
            self.occupied.remove(offset);
            self.taken_usable -= 1;
        }
        true
    }

    /// Number of addresses marked as reserved by overlapping ranges.
    pub fn foreign_count(&self) -> usize {
        self.foreign.len()
    }

    /// Number of B-tree runs the free-space index holds; bounded by
    /// allocations + foreign marks + exclusions + 2, whatever the range size.
    pub fn index_runs(&self) -> usize {
        self.occupied.len()
    }

    // === internals

    fn ip(&self, offset: u128) -> IpAddr {
        // Offsets in the pool are always inside the CIDR.
        self.range
            .ip_at(offset)
            .unwrap_or(self.range.cidr().network())
    }

    fn assigned(&self, offset: u128, outcome: Outcome) -> Assigned {
        Assigned {
            offset,
            ip: self.ip(offset),
            prefix_len: self.range.cidr().prefix_len(),
            outcome,
        }
    }

    /// The address (pod reference, interface) already holds, updating its
    /// container ID if it changed.
    fn existing(&mut self, owner: &Allocation) -> Option<Assigned> {
        let offset = *self
            .by_owner
            .get(&(owner.pod_ref.clone(), owner.ifname.clone()))?;
        let held = self.allocations.get_mut(&offset)?;
        if held.container_id == owner.container_id {
            return Some(self.assigned(offset, Outcome::Existing));
        }
        let old = std::mem::replace(&mut held.container_id, owner.container_id.clone());
        self.by_container
            .remove(&(old, owner.ifname.clone(), offset));
        self.by_container
            .insert((owner.container_id.clone(), owner.ifname.clone(), offset));
        Some(self.assigned(offset, Outcome::ContainerIdUpdated))
    }

    fn take(&mut self, offset: u128, owner: Allocation) -> Assigned {
        self.insert(offset, owner);
        self.assigned(offset, Outcome::Allocated)
    }

    fn insert(&mut self, offset: u128, allocation: Allocation) {
        self.by_owner.insert(
            (allocation.pod_ref.clone(), allocation.ifname.clone()),
            offset,
        );
        self.insert_unindexed_owner(offset, allocation);
    }

    fn insert_unindexed_owner(&mut self, offset: u128, allocation: Allocation) {
        self.by_container.insert((
            allocation.container_id.clone(),
            allocation.ifname.clone(),
            offset,
        ));
        if !self.foreign.contains(&offset) && self.range.is_usable(offset) {
            self.occupied.insert(offset);
            self.taken_usable += 1;
        }
        self.allocations.insert(offset, allocation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::RangeFields;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn range(r: &str, start: Option<&str>, end: Option<&str>, exclude: &[&str]) -> IpRange {
        IpRange::parse(&RangeFields {
            path: "ipam",
            range: r,
            range_start: start,
            range_end: end,
            exclude,
        })
        .expect("valid range")
        .0
    }

    fn pod(n: usize) -> Allocation {
        Allocation::new(format!("c{n}"), format!("default/pod-{n}"), "net1")
    }

    fn first(r: IpRange) -> IpAddr {
        Pool::new(r).allocate(pod(0)).expect("allocates").ip
    }

    #[test]
    fn whereabouts_vectors() {
        assert_eq!(
            first(range("192.168.1.0/24", None, None, &[])),
            ip("192.168.1.1")
        );
        assert_eq!(
            first(range(
                "192.168.1.0/24",
                None,
                None,
                &["192.168.1.0/28", "192.168.1.16/28"]
            )),
            ip("192.168.1.32")
        );
        assert_eq!(
            first(range(
                "2001::1/116",
                None,
                None,
                &["2001::0/128", "2001::1/128", "2001::2/128"]
            )),
            ip("2001::3")
        );
        assert_eq!(
            first(range("caa5::0/112", None, None, &["caa5::0/113"])),
            ip("caa5::8000")
        );
        assert_eq!(
            first(range("2001:db8::/30", None, None, &["2001:db8::/32"])),
            ip("2001:db9::")
        );
        assert_eq!(first(range("caa5::0/112", None, None, &[])), ip("caa5::1"));
        assert_eq!(first(range("::1/126", None, None, &[])), ip("::1"));
        assert_eq!(
            first(range("100::2:1/126", None, None, &[])),
            ip("100::2:1")
        );
        assert_eq!(
            first(range("192.168.0.0/29", None, None, &["192.168.0.0/30"])),
            ip("192.168.0.4")
        );
        assert_eq!(
            first(range("192.168.0.0/29", None, None, &["192.168.0.1"])),
            ip("192.168.0.2")
        );
        assert_eq!(
            first(range(
                "192.168.0.0/28",
                None,
                None,
                &[
                    "192.168.0.0/30",
                    "192.168.0.14/31",
                    "192.168.0.4/30",
                    "192.168.0.6/31",
                    "192.168.0.8/31"
                ]
            )),
            ip("192.168.0.10")
        );
    }

    #[test]
    fn range_start_end_then_exhaustion() {
        let mut p = Pool::new(range(
            "192.168.1.0/24",
            Some("192.168.1.5"),
            Some("192.168.1.12"),
            &[],
        ));
        for i in 0..8 {
            let a = p.allocate(pod(i)).expect("allocates");
            assert_eq!(a.ip, ip(&format!("192.168.1.{}", 5 + i)));
            assert_eq!(a.outcome, Outcome::Allocated);
        }
        let err = p.allocate(pod(8)).expect_err("ninth must fail");
        assert_eq!(err.metric_label(), "exhausted");
        assert_eq!(p.free_count(), 0);
    }

    #[test]
    fn existing_allocations_fill_the_range() {
        // whereabouts: reservations .4-.6 plus exclusion .0/30 leave nothing in a /29.
        let r = range("192.168.0.0/29", None, None, &["192.168.0.0/30"]);
        let existing = (4..=6).map(|o| (o, pod(o as usize)));
        let (mut p, issues) = Pool::from_allocations(r, existing);
        assert!(issues.is_empty());
        assert!(matches!(
            p.allocate(pod(9)),
            Err(AllocError::Exhausted { .. })
        ));
    }

    #[test]
    fn idempotent_per_pod_and_interface() {
        let mut p = Pool::new(range("10.0.0.0/24", None, None, &[]));
        let a = p.allocate(pod(1)).expect("allocates");
        let again = p.allocate(pod(1)).expect("allocates");
        assert_eq!((again.ip, again.outcome), (a.ip, Outcome::Existing));
        assert!(!again.changed());
        // Same pod and interface, new sandbox: same address, new container ID.
        let recreated = Allocation::new("c-new", "default/pod-1", "net1");
        let b = p.allocate(recreated).expect("allocates");
        assert_eq!((b.ip, b.outcome), (a.ip, Outcome::ContainerIdUpdated));
        assert!(p.release("c1", "net1").is_none());
        // Another interface of the same pod gets its own address.
        let other_if = Allocation::new("c-new", "default/pod-1", "net2");
        assert_ne!(p.allocate(other_if).expect("allocates").ip, a.ip);
        let released = p.release("c-new", "net1").expect("held");
        assert_eq!(released.ip, a.ip);
        assert!(p.release("c-new", "net1").is_none());
    }

    #[test]
    fn release_then_allocate_reuses_lowest() {
        let mut p = Pool::new(range("10.0.0.0/24", None, None, &[]));
        for i in 0..10 {
            p.allocate(pod(i)).expect("allocates");
        }
        p.release("c7", "net1").expect("held");
        p.release("c3", "net1").expect("held");
        assert_eq!(p.allocate(pod(20)).expect("allocates").ip, ip("10.0.0.4"));
        assert_eq!(p.allocate(pod(21)).expect("allocates").ip, ip("10.0.0.8"));
        assert_eq!(p.allocate(pod(22)).expect("allocates").ip, ip("10.0.0.11"));
    }

    #[test]
    fn static_requests() {
        let mut p = Pool::new(range(
            "10.0.0.0/24",
            None,
            Some("10.0.0.100"),
            &["10.0.0.50"],
        ));
        let a = p.allocate_static(ip("10.0.0.7"), pod(1)).expect("free");
        assert_eq!(a.ip, ip("10.0.0.7"));
        assert_eq!(
            p.allocate_static(ip("10.0.0.7"), pod(1))
                .expect("idempotent")
                .outcome,
            Outcome::Existing
        );
        let label = |r: Result<Assigned, AllocError>| r.expect_err("refused").metric_label();
        assert_eq!(label(p.allocate_static(ip("10.0.0.7"), pod(2))), "taken");
        assert_eq!(
            label(p.allocate_static(ip("10.0.0.8"), pod(1))),
            "owner_holds_other"
        );
        assert_eq!(
            label(p.allocate_static(ip("10.0.0.50"), pod(2))),
            "not_allocatable"
        );
        assert_eq!(
            label(p.allocate_static(ip("10.0.0.0"), pod(2))),
            "not_allocatable"
        );
        assert_eq!(
            label(p.allocate_static(ip("10.0.0.255"), pod(2))),
            "not_allocatable"
        );
        assert_eq!(
            label(p.allocate_static(ip("10.0.0.101"), pod(2))),
            "not_allocatable"
        );
        assert_eq!(
            label(p.allocate_static(ip("10.0.1.1"), pod(2))),
            "outside_range"
        );
        assert_eq!(label(p.allocate_static(ip("::1"), pod(2))), "outside_range");
        // Dynamic allocation goes around the static one.
        for i in 10..16 {
            p.allocate(pod(i)).expect("allocates");
        }
        assert_eq!(p.allocate(pod(16)).expect("allocates").ip, ip("10.0.0.8"));
    }

    #[test]
    fn foreign_reservations() {
        let mut p = Pool::new(range("10.0.0.0/24", None, None, &[]));
        assert!(p.mark_foreign(ip("10.0.0.1")));
        assert!(!p.mark_foreign(ip("10.0.0.1")));
        assert_eq!(p.allocate(pod(1)).expect("allocates").ip, ip("10.0.0.2"));
        let a = p
            .allocate_avoiding(pod(2), |ip| ip == "10.0.0.3".parse::<IpAddr>().expect("ip"))
            .expect("allocates");
        assert_eq!(a.ip, ip("10.0.0.4"));
        assert_eq!(
            p.allocate_static(ip("10.0.0.1"), pod(3))
                .expect_err("reserved")
                .metric_label(),
            "reserved_elsewhere"
        );
        assert_eq!(p.free_count(), 254 - 3);
        assert!(p.unmark_foreign(ip("10.0.0.1")));
        assert_eq!(p.allocate(pod(3)).expect("allocates").ip, ip("10.0.0.1"));
        let err = p
            .allocate_avoiding(pod(4), |_| true)
            .expect_err("all reserved");
        assert_eq!(err.metric_label(), "exhausted");
    }

    #[test]
    fn beyond_two_to_the_63() {
        let mut p = Pool::new(range("fd00::/64", Some("fd00::8000:0:0:0"), None, &[]));
        let a = p.allocate(pod(1)).expect("allocates");
        assert_eq!(a.offset, 1u128 << 63);
        assert_eq!(a.ip, ip("fd00::8000:0:0:0"));
        let top = ip("fd00::ffff:ffff:ffff:fffe");
        let b = p.allocate_static(top, pod(2)).expect("allocates");
        assert_eq!(b.offset, u128::from(u64::MAX) - 1);
        assert_eq!(
            p.keyed().map(|(k, _)| k).collect::<Vec<_>>(),
            vec![
                "9223372036854775808".to_owned(),
                "18446744073709551614".to_owned()
            ]
        );
        assert!(p.index_runs() <= 4);
        let mut wide = Pool::new(range("::/0", None, None, &[]));
        assert_eq!(wide.allocate(pod(1)).expect("allocates").ip, ip("::1"));
        let last = ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe");
        wide.allocate_static(last, pod(2)).expect("allocates");
        assert_eq!(wide.release_ip(last).expect("held").offset, u128::MAX - 1);
    }

    #[test]
    fn loading_reports_and_keeps_what_pods_hold() {
        let r = range("10.0.0.0/24", Some("10.0.0.10"), None, &["10.0.0.20/30"]);
        let entries = vec![
            ("1".to_owned(), pod(1)),  // below range_start: kept
            ("21".to_owned(), pod(2)), // excluded: kept
            ("11".to_owned(), pod(3)), // fine
            (
                "12".to_owned(),
                Allocation::new("c9", "default/pod-3", "net1"),
            ), // same owner
            ("x".to_owned(), pod(4)),  // bad key
            ("256".to_owned(), pod(5)), // outside the /24
            ("-1".to_owned(), pod(6)), // bad key
        ];
        let (mut p, issues) = Pool::from_keyed(r, entries);
        let labels: Vec<_> = issues.iter().map(LoadIssue::metric_label).collect();
        assert_eq!(
            labels,
            vec![
                "invalid_key",
                "invalid_key",
                "not_usable",
                "duplicate_owner",
                "not_usable",
                "outside_cidr"
            ]
        );
        assert_eq!(p.len(), 4);
        assert_eq!(
            p.find_owner("default/pod-3", "net1").map(|(o, _)| o),
            Some(11)
        );
        assert_eq!(p.allocate(pod(7)).expect("allocates").ip, ip("10.0.0.10"));
        assert_eq!(p.allocate(pod(8)).expect("allocates").ip, ip("10.0.0.13"));
        // Releasing a kept out-of-range entry does not make it allocatable.
        assert!(p.release_offset(1).is_some());
        assert_eq!(p.allocate(pod(10)).expect("allocates").ip, ip("10.0.0.14"));
        // When the indexed entry of a doubled owner goes, the other takes over.
        p.release_offset(11).expect("held");
        assert_eq!(
            p.find_owner("default/pod-3", "net1").map(|(o, _)| o),
            Some(12)
        );
    }

    #[test]
    fn allocation_serde_matches_ippool() {
        let a = Allocation::new("abc", "ns/pod", "net1");
        assert_eq!(
            serde_json::to_string(&a).expect("serialises"),
            r#"{"id":"abc","podref":"ns/pod","ifname":"net1"}"#
        );
        let b: Allocation =
            serde_json::from_str(r#"{"id":"abc","podref":"ns/pod"}"#).expect("parses");
        assert_eq!(&*b.ifname, "");
    }
}
