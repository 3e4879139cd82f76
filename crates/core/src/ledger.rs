//! The ledger of one pool: every allocation decision the controller makes,
//! with no I/O. The pool actor (`hereabouts-controller`'s `pools.rs`) loads
//! the pool's objects into it, asks it to decide a batch, writes what the
//! [`Decision`] says with preconditions, and reports back what the API
//! server answered (addresses an overlapping range holds, addresses freed
//! elsewhere). Time is an argument, so every rule here is unit tested.
//!
//! What it keeps:
//! - the truth: every committed allocation by offset and by (pod reference,
//!   interface);
//! - one allocator per distinct range configuration (NADs sharing a pool
//!   may differ in `range_start`, `range_end` and `exclude`), each replayed
//!   every change; one that cannot follow is rebuilt when next used;
//! - holds: an address released because its claim was deleted stays with
//!   that (pod, interface) for the hold period (a StatefulSet pod comes back
//!   under the same name); a dynamic request of a stranger never gets it
//!   unless nothing else is left, a static request for it does. A hold is
//!   written into the pool like an allocation of its (pod, interface), its
//!   container ID replaced by [`hold_marker`] with the expiry: it survives
//!   leader changes and restarts, and whereabouts reads the address as
//!   taken;
//! - cooldowns: an address just released (a claim deleted, an allocation
//!   collected as leaked, an IPAMClaim deleted) rests before it goes to
//!   anyone's dynamic request, the former owner's included (stale ARP and
//!   NDP caches, fabric state); when the range would otherwise be
//!   exhausted the cooled address whose cooldown ends first goes first,
//!   before any hold. A static request for it takes it at once. Written
//!   like a hold, with [`cooling_marker`] as its container ID. A hold
//!   lasts at least the cooldown, so a held address never skips it;
//! - foreign marks: addresses whose reservation an overlapping range holds,
//!   passed over until a recheck or until their release is heard; and
//!   suspected ones (the reservation cache says so, never confirmed), passed
//!   over only while something else is free;
//! - the shard layout: offsets `[k * SHARD_SPAN, (k+1) * SHARD_SPAN)` live in
//!   shard `k`, except strays (an adopted whereabouts pool holding offsets
//!   beyond its block), which stay where they were found until reloaded.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::allocator::{AllocError, Allocation, Assigned, Pool, allocation_key};
use crate::cidr::Cidr;
use crate::naming::{SHARD_SPAN, shard_index, shard_name};
use crate::range::IpRange;

/// How long an address found reserved by an overlapping range is passed
/// over before its reservation is tried again.
pub const FOREIGN_RECHECK: Duration = Duration::from_secs(60);

/// The longest hold or cooldown the ledger keeps.
const MAX_HOLD: Duration = Duration::from_secs(366 * 24 * 3600);

/// The container ID a pool entry carries while its address is held: the
/// marker and the expiry in seconds since the Unix epoch. Container IDs are
/// hex; this cannot be one.
const HOLD_MARKER: &str = "hereabouts.dev/held-until=";

/// The container ID a pool entry carries while its address cools down
/// after a release: the marker and the expiry in Unix seconds.
const COOLING_MARKER: &str = "hereabouts.dev/cooling-until=";

fn marker(prefix: &str, until: SystemTime) -> String {
    let secs = until
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    format!("{prefix}{secs}")
}

/// When a marker ends; a marker whose expiry does not read (a hand edit,
/// a corrupt write) has ended: it is no allocation of its pod, and the
/// collector removes it.
fn marked_until(prefix: &str, container_id: &str) -> Option<SystemTime> {
    let secs = container_id.strip_prefix(prefix)?;
    Some(
        secs.parse::<u64>()
            .ok()
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .unwrap_or(UNIX_EPOCH),
    )
}

/// The container ID of a hold that ends at `until`.
pub fn hold_marker(until: SystemTime) -> String {
    marker(HOLD_MARKER, until)
}

/// When the hold a pool entry's container ID marks ends; `None` when the
/// entry is no hold.
pub fn held_until(container_id: &str) -> Option<SystemTime> {
    marked_until(HOLD_MARKER, container_id)
}

/// The container ID of a cooldown that ends at `until`.
pub fn cooling_marker(until: SystemTime) -> String {
    marker(COOLING_MARKER, until)
}

/// When the cooldown a pool entry's container ID marks ends; `None` when
/// the entry is no cooldown.
pub fn cooling_until(container_id: &str) -> Option<SystemTime> {
    marked_until(COOLING_MARKER, container_id)
}

/// Whether `container_id` is the marker of the hold (`hold`) or cooldown
/// that ends at `until`, as the pool holds it.
fn names_rest(container_id: &str, until: SystemTime, hold: bool) -> bool {
    if hold {
        held_until(container_id).map(hold_marker) == Some(hold_marker(until))
    } else {
        cooling_until(container_id).map(cooling_marker) == Some(cooling_marker(until))
    }
}

/// When the hold or cooldown a pool entry's container ID marks ends;
/// `None` when the entry is an allocation. Such an entry belongs to no
/// live attachment: it is no leak while it lasts, and goes once ended.
pub fn resting_until(container_id: &str) -> Option<SystemTime> {
    held_until(container_id).or_else(|| cooling_until(container_id))
}

/// Whether a hold or cooldown ending at `until` still rests at `now`: not
/// ended, and not further away than any this ledger writes (a marker from
/// a hand edit or a wild clock must not pin an address for ever).
pub fn rests(until: SystemTime, now: SystemTime) -> bool {
    until > now && until <= later(now, MAX_HOLD)
}

/// `now + d`, `d` bounded so that it cannot overflow.
fn later(now: SystemTime, d: Duration) -> SystemTime {
    now.checked_add(d.min(MAX_HOLD)).unwrap_or(now)
}

/// What a claim asks of one range.
#[derive(Clone, Debug)]
pub struct Request {
    pub range: IpRange,
    pub owner: Allocation,
    pub static_ip: Option<IpAddr>,
    /// Whether a new allocation needs an `OverlappingRangeIPReservation`
    /// first (`enable_overlapping_ranges`).
    pub reserve: bool,
}

/// Which allocation to release.
#[derive(Clone, Debug)]
pub enum ReleaseBy {
    /// What (pod, interface) holds, if its container ID matches (when
    /// given): a claim was deleted.
    Owner {
        pod_ref: String,
        ifname: String,
        container_id: Option<String>,
    },
    /// This exact allocation, if it is still held by the same container:
    /// the garbage collector decided it is leaked.
    Exact { ip: IpAddr, container_id: String },
}

/// Why the release happens, with what the network's policy asks of the
/// address afterwards. Every reason whose address was on a pod's
/// interface gets a cooldown; a claim deletion may instead hold the
/// address for the same pod name (StatefulSet pods come back under the
/// same name), for at least the cooldown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseReason {
    /// A claim was deleted (DEL, or its pod went). `hold` zero: no hold.
    ClaimDeleted { hold: Duration, cooldown: Duration },
    /// The collector found the allocation leaked (its pod is gone, maybe
    /// still running on a partitioned node).
    Collected { cooldown: Duration },
    /// The IPAMClaim that owned the address was deleted (the VM is gone).
    IpamClaimDeleted { cooldown: Duration },
    /// Given back without ever reaching a pod (the other ranges of an
    /// all-or-nothing claim failed): no cooldown.
    Manual,
}

impl ReleaseReason {
    pub fn metric_label(self) -> &'static str {
        match self {
            ReleaseReason::ClaimDeleted { .. } => "claim_deleted",
            ReleaseReason::Collected { .. } => "garbage_collected",
            ReleaseReason::IpamClaimDeleted { .. } => "ipamclaim_deleted",
            ReleaseReason::Manual => "manual",
        }
    }

    fn hold(self) -> Duration {
        match self {
            ReleaseReason::ClaimDeleted { hold, .. } => hold,
            _ => Duration::ZERO,
        }
    }

    fn cooldown(self) -> Duration {
        match self {
            ReleaseReason::ClaimDeleted { cooldown, .. }
            | ReleaseReason::Collected { cooldown }
            | ReleaseReason::IpamClaimDeleted { cooldown } => cooldown,
            ReleaseReason::Manual => Duration::ZERO,
        }
    }
}

/// What a network asks of the addresses it releases: how long a pod whose
/// name comes back keeps its address (zero: no hold), and how long a
/// released address rests (zero: none). The controller's flags are the
/// defaults; a NAD's `hold_released` and `release_cooldown` override them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub hold: Duration,
    pub cooldown: Duration,
}

impl Policy {
    /// `self` (the defaults) overridden by what `config` says.
    pub fn with(self, config: Option<&crate::IpamConfig>) -> Policy {
        let Some(config) = config else {
            return self;
        };
        Policy {
            hold: match config.hold_released {
                None => self.hold,
                Some(crate::Hold::Off) => Duration::ZERO,
                Some(crate::Hold::For(d)) => d,
            },
            cooldown: config.release_cooldown.unwrap_or(self.cooldown),
        }
    }

    /// The release of a deleted claim: held only when a pod of the same
    /// name may come back.
    pub fn claim_deleted(self, name_comes_back: bool) -> ReleaseReason {
        ReleaseReason::ClaimDeleted {
            hold: if name_comes_back {
                self.hold
            } else {
                Duration::ZERO
            },
            cooldown: self.cooldown,
        }
    }
}

/// What a batch decided: one answer per request and per release, in their
/// order, and the writes that make it true.
#[derive(Debug, Default)]
pub struct Decision {
    pub allocs: Vec<Result<u128, AllocError>>,
    /// Whether each release found something to release.
    pub releases: Vec<bool>,
    /// Shards to write.
    pub touched: BTreeSet<u128>,
    /// New allocations that need a reservation before the pool write.
    pub reserve: Vec<(u128, Allocation)>,
    /// Allocations released, whose reservations go after the pool write.
    pub released: Vec<(u128, Allocation)>,
    /// Whether an answer rests on the ledger alone, with no write of this
    /// batch to fail should the pool have changed since it was read: a
    /// release that found nothing, an address already held granted again
    /// from a shard the batch does not write, or a request refused for
    /// what the pool holds (exhausted, the address taken). The ledger is what was
    /// last read or written; another hand (a whereabouts plugin during a
    /// migration, an admin) may have written the pool since, so such an
    /// answer is given only from a ledger read for it.
    pub unwitnessed: bool,
}

/// How [`Ledger::decide`] granted one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Granted {
    /// An entry written for it (a free address, or its own hold back).
    New,
    /// What it already held: nothing to write.
    Again,
    /// A resting address (cooled, or held for another pod name) given
    /// way because nothing else was free.
    GaveWay,
}

/// Something odd found while loading, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadWarning {
    /// An allocation key that is not an offset in the range.
    BadKey { shard: u128, key: String },
    /// An offset allocated in two shards: the first read wins.
    Duplicate { shard: u128, key: String },
}

/// One change to the truth, replayed on every allocator variant.
enum Change {
    Insert(u128, Allocation),
    Remove(u128),
    Block(u128),
    Unblock(u128),
}

impl Change {
    fn offset(&self) -> u128 {
        match self {
            Change::Insert(o, _) | Change::Remove(o) | Change::Block(o) | Change::Unblock(o) => *o,
        }
    }
}

use crate::allocator::{Owner, owner_key};

/// The marks a static request lifts from the address it asks for, kept
/// until it is granted.
#[derive(Default)]
struct SetAside {
    suspected: Option<(u128, SystemTime)>,
    held: Vec<(Owner, (u128, SystemTime))>,
    cooling: Option<(u128, (Owner, SystemTime))>,
}

/// The ledger of one pool (all its shards).
#[derive(Debug)]
pub struct Ledger {
    cidr: Cidr,
    /// The truth: every committed allocation, by offset...
    allocations: BTreeMap<u128, Allocation>,
    /// ...and by (pod reference, interface).
    owners: BTreeMap<Owner, u128>,
    /// Offsets found in a shard other than their block's, with that shard.
    strays: HashMap<u128, u128>,
    variants: HashMap<IpRange, (Pool, u64)>,
    /// Every range configuration seen (kept across reloads, which drop
    /// the variants): what the pool's status counts against.
    configured: HashSet<IpRange>,
    generation: u64,
    held: HashMap<Owner, (u128, SystemTime)>,
    /// Cooling addresses, with their former owner and the cooldown's end.
    cooling: BTreeMap<u128, (Owner, SystemTime)>,
    foreign: HashMap<u128, SystemTime>,
    suspected: HashMap<u128, SystemTime>,
}

impl Ledger {
    /// An empty ledger for `cidr`; how long a release holds or cools its
    /// address comes with each release ([`ReleaseReason`]).
    pub fn new(cidr: Cidr) -> Self {
        Ledger {
            cidr,
            allocations: BTreeMap::new(),
            owners: BTreeMap::new(),
            strays: HashMap::new(),
            variants: HashMap::new(),
            configured: HashSet::new(),
            generation: 0,
            held: HashMap::new(),
            cooling: BTreeMap::new(),
            foreign: HashMap::new(),
            suspected: HashMap::new(),
        }
    }

    pub fn cidr(&self) -> &Cidr {
        &self.cidr
    }

    /// Replaces the truth with what the pool's objects hold: `shards` are
    /// (shard index, allocation entries keyed as whereabouts keys them).
    /// Holds and cooldowns come from the objects; foreign marks survive a
    /// reload (they are this replica's knowledge, not the objects').
    pub fn load<I, E>(&mut self, shards: I) -> Vec<LoadWarning>
    where
        I: IntoIterator<Item = (u128, E)>,
        E: IntoIterator<Item = (String, Allocation)>,
    {
        self.allocations.clear();
        self.owners.clear();
        self.strays.clear();
        self.held.clear();
        self.cooling.clear();
        self.variants.clear();
        self.generation += 1;
        let mut warnings = Vec::new();
        for (shard, entries) in shards {
            for (key, a) in entries {
                let Some(offset) = crate::allocator::parse_allocation_key(&key)
                    .filter(|&o| o <= self.cidr.last_offset())
                else {
                    warnings.push(LoadWarning::BadKey { shard, key });
                    continue;
                };
                let held = self.held.values().any(|(o, _)| *o == offset);
                if self.allocations.contains_key(&offset)
                    || held
                    || self.cooling.contains_key(&offset)
                {
                    warnings.push(LoadWarning::Duplicate { shard, key });
                    continue;
                }
                if shard_index(offset) != shard {
                    self.strays.insert(offset, shard);
                }
                if let Some(until) = held_until(&a.container_id) {
                    self.held.insert((a.pod_ref, a.ifname), (offset, until));
                    continue;
                }
                if let Some(until) = cooling_until(&a.container_id) {
                    self.cooling.insert(offset, ((a.pod_ref, a.ifname), until));
                    continue;
                }
                self.owners
                    .insert((a.pod_ref.clone(), a.ifname.clone()), offset);
                self.allocations.insert(offset, a);
            }
        }
        warnings
    }

    /// Every committed allocation, by offset.
    pub fn allocations(&self) -> &BTreeMap<u128, Allocation> {
        &self.allocations
    }

    /// The range configurations decided for so far (NADs sharing the pool
    /// may differ).
    pub fn ranges(&self) -> impl Iterator<Item = &IpRange> + '_ {
        self.configured.iter()
    }

    /// Learns a range configuration of the pool without allocating (a
    /// release names its claim's range): what the status counts against.
    pub fn learn(&mut self, range: &IpRange) {
        if !self.configured.contains(range) {
            self.configured.insert(range.clone());
        }
    }

    /// The offset (pod reference, interface) holds.
    pub fn owned_by(&self, pod_ref: &str, ifname: &str) -> Option<u128> {
        self.owners.get(&owner_key(pod_ref, ifname)).copied()
    }

    /// The shard an allocation at `offset` is written to.
    pub fn shard_of(&self, offset: u128) -> u128 {
        self.strays
            .get(&offset)
            .copied()
            .unwrap_or_else(|| shard_index(offset))
    }

    /// The entries shard `index` holds, keyed as whereabouts keys them:
    /// its allocations, its holds as [`hold_marker`] entries and its
    /// cooldowns as [`cooling_marker`] entries.
    pub fn shard_entries(&self, index: u128) -> BTreeMap<String, Cow<'_, Allocation>> {
        let lo = index.saturating_mul(SHARD_SPAN);
        let hi = lo.saturating_add(SHARD_SPAN);
        let mut entries: BTreeMap<String, Cow<'_, Allocation>> = self
            .allocations
            .range(lo..hi)
            .filter(|(o, _)| self.shard_of(**o) == index)
            .chain(
                self.strays
                    .iter()
                    .filter(|(_, s)| **s == index)
                    .filter_map(|(o, _)| self.allocations.get_key_value(o)),
            )
            .map(|(&o, a)| (allocation_key(o), Cow::Borrowed(a)))
            .collect();
        for ((pod_ref, ifname), (offset, until)) in &self.held {
            if self.shard_of(*offset) == index {
                let marked = Allocation::new(hold_marker(*until), pod_ref.clone(), ifname.clone());
                entries.insert(allocation_key(*offset), Cow::Owned(marked));
            }
        }
        for (offset, ((pod_ref, ifname), until)) in &self.cooling {
            if self.shard_of(*offset) == index {
                let marked =
                    Allocation::new(cooling_marker(*until), pod_ref.clone(), ifname.clone());
                entries.insert(allocation_key(*offset), Cow::Owned(marked));
            }
        }
        entries
    }

    /// Addresses held for a (pod, interface) whose claim went, with their
    /// expiry.
    pub fn holds(&self) -> impl Iterator<Item = (&str, &str, u128, SystemTime)> + '_ {
        self.held
            .iter()
            .map(|((p, i), (o, until))| (&**p, &**i, *o, *until))
    }

    /// Addresses cooling down after a release, with their former owner
    /// (pod reference, interface) and the cooldown's end.
    pub fn cooldowns(&self) -> impl Iterator<Item = (&str, &str, u128, SystemTime)> + '_ {
        self.cooling
            .iter()
            .map(|(o, ((p, i), until))| (&**p, &**i, *o, *until))
    }

    /// Whether `offset` is passed over as an overlapping range's.
    pub fn is_foreign(&self, offset: u128) -> bool {
        self.foreign.contains_key(&offset)
    }

    /// Whether a dynamic request passes `offset` over at `now`: held for a
    /// pod, cooling down, or marked as an overlapping range's (confirmed or
    /// suspected).
    pub fn is_blocked(&self, offset: u128, now: SystemTime) -> bool {
        self.held
            .values()
            .any(|(o, until)| *o == offset && rests(*until, now))
            || self
                .cooling
                .get(&offset)
                .is_some_and(|(_, until)| rests(*until, now))
            || [&self.foreign, &self.suspected]
                .iter()
                .any(|marks| marks.get(&offset).is_some_and(|until| *until > now))
    }

    /// Marks addresses whose reservation an overlapping range holds
    /// (confirmed by a failed reservation): passed over until `until`.
    pub fn mark_foreign(&mut self, offsets: impl IntoIterator<Item = u128>, until: SystemTime) {
        for offset in offsets {
            if offset <= self.cidr.last_offset() {
                self.foreign.insert(offset, until);
                self.apply(Change::Block(offset), None);
            }
        }
    }

    /// Marks addresses the reservation cache says overlapping ranges hold,
    /// unless this pool holds them or `skip` says otherwise: passed over
    /// until `until` while the range has other free addresses. Returns how
    /// many were marked.
    pub fn suspect(
        &mut self,
        offsets: impl IntoIterator<Item = u128>,
        until: SystemTime,
        skip: impl Fn(u128) -> bool,
    ) -> usize {
        let mut marked = 0;
        for offset in offsets {
            if offset <= self.cidr.last_offset()
                && !self.allocations.contains_key(&offset)
                && !self.foreign.contains_key(&offset)
                && !skip(offset)
            {
                self.suspected.insert(offset, until);
                self.apply(Change::Block(offset), None);
                marked += 1;
            }
        }
        marked
    }

    /// An overlapping range released `offset` and removed its reservation:
    /// it may be handed out again.
    pub fn freed(&mut self, offset: u128) {
        if self.foreign.remove(&offset).is_some() | self.suspected.remove(&offset).is_some() {
            self.unblock(offset);
        }
    }

    /// Decides a batch at `now`: releases first (their addresses may serve
    /// this batch's requests), then requests in order.
    pub fn decide(
        &mut self,
        requests: &[&Request],
        releases: &[(&ReleaseBy, ReleaseReason)],
        now: SystemTime,
    ) -> Decision {
        let mut decision = Decision::default();
        // Holds and cooldowns are written into the pool: every one made,
        // taken, given way or ended touches its shard.
        let rests_before = self.rests();
        self.expire(now);
        for (by, reason) in releases {
            if self.ended_rest(by, &rests_before) {
                // Its time is up and the expiry above ended it: its entry
                // goes with the write of its shard (the rests changed).
                decision.releases.push(true);
                continue;
            }
            if let Some(offset) = self.find_rest(by) {
                // A hold or cooldown the collector found ended (or a
                // release of it by its marker): the entry goes, nothing was
                // allocated, nothing cools.
                self.held.retain(|_, (o, _)| *o != offset);
                self.cooling.remove(&offset);
                self.unblock(offset);
                decision.releases.push(true);
                continue;
            }
            let found = self.find(by);
            let Some((offset, allocation)) =
                found.and_then(|o| Some((o, self.allocations.get(&o)?.clone())))
            else {
                decision.releases.push(false);
                decision.unwitnessed = true;
                continue;
            };
            self.apply(Change::Remove(offset), None);
            let owner = (allocation.pod_ref.clone(), allocation.ifname.clone());
            let (hold, cooldown) = (reason.hold(), reason.cooldown());
            if !hold.is_zero() {
                let earlier = self
                    .held
                    .insert(owner, (offset, later(now, hold.max(cooldown))));
                if let Some((earlier, _)) = earlier.filter(|(o, _)| *o != offset) {
                    self.unblock(earlier);
                }
                self.apply(Change::Block(offset), None);
            } else if !cooldown.is_zero() {
                self.cooling.insert(offset, (owner, later(now, cooldown)));
                self.apply(Change::Block(offset), None);
            }
            decision.touched.insert(self.shard_of(offset));
            decision.released.push((offset, allocation));
            decision.releases.push(true);
        }
        let mut granted_again = Vec::new();
        for request in requests {
            let result = self.decide_one(request, now);
            match &result {
                Ok((offset, granted @ (Granted::New | Granted::GaveWay))) => {
                    decision.touched.insert(self.shard_of(*offset));
                    if request.reserve {
                        decision.reserve.push((*offset, request.owner.clone()));
                    }
                    // "Nothing else is free" is about every shard, and the
                    // write carries only this one's version.
                    decision.unwitnessed |= *granted == Granted::GaveWay;
                }
                Ok((offset, Granted::Again)) => granted_again.push(*offset),
                // Refused for what the pool holds: an address another hand
                // freed since the last read would have served.
                Err(
                    AllocError::Exhausted { .. }
                    | AllocError::Taken { .. }
                    | AllocError::OwnerHoldsOther { .. },
                ) => decision.unwitnessed = true,
                Err(_) => {}
            }
            decision.allocs.push(result.map(|(o, _)| o));
        }
        let rests_after = self.rests();
        for offset in rests_before.keys().chain(rests_after.keys()) {
            if rests_before.get(offset) != rests_after.get(offset) {
                decision.touched.insert(self.shard_of(*offset));
            }
        }
        // A shard the batch writes carries its version: the write fails if
        // the entry went meanwhile.
        decision.unwitnessed |= granted_again
            .iter()
            .any(|o| !decision.touched.contains(&self.shard_of(*o)));
        decision
    }

    /// Every hold and cooldown by offset, with its end and kind (a hold
    /// turned into a cooldown at the same offset is a change to write).
    fn rests(&self) -> HashMap<u128, (SystemTime, bool)> {
        self.held
            .values()
            .map(|(o, until)| (*o, (*until, true)))
            .chain(
                self.cooling
                    .iter()
                    .map(|(o, (_, until))| (*o, (*until, false))),
            )
            .collect()
    }

    /// Ends holds and foreign marks whose time is up.
    fn expire(&mut self, now: SystemTime) {
        let expired: Vec<_> = self
            .held
            .iter()
            .filter(|(_, (_, until))| !rests(*until, now))
            .map(|(k, (o, _))| (k.clone(), *o))
            .collect();
        for (key, offset) in expired {
            self.held.remove(&key);
            self.unblock(offset);
        }
        let rechecks: Vec<u128> = self
            .foreign
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(o, _)| *o)
            .collect();
        for offset in rechecks {
            self.foreign.remove(&offset);
            self.unblock(offset);
        }
        let cooled: Vec<u128> = self
            .cooling
            .iter()
            .filter(|(_, (_, until))| !rests(*until, now))
            .map(|(o, _)| *o)
            .collect();
        for offset in cooled {
            self.cooling.remove(&offset);
            self.unblock(offset);
        }
        self.suspected.retain(|_, until| *until > now);
    }

    /// The held or cooling offset an exact release names by its marker.
    fn find_rest(&self, by: &ReleaseBy) -> Option<u128> {
        let ReleaseBy::Exact { ip, container_id } = by else {
            return None;
        };
        let offset = self.cidr.offset_of(*ip)?;
        let named = if held_until(container_id).is_some() {
            self.held
                .values()
                .any(|(o, u)| *o == offset && names_rest(container_id, *u, true))
        } else {
            self.cooling
                .get(&offset)
                .is_some_and(|(_, u)| names_rest(container_id, *u, false))
        };
        named.then_some(offset)
    }

    /// Whether `by` names, by its marker, a hold or cooldown that
    /// `before` had and the ledger no longer has (ended in this decision).
    fn ended_rest(&self, by: &ReleaseBy, before: &HashMap<u128, (SystemTime, bool)>) -> bool {
        let ReleaseBy::Exact { ip, container_id } = by else {
            return false;
        };
        let Some(offset) = self.cidr.offset_of(*ip) else {
            return false;
        };
        let Some(&(until, hold)) = before.get(&offset) else {
            return false;
        };
        names_rest(container_id, until, hold) && self.find_rest(by).is_none()
    }

    fn find(&self, by: &ReleaseBy) -> Option<u128> {
        match by {
            ReleaseBy::Owner {
                pod_ref,
                ifname,
                container_id,
            } => self
                .owners
                .get(&owner_key(pod_ref, ifname))
                .copied()
                .filter(|o| {
                    container_id.as_ref().is_none_or(|c| {
                        self.allocations
                            .get(o)
                            .is_some_and(|a| *a.container_id == **c)
                    })
                }),
            ReleaseBy::Exact { ip, container_id } => self.cidr.offset_of(*ip).filter(|o| {
                self.allocations
                    .get(o)
                    .is_some_and(|a| *a.container_id == **container_id)
            }),
        }
    }

    /// One allocation: its offset and how it was granted.
    fn decide_one(
        &mut self,
        request: &Request,
        now: SystemTime,
    ) -> Result<(u128, Granted), AllocError> {
        let key = (request.owner.pod_ref.clone(), request.owner.ifname.clone());
        // A (pod, interface) coming back within the hold gets its address,
        // unless an overlapping range took it meanwhile (its reservation is
        // another's: the hold only binds this pool).
        if let Some((offset, until)) = self.held.remove(&key) {
            self.unblock(offset);
            let wanted = request.static_ip.and_then(|ip| self.cidr.offset_of(ip));
            if wanted.is_none_or(|w| w == offset)
                && !self.foreign.contains_key(&offset)
                && !self.allocations.contains_key(&offset)
                && request.range.is_usable(offset)
            {
                self.apply(Change::Insert(offset, request.owner.clone()), None);
                return Ok((offset, Granted::New));
            }
            // Not taken back (another address asked for, or one its range
            // does not hand out): the address rests out its time, so it
            // never skips the cooldown a hold stands for.
            if !self.allocations.contains_key(&offset) && !self.cooling.contains_key(&offset) {
                self.cooling.insert(offset, (key.clone(), until));
                self.apply(Change::Block(offset), None);
            }
        }
        // A static request for an address held for another pod name takes
        // it: the hold keeps a StatefulSet pod's address from strangers'
        // dynamic requests, but an address asked for by name belongs to
        // whoever carries it now (a Deployment's fixed IP moving to its
        // next pod), as whereabouts hands it over at once.
        // What a static request set aside, put back if it is refused: a
        // refusal changes nothing.
        let mut set_aside = SetAside::default();
        if let Some(wanted) = request.static_ip.and_then(|ip| self.cidr.offset_of(ip)) {
            // Suspected only from the cache: its reservation decides.
            if !self.foreign.contains_key(&wanted)
                && let Some(until) = self.suspected.remove(&wanted)
            {
                set_aside.suspected = Some((wanted, until));
                self.unblock(wanted);
            }
            let holders: Vec<_> = self
                .held
                .iter()
                .filter(|(_, (o, _))| *o == wanted)
                .map(|(k, _)| k.clone())
                .collect();
            for holder in holders {
                if let Some(hold) = self.held.remove(&holder) {
                    set_aside.held.push((holder, hold));
                }
                self.unblock(wanted);
            }
            // Asked for by name: a cooldown does not keep it either.
            if let Some(cooling) = self.cooling.remove(&wanted) {
                set_aside.cooling = Some((wanted, cooling));
                self.unblock(wanted);
            }
        }
        let assigned = match request.static_ip {
            Some(ip) => {
                let assigned = self
                    .variant(&request.range, now)
                    .allocate_static(ip, request.owner.clone());
                if assigned.is_err() {
                    self.put_back(set_aside);
                }
                assigned
            }
            None => match self.allocate_dynamic(request, now) {
                Err(AllocError::Exhausted { .. }) => {
                    // Out of free addresses: the cooled address whose
                    // cooldown ends first gives way, then the oldest hold
                    // (a hold keeps a pod's identity, a cooldown only
                    // rests the address).
                    let offset = if let Some(offset) = self.first_cooled(&request.range) {
                        self.cooling.remove(&offset);
                        offset
                    } else if let Some((holder, offset)) = self.oldest_hold(&request.range) {
                        self.held.remove(&holder);
                        offset
                    } else {
                        return Err(AllocError::Exhausted {
                            range: request.range.to_string(),
                            allocated: self.allocations.len(),
                        });
                    };
                    self.unblock(offset);
                    self.apply(Change::Insert(offset, request.owner.clone()), None);
                    return Ok((offset, Granted::GaveWay));
                }
                other => other,
            },
        }?;
        if assigned.changed() {
            self.apply(
                Change::Insert(assigned.offset, request.owner.clone()),
                Some(&request.range),
            );
        }
        let granted = if assigned.changed() {
            Granted::New
        } else {
            Granted::Again
        };
        Ok((assigned.offset, granted))
    }

    /// Restores what a refused static request set aside.
    fn put_back(&mut self, set_aside: SetAside) {
        if let Some((offset, until)) = set_aside.suspected {
            self.suspected.insert(offset, until);
            self.apply(Change::Block(offset), None);
        }
        for (holder, (offset, until)) in set_aside.held {
            self.held.insert(holder, (offset, until));
            self.apply(Change::Block(offset), None);
        }
        if let Some((offset, cooling)) = set_aside.cooling {
            self.cooling.insert(offset, cooling);
            self.apply(Change::Block(offset), None);
        }
    }

    /// The lowest free address of the range; when only suspected
    /// addresses are left, those are tried after all (their reservation
    /// decides): a range is exhausted only when it really is.
    fn allocate_dynamic(
        &mut self,
        request: &Request,
        now: SystemTime,
    ) -> Result<Assigned, AllocError> {
        match self
            .variant(&request.range, now)
            .allocate(request.owner.clone())
        {
            Err(AllocError::Exhausted { .. }) if !self.suspected.is_empty() => {
                let suspected: Vec<u128> = self.suspected.drain().map(|(o, _)| o).collect();
                for offset in suspected {
                    if !self.foreign.contains_key(&offset) {
                        self.unblock(offset);
                    }
                }
                self.variant(&request.range, now)
                    .allocate(request.owner.clone())
            }
            other => other,
        }
    }

    /// The cooled address of `range` whose cooldown ends first (the
    /// longest cooled, when the network's cooldowns are alike).
    fn first_cooled(&self, range: &IpRange) -> Option<u128> {
        self.cooling
            .iter()
            .filter(|(o, _)| {
                range.is_usable(**o)
                    && !self.allocations.contains_key(o)
                    && !self.foreign.contains_key(o)
            })
            .min_by_key(|(o, (_, until))| (*until, **o))
            .map(|(o, _)| *o)
    }

    fn oldest_hold(&self, range: &IpRange) -> Option<(Owner, u128)> {
        self.held
            .iter()
            .filter(|(_, (o, _))| {
                range.is_usable(*o)
                    && !self.allocations.contains_key(o)
                    && !self.foreign.contains_key(o)
            })
            .min_by_key(|(_, (_, until))| *until)
            .map(|(k, (o, _))| (k.clone(), *o))
    }

    /// The allocator for `range`, current with `allocations`.
    fn variant(&mut self, range: &IpRange, now: SystemTime) -> &mut Pool {
        self.learn(range);
        let generation = self.generation;
        let current = self
            .variants
            .get(range)
            .is_some_and(|(_, g)| *g == generation);
        if !current {
            // Entries outside this configuration's usable addresses are
            // other NADs' (load issues are expected, not news).
            let (mut pool, _issues) = Pool::from_allocations(
                range.clone(),
                self.allocations.iter().map(|(&o, a)| (o, a.clone())),
            );
            let blocked = self
                .held
                .values()
                .filter(|(_, until)| *until > now)
                .map(|(o, _)| *o)
                .chain(
                    self.cooling
                        .iter()
                        .filter(|(_, (_, until))| *until > now)
                        .map(|(o, _)| *o),
                )
                .chain(
                    self.foreign
                        .iter()
                        .chain(&self.suspected)
                        .filter(|(_, until)| **until > now)
                        .map(|(o, _)| *o),
                );
            for offset in blocked {
                if let Some(ip) = self.cidr.ip_at(offset) {
                    pool.mark_foreign(ip);
                }
            }
            self.variants.insert(range.clone(), (pool, generation));
        }
        match self.variants.get_mut(range) {
            Some((pool, _)) => pool,
            None => unreachable!("variant inserted above"),
        }
    }

    /// Lifts the block on `offset` once nothing blocks it any more: a hold,
    /// a foreign mark and a suspicion share one block in the allocators, so
    /// ending one must not hand out an address another still keeps.
    fn unblock(&mut self, offset: u128) {
        let kept = self.held.values().any(|(o, _)| *o == offset)
            || self.cooling.contains_key(&offset)
            || self.foreign.contains_key(&offset)
            || self.suspected.contains_key(&offset);
        if !kept {
            self.apply(Change::Unblock(offset), None);
        }
    }

    /// Applies `change` to the truth and to every current variant but
    /// `skip` (which applied it already); variants that cannot follow fall
    /// behind and are rebuilt on next use.
    fn apply(&mut self, change: Change, skip: Option<&IpRange>) {
        let previous = self.generation;
        self.generation += 1;
        let ip = self.cidr.ip_at(change.offset());
        match &change {
            Change::Insert(offset, owner) => {
                if let Some(old) = self.allocations.insert(*offset, owner.clone()) {
                    self.owners.remove(&(old.pod_ref, old.ifname));
                }
                self.owners
                    .insert((owner.pod_ref.clone(), owner.ifname.clone()), *offset);
            }
            Change::Remove(offset) => {
                if let Some(old) = self.allocations.remove(offset) {
                    self.owners.remove(&(old.pod_ref, old.ifname));
                }
            }
            Change::Block(_) | Change::Unblock(_) => {}
        }
        for (range, (pool, g)) in &mut self.variants {
            if *g != previous {
                continue;
            }
            let followed = skip == Some(range)
                || ip.is_some_and(|ip| match &change {
                    Change::Insert(_, owner) => pool
                        .allocate_static(ip, owner.clone())
                        .is_ok_and(|a| a.changed()),
                    Change::Remove(offset) => pool.release_offset(*offset).is_some(),
                    Change::Block(_) => pool.mark_foreign(ip),
                    Change::Unblock(_) => pool.unmark_foreign(ip),
                });
            if followed {
                *g = self.generation;
            }
        }
    }
}

/// The shard index of the IPPool object `name` of the pool `base` whose
/// last offset is `last_offset`: 0 for the base object, `k` for a name this
/// layout writes (`<base>-s<k>`, `k` within the range), `None` for names
/// that are not this pool's. Odd names under the pool's prefix (`-s0`,
/// `-s01`, an index past the range: made by hand) get indexes no real
/// shard has, counting down from the top via `odd`: their entries are held
/// like any (as strays: nothing new goes there) until released.
pub fn shard_of_name(base: &str, last_offset: u128, name: &str, odd: &mut u128) -> Option<u128> {
    if name == base {
        return Some(0);
    }
    let prefix = format!("{base}-s");
    let rest = name.strip_prefix(&prefix)?;
    let last_shard = shard_index(last_offset);
    match rest.parse::<u128>() {
        Ok(i) if (1..=last_shard).contains(&i) && shard_name(base, i) == name => Some(i),
        _ => {
            *odd += 1;
            Some(u128::MAX - *odd)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim deleted, held for its pod name for 300 s, no cooldown.
    const CLAIM_DELETED: ReleaseReason = ReleaseReason::ClaimDeleted {
        hold: Duration::from_secs(300),
        cooldown: Duration::ZERO,
    };
    const COLLECTED: ReleaseReason = ReleaseReason::Collected {
        cooldown: Duration::ZERO,
    };

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("test CIDR")
    }

    fn range(s: &str) -> IpRange {
        IpRange::from_cidr(cidr(s)).expect("test range")
    }

    fn pod(name: &str) -> Allocation {
        Allocation::new(format!("c-{name}"), format!("ns/{name}"), "net1")
    }

    fn dynamic(r: &IpRange, name: &str) -> Request {
        Request {
            range: r.clone(),
            owner: pod(name),
            static_ip: None,
            reserve: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    fn deleted(name: &str) -> ReleaseBy {
        ReleaseBy::Owner {
            pod_ref: format!("ns/{name}"),
            ifname: "net1".to_owned(),
            container_id: None,
        }
    }

    fn one(ledger: &mut Ledger, request: &Request, now: SystemTime) -> Result<u128, AllocError> {
        let d = ledger.decide(&[request], &[], now);
        d.allocs.into_iter().next().expect("one answer")
    }

    /// web-0 allocates, then its claim goes: its address is held.
    fn hold_web0(ledger: &mut Ledger, r: &IpRange, now: SystemTime) {
        one(ledger, &dynamic(r, "web-0"), now).expect("allocates");
        assert!(release(ledger, &deleted("web-0"), CLAIM_DELETED, now));
    }

    fn release(
        ledger: &mut Ledger,
        by: &ReleaseBy,
        reason: ReleaseReason,
        now: SystemTime,
    ) -> bool {
        ledger.decide(&[], &[(by, reason)], now).releases[0]
    }

    #[test]
    fn hands_out_the_lowest_free_address_and_repeats_answers() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let now = SystemTime::now();
        let d = l.decide(&[&dynamic(&r, "a"), &dynamic(&r, "b")], &[], now);
        assert_eq!(d.allocs, vec![Ok(1), Ok(2)]);
        assert_eq!(d.touched, BTreeSet::from([0]));
        // The same (pod, interface) again: the same address, nothing to write.
        let d = l.decide(&[&dynamic(&r, "a")], &[], now);
        assert_eq!(d.allocs, vec![Ok(1)]);
        assert!(d.touched.is_empty());
        assert_eq!(l.owned_by("ns/b", "net1"), Some(2));
    }

    #[test]
    fn a_deleted_claims_address_is_held_for_its_pod_name_only() {
        let r = range("198.51.100.0/29"); // 6 usable
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        assert_eq!(one(&mut l, &dynamic(&r, "web-0"), t0), Ok(1));
        assert!(release(&mut l, &deleted("web-0"), CLAIM_DELETED, t0));
        assert_eq!(l.holds().count(), 1);
        // A stranger gets another address while the hold lasts.
        assert_eq!(one(&mut l, &dynamic(&r, "other"), t0), Ok(2));
        // The same pod name gets its address back.
        assert_eq!(one(&mut l, &dynamic(&r, "web-0"), t0), Ok(1));
        assert_eq!(l.holds().count(), 0);
    }

    #[test]
    fn a_held_address_an_overlapping_range_took_is_not_handed_back() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        hold_web0(&mut l, &r, t0);
        // Its reservation went with the release; an overlapping range took
        // .1, and a reservation attempt found it so.
        l.mark_foreign([1], t0 + FOREIGN_RECHECK);
        let back = Request {
            reserve: true,
            ..dynamic(&r, "web-0")
        };
        assert_eq!(one(&mut l, &back, t0), Ok(2), "another address, at once");
        // Nor does a full range hand it out as the oldest hold.
        let mut l = Ledger::new(*r.cidr());
        hold_web0(&mut l, &r, t0);
        l.mark_foreign([1], t0 + FOREIGN_RECHECK);
        for pod in ["a", "b", "c", "d", "e"] {
            one(&mut l, &dynamic(&r, pod), t0).expect("allocates");
        }
        assert!(matches!(
            one(&mut l, &dynamic(&r, "f"), t0),
            Err(AllocError::Exhausted { .. })
        ));
    }

    #[test]
    fn ending_one_mark_keeps_the_others_block() {
        let r = range("198.51.100.0/30"); // .1 and .2
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        hold_web0(&mut l, &r, t0);
        // .1 is held for web-0 and suspected; the suspicion is lifted.
        l.suspect([1], t0 + FOREIGN_RECHECK, |_| false);
        l.freed(1);
        // A stranger still does not get the held .1 while .2 is free.
        assert_eq!(one(&mut l, &dynamic(&r, "x"), t0), Ok(2));
    }

    #[test]
    fn a_collected_address_is_not_held() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        assert_eq!(one(&mut l, &dynamic(&r, "a"), t0), Ok(1));
        let by = ReleaseBy::Exact {
            ip: ip("198.51.100.1"),
            container_id: "c-a".to_owned(),
        };
        assert!(release(&mut l, &by, COLLECTED, t0));
        assert_eq!(l.holds().count(), 0);
        assert_eq!(one(&mut l, &dynamic(&r, "b"), t0), Ok(1));
    }

    #[test]
    fn holds_expire() {
        let r = range("198.51.100.0/29");
        let hold = Duration::from_secs(300);
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        hold_web0(&mut l, &r, t0);
        let later = t0 + hold + Duration::from_secs(1);
        assert_eq!(one(&mut l, &dynamic(&r, "other"), later), Ok(1));
        assert_eq!(l.holds().count(), 0);
    }

    #[test]
    fn the_oldest_hold_gives_way_when_nothing_else_is_free() {
        let r = range("198.51.100.0/30"); // .1 and .2 usable
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "old"), t0).expect("allocates");
        one(&mut l, &dynamic(&r, "young"), t0).expect("allocates");
        release(&mut l, &deleted("old"), CLAIM_DELETED, t0);
        let t1 = t0 + Duration::from_secs(10);
        release(&mut l, &deleted("young"), CLAIM_DELETED, t1);
        assert_eq!(one(&mut l, &dynamic(&r, "stranger"), t1), Ok(1));
        // The younger hold stands; the range is now full for strangers.
        let e = one(&mut l, &dynamic(&r, "another"), t1);
        assert_eq!(e, Ok(2), "the last hold gives way too rather than failing");
        let e = one(&mut l, &dynamic(&r, "third"), t1);
        assert!(matches!(e, Err(AllocError::Exhausted { .. })), "{e:?}");
    }

    #[test]
    fn a_static_request_takes_an_address_held_for_another_name() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        hold_web0(&mut l, &r, t0);
        let fixed = Request {
            static_ip: Some(ip("198.51.100.1")),
            ..dynamic(&r, "next")
        };
        assert_eq!(one(&mut l, &fixed, t0), Ok(1));
        assert_eq!(l.holds().count(), 0);
        // web-0 comes back: its address is gone, it gets another.
        assert_eq!(one(&mut l, &dynamic(&r, "web-0"), t0), Ok(2));
    }

    #[test]
    fn a_static_request_for_a_taken_address_fails() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "a"), t0).expect("allocates");
        let fixed = Request {
            static_ip: Some(ip("198.51.100.1")),
            ..dynamic(&r, "b")
        };
        assert!(one(&mut l, &fixed, t0).is_err());
        assert_eq!(l.owned_by("ns/a", "net1"), Some(1));
    }

    #[test]
    fn answers_no_write_of_the_batch_backs_are_unwitnessed() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let now = SystemTime::now();
        // New addresses and releases that found theirs are written.
        let d = l.decide(&[&dynamic(&r, "a"), &dynamic(&r, "b")], &[], now);
        assert!(!d.unwitnessed);
        let d = l.decide(&[], &[(&deleted("b"), COLLECTED)], now);
        assert_eq!(d.releases, vec![true]);
        assert!(!d.unwitnessed);
        // An address granted again, alone: nothing is written.
        let d = l.decide(&[&dynamic(&r, "a")], &[], now);
        assert_eq!((d.allocs, d.unwitnessed), (vec![Ok(1)], true));
        // Beside a new one in the same shard: the shard's write carries
        // its version, and fails if the entry went meanwhile.
        let d = l.decide(&[&dynamic(&r, "a"), &dynamic(&r, "c")], &[], now);
        assert_eq!(d.allocs, vec![Ok(1), Ok(2)]);
        assert!(!d.unwitnessed);
        // A release that found nothing, beside one that found its entry.
        let d = l.decide(
            &[],
            &[(&deleted("c"), COLLECTED), (&deleted("gone"), COLLECTED)],
            now,
        );
        assert_eq!((d.releases, d.unwitnessed), (vec![true, false], true));
        // Refused for what the pool holds: the address taken, the range full.
        let taken = Request {
            static_ip: Some(ip("198.51.100.1")),
            ..dynamic(&r, "d")
        };
        let d = l.decide(&[&taken], &[], now);
        assert!(matches!(d.allocs[..], [Err(AllocError::Taken { .. })]));
        assert!(d.unwitnessed);
        let rest: Vec<Request> = (0..8).map(|i| dynamic(&r, &format!("p{i}"))).collect();
        let d = l.decide(&rest.iter().collect::<Vec<_>>(), &[], now);
        assert!(matches!(
            d.allocs.last(),
            Some(Err(AllocError::Exhausted { .. }))
        ));
        assert!(d.unwitnessed);
        // Refused for the request itself: nothing the pool holds changes it.
        let outside = Request {
            static_ip: Some(ip("203.0.113.1")),
            ..dynamic(&r, "e")
        };
        let d = l.decide(&[&outside], &[], now);
        assert!(matches!(
            d.allocs[..],
            [Err(AllocError::OutsideRange { .. })]
        ));
        assert!(!d.unwitnessed);
    }

    #[test]
    fn a_hold_given_way_is_unwitnessed_an_ended_rest_released_is_not() {
        let r = range("198.51.100.0/30"); // .1 and .2 usable
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "web-0"), t0).expect("allocates");
        one(&mut l, &dynamic(&r, "b"), t0).expect("allocates");
        assert!(release(&mut l, &deleted("web-0"), CLAIM_DELETED, t0));
        // The range full but for web-0's hold: a stranger takes it, on the
        // word that nothing else is free, which the write of the hold's
        // shard alone does not carry (another shard may have been freed).
        let d = l.decide(&[&dynamic(&r, "stranger")], &[], t0);
        assert_eq!(d.allocs, vec![Ok(1)]);
        assert!(d.unwitnessed);
        // The collector releases a cooldown by its marker after it ended:
        // the decision's expiry ended it, its shard is written, and that
        // is the release (no fresh read for it).
        let cooled = ReleaseReason::Collected {
            cooldown: Duration::from_secs(30),
        };
        assert!(release(&mut l, &deleted("b"), cooled, t0));
        let marker = written(&l, 0)
            .into_iter()
            .find(|(key, _)| key == "2")
            .map(|(_, a)| a.container_id.to_string())
            .expect("b's cooldown written");
        let by = ReleaseBy::Exact {
            ip: ip("198.51.100.2"),
            container_id: marker,
        };
        let after = t0 + Duration::from_secs(31);
        let d = l.decide(&[], &[(&by, COLLECTED)], after);
        assert_eq!(d.releases, vec![true]);
        assert_eq!(d.touched, BTreeSet::from([0]));
        assert!(!d.unwitnessed);
        assert!(!written(&l, 0).iter().any(|(key, _)| key == "2"));
        // The same marker again: nothing of it is left, as the pool may say.
        let d = l.decide(&[], &[(&by, COLLECTED)], after);
        assert_eq!((d.releases, d.unwitnessed), (vec![false], true));
    }

    #[test]
    fn an_address_granted_again_is_unwitnessed_unless_its_own_shard_is_written() {
        // Shards of SHARD_SPAN (128) addresses: .200 is in shard 1.
        let r = range("100.64.0.0/22");
        let mut l = Ledger::new(*r.cidr());
        let now = SystemTime::now();
        let far = Request {
            static_ip: Some(ip("100.64.0.200")),
            ..dynamic(&r, "far")
        };
        assert_eq!(one(&mut l, &far, now), Ok(200));
        assert_eq!(l.shard_of(200), 1);
        // "far" again beside a new address in shard 0: shard 1 unwritten.
        let d = l.decide(&[&far, &dynamic(&r, "near")], &[], now);
        assert_eq!(d.allocs, vec![Ok(200), Ok(1)]);
        assert_eq!(d.touched, BTreeSet::from([0]));
        assert!(d.unwitnessed);
    }

    #[test]
    fn a_release_with_another_container_id_releases_nothing() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "a"), t0).expect("allocates");
        let stale = ReleaseBy::Owner {
            pod_ref: "ns/a".to_owned(),
            ifname: "net1".to_owned(),
            container_id: Some("an-earlier-sandbox".to_owned()),
        };
        assert!(!release(&mut l, &stale, CLAIM_DELETED, t0));
        let exact = ReleaseBy::Exact {
            ip: ip("198.51.100.1"),
            container_id: "another".to_owned(),
        };
        assert!(!release(&mut l, &exact, COLLECTED, t0));
        assert_eq!(l.owned_by("ns/a", "net1"), Some(1));
    }

    #[test]
    fn foreign_addresses_are_passed_over_until_freed_or_rechecked() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        l.mark_foreign([1, 2], t0 + FOREIGN_RECHECK);
        let reserving = Request {
            reserve: true,
            ..dynamic(&r, "a")
        };
        let d = l.decide(&[&reserving], &[], t0);
        assert_eq!(d.allocs, vec![Ok(3)]);
        assert_eq!(d.reserve, vec![(3, pod("a"))]);
        l.freed(1);
        assert_eq!(one(&mut l, &dynamic(&r, "b"), t0), Ok(1));
        // .2 comes back after the recheck.
        let later = t0 + FOREIGN_RECHECK;
        assert_eq!(one(&mut l, &dynamic(&r, "c"), later), Ok(2));
    }

    #[test]
    fn suspected_addresses_are_tried_when_nothing_else_is_free() {
        let r = range("198.51.100.0/30"); // .1 and .2
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        let until = t0 + FOREIGN_RECHECK;
        assert_eq!(
            l.suspect([1, 2], until, |o| o == 2),
            1,
            "skip says 2 is ours"
        );
        assert_eq!(one(&mut l, &dynamic(&r, "a"), t0), Ok(2));
        // Only the suspected .1 is left: tried after all.
        assert_eq!(one(&mut l, &dynamic(&r, "b"), t0), Ok(1));
        // Confirmed foreign addresses are not.
        let mut l = Ledger::new(*r.cidr());
        l.mark_foreign([1, 2], until);
        assert!(matches!(
            one(&mut l, &dynamic(&r, "a"), t0),
            Err(AllocError::Exhausted { .. })
        ));
    }

    #[test]
    fn a_static_request_unblocks_a_suspected_address() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        l.suspect([3], t0 + FOREIGN_RECHECK, |_| false);
        let fixed = Request {
            static_ip: Some(ip("198.51.100.3")),
            reserve: true,
            ..dynamic(&r, "a")
        };
        let d = l.decide(&[&fixed], &[], t0);
        assert_eq!(d.allocs, vec![Ok(3)]);
        assert_eq!(d.reserve.len(), 1, "its reservation decides");
    }

    #[test]
    fn ranges_sharing_a_pool_follow_each_other() {
        // Two NADs on one CIDR, one starting at .10.
        let whole = range("198.51.100.0/24");
        let (late, _) = IpRange::parse(&crate::range::RangeFields {
            path: "ipam",
            range: "198.51.100.0/24",
            range_start: Some("198.51.100.10"),
            range_end: None,
            exclude: &[],
        })
        .expect("range with a start");
        let mut l = Ledger::new(*whole.cidr());
        let t0 = SystemTime::now();
        assert_eq!(one(&mut l, &dynamic(&late, "a"), t0), Ok(10));
        assert_eq!(one(&mut l, &dynamic(&whole, "b"), t0), Ok(1));
        let fixed = Request {
            static_ip: Some(ip("198.51.100.11")),
            ..dynamic(&whole, "c")
        };
        assert_eq!(one(&mut l, &fixed, t0), Ok(11));
        // The late range saw .11 go: its next is .12.
        assert_eq!(one(&mut l, &dynamic(&late, "d"), t0), Ok(12));
        assert!(release(&mut l, &deleted("a"), ReleaseReason::Manual, t0));
        assert_eq!(one(&mut l, &dynamic(&late, "e"), t0), Ok(10));
    }

    #[test]
    fn shards_split_a_large_range_and_strays_stay_where_they_were_found() {
        let r = range("100.64.0.0/16");
        let mut l = Ledger::new(*r.cidr());
        // An adopted whereabouts pool: everything in one object (shard 0),
        // including offset 300 (block 2), plus a bad key and a duplicate.
        let warnings = l.load([
            (
                0u128,
                vec![
                    ("1".to_owned(), pod("a")),
                    ("300".to_owned(), pod("b")),
                    ("nonsense".to_owned(), pod("c")),
                ],
            ),
            (2u128, vec![("300".to_owned(), pod("d"))]),
        ]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(
            l.shard_of(300),
            0,
            "a stray stays in the shard it was found in"
        );
        assert_eq!(l.shard_of(301), 2);
        assert_eq!(l.shard_entries(0).keys().collect::<Vec<_>>(), ["1", "300"]);
        assert!(l.shard_entries(2).is_empty());
        // New allocations go to their block's shard.
        let fixed = Request {
            static_ip: Some(ip("100.64.1.45")), // offset 301
            ..dynamic(&r, "e")
        };
        let d = l.decide(&[&fixed], &[], SystemTime::now());
        assert_eq!(d.allocs, vec![Ok(301)]);
        assert_eq!(d.touched, BTreeSet::from([2]));
        // Releasing the stray touches the shard that holds it.
        let d = l.decide(
            &[],
            &[(&deleted("b"), ReleaseReason::Manual)],
            SystemTime::now(),
        );
        assert_eq!(d.touched, BTreeSet::from([0]));
    }

    #[test]
    fn shard_names_map_to_indexes() {
        let last = 65_535u128; // a /16: shards 0..=511
        let mut odd = 0;
        assert_eq!(shard_of_name("p", last, "p", &mut odd), Some(0));
        assert_eq!(shard_of_name("p", last, "p-s7", &mut odd), Some(7));
        assert_eq!(shard_of_name("p", last, "other", &mut odd), None);
        assert_eq!(odd, 0);
        for name in ["p-s0", "p-s07", "p-s512", "p-sx"] {
            let i = shard_of_name("p", last, name, &mut odd).expect("held as odd");
            assert!(i > last, "{name}: {i}");
        }
        assert_eq!(odd, 4);
    }

    #[test]
    fn marks_survive_a_reload_and_holds_come_from_the_pool() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        hold_web0(&mut l, &r, t0);
        l.mark_foreign([2], t0 + FOREIGN_RECHECK);
        l.load([(0u128, written(&l, 0))]);
        assert_eq!(one(&mut l, &dynamic(&r, "x"), t0), Ok(3));
        assert_eq!(one(&mut l, &dynamic(&r, "web-0"), t0), Ok(1));
        // A pool without the hold entry has no hold.
        let mut l = Ledger::new(*r.cidr());
        hold_web0(&mut l, &r, t0);
        l.load([(0u128, Vec::<(String, Allocation)>::new())]);
        assert_eq!(l.holds().count(), 0);
    }

    /// What shard `index` of `l` is written as.
    fn written(l: &Ledger, index: u128) -> Vec<(String, Allocation)> {
        l.shard_entries(index)
            .into_iter()
            .map(|(k, a)| (k, a.into_owned()))
            .collect()
    }

    #[test]
    fn a_hold_is_written_into_the_pool_and_a_new_leader_keeps_it() {
        let r = range("198.51.100.0/29");
        let hold = Duration::from_secs(300);
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "web-0"), t0).expect("allocates");
        let d = l.decide(&[], &[(&deleted("web-0"), CLAIM_DELETED)], t0);
        assert_eq!(d.touched, BTreeSet::from([0]));
        let entries = written(&l, 0);
        assert_eq!(entries.len(), 1, "the held address stays in the pool");
        let (key, entry) = &entries[0];
        assert_eq!(key, "1");
        assert_eq!(&*entry.pod_ref, "ns/web-0");
        assert!(held_until(&entry.container_id).is_some_and(|u| u >= t0 + hold));
        assert!(!entry.container_id.starts_with("c-"), "not a container ID");
        // Another replica loads the pool after a leader change.
        let mut next = Ledger::new(*r.cidr());
        assert!(next.load([(0u128, entries)]).is_empty());
        assert_eq!(
            next.owned_by("ns/web-0", "net1"),
            None,
            "held, not allocated"
        );
        assert_eq!(one(&mut next, &dynamic(&r, "stranger"), t0), Ok(2));
        let d = next.decide(&[&dynamic(&r, "web-0")], &[], t0);
        assert_eq!(d.allocs, vec![Ok(1)]);
        assert_eq!(d.touched, BTreeSet::from([0]));
        assert_eq!(&*written(&next, 0)[0].1.container_id, "c-web-0");
    }

    #[test]
    fn an_ended_hold_leaves_the_pool_with_the_next_write_or_the_collector() {
        let r = range("198.51.100.0/29");
        let hold = Duration::from_secs(300);
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        hold_web0(&mut l, &r, t0);
        let marker = written(&l, 0)[0].1.container_id.clone();
        // The next batch after the hold ends rewrites the shard without it.
        let later = t0 + hold + Duration::from_secs(1);
        let d = l.decide(&[], &[], later);
        assert_eq!(d.touched, BTreeSet::from([0]));
        assert!(written(&l, 0).is_empty());
        // Or the collector releases it by its marker.
        let mut l = Ledger::new(*r.cidr());
        hold_web0(&mut l, &r, t0);
        let by = ReleaseBy::Exact {
            ip: ip("198.51.100.1"),
            container_id: marker.to_string(),
        };
        let d = l.decide(&[], &[(&by, COLLECTED)], t0);
        assert_eq!(d.releases, vec![true]);
        assert_eq!(d.touched, BTreeSet::from([0]));
        assert!(written(&l, 0).is_empty());
    }

    #[test]
    fn hold_markers_read_back_and_are_never_container_ids() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(held_until(&hold_marker(t)), Some(t));
        assert_eq!(held_until("0123456789abcdef"), None);
        // A marker whose expiry does not read has ended: it is no
        // allocation of its pod, and the collector removes it.
        assert_eq!(
            held_until("hereabouts.dev/held-until=soon"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            held_until("hereabouts.dev/held-until=99999999999999999999999"),
            Some(UNIX_EPOCH)
        );
    }

    // === Cooldowns

    const COOLDOWN: Duration = Duration::from_secs(5);

    /// A claim deleted with no hold (not a StatefulSet pod, or `hold: off`)
    /// and a 5 s cooldown.
    const DELETED_COOLING: ReleaseReason = ReleaseReason::ClaimDeleted {
        hold: Duration::ZERO,
        cooldown: COOLDOWN,
    };

    fn cooled(l: &Ledger) -> Vec<(String, u128)> {
        let mut c: Vec<_> = l
            .cooldowns()
            .map(|(p, _, o, _)| (p.to_owned(), o))
            .collect();
        c.sort();
        c
    }

    #[test]
    fn a_released_address_rests_before_anyone_gets_it_again() {
        let r = range("198.51.100.0/29"); // .1-.6
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        assert_eq!(one(&mut l, &dynamic(&r, "a"), t0), Ok(1));
        let d = l.decide(&[], &[(&deleted("a"), DELETED_COOLING)], t0);
        assert_eq!(d.releases, vec![true]);
        assert_eq!(d.touched, BTreeSet::from([0]), "the cooldown is written");
        assert_eq!(d.released.len(), 1, "its reservation goes");
        assert_eq!(cooled(&l), [("ns/a".to_owned(), 1)]);
        assert_eq!(l.holds().count(), 0, "no hold without a hold period");
        // Another pod gets the next address, and so does `a` itself (a
        // cooldown rests the address; only a hold gives it back by name).
        assert_eq!(one(&mut l, &dynamic(&r, "b"), t0), Ok(2));
        assert_eq!(one(&mut l, &dynamic(&r, "a"), t0), Ok(3));
        assert!(l.is_blocked(1, t0));
        // Once the cooldown ends the lowest free address is .1 again, and
        // the entry leaves the pool with that write.
        let after = t0 + COOLDOWN + Duration::from_secs(1);
        assert!(!l.is_blocked(1, after));
        let d = l.decide(&[&dynamic(&r, "c")], &[], after);
        assert_eq!(d.allocs, vec![Ok(1)]);
        assert!(cooled(&l).is_empty());
        assert_eq!(written(&l, 0).len(), 3);
    }

    #[test]
    fn a_cooldown_is_written_into_the_pool_and_a_new_leader_keeps_it() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "a"), t0).expect("allocates");
        l.decide(&[], &[(&deleted("a"), DELETED_COOLING)], t0);
        let entries = written(&l, 0);
        assert_eq!(entries.len(), 1);
        let (key, entry) = &entries[0];
        assert_eq!(key, "1");
        assert_eq!(&*entry.pod_ref, "ns/a");
        let until = cooling_until(&entry.container_id).expect("a cooling marker");
        assert!(until >= t0 + COOLDOWN && until <= t0 + COOLDOWN + Duration::from_secs(1));
        assert_eq!(held_until(&entry.container_id), None, "not a hold");
        assert_eq!(resting_until(&entry.container_id), Some(until));
        // Another replica loads the pool after a leader change.
        let mut next = Ledger::new(*r.cidr());
        assert!(next.load([(0u128, entries)]).is_empty());
        assert!(next.allocations().is_empty(), "cooling, not allocated");
        assert_eq!(cooled(&next), [("ns/a".to_owned(), 1)]);
        assert_eq!(one(&mut next, &dynamic(&r, "b"), t0), Ok(2));
        // The collector removes an ended cooldown by its marker, and that
        // release cools nothing again.
        let by = ReleaseBy::Exact {
            ip: ip("198.51.100.1"),
            container_id: cooling_marker(until),
        };
        let again = ReleaseReason::Collected { cooldown: COOLDOWN };
        let d = next.decide(&[], &[(&by, again)], t0);
        assert_eq!(d.releases, vec![true]);
        assert_eq!(d.touched, BTreeSet::from([0]));
        assert!(d.released.is_empty(), "nothing was allocated");
        assert!(cooled(&next).is_empty());
        assert_eq!(one(&mut next, &dynamic(&r, "c"), t0), Ok(1));
    }

    #[test]
    fn which_releases_cool_down() {
        let r = range("198.51.100.0/29");
        let t0 = SystemTime::now();
        let collected = ReleaseBy::Exact {
            ip: ip("198.51.100.1"),
            container_id: "c-a".to_owned(),
        };
        for (by, reason, cools) in [
            (
                &collected,
                ReleaseReason::Collected { cooldown: COOLDOWN },
                true,
            ),
            (
                &deleted("a"),
                ReleaseReason::IpamClaimDeleted { cooldown: COOLDOWN },
                true,
            ),
            (&deleted("a"), DELETED_COOLING, true),
            // Never on a pod: the other ranges of its claim failed.
            (&deleted("a"), ReleaseReason::Manual, false),
            // A network with its cooldown off.
            (
                &deleted("a"),
                ReleaseReason::ClaimDeleted {
                    hold: Duration::ZERO,
                    cooldown: Duration::ZERO,
                },
                false,
            ),
        ] {
            let mut l = Ledger::new(*r.cidr());
            one(&mut l, &dynamic(&r, "a"), t0).expect("allocates");
            assert!(release(&mut l, by, reason, t0), "{reason:?}");
            assert_eq!(l.cooldowns().count(), usize::from(cools), "{reason:?}");
            let next = if cools { 2 } else { 1 };
            assert_eq!(one(&mut l, &dynamic(&r, "b"), t0), Ok(next), "{reason:?}");
        }
    }

    #[test]
    fn a_hold_lasts_at_least_the_cooldown() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "web-0"), t0).expect("allocates");
        let short_hold = ReleaseReason::ClaimDeleted {
            hold: Duration::from_secs(2),
            cooldown: Duration::from_secs(30),
        };
        assert!(release(&mut l, &deleted("web-0"), short_hold, t0));
        assert_eq!(l.cooldowns().count(), 0, "held, not cooling");
        let (_, _, offset, until) = l.holds().next().expect("a hold");
        assert_eq!(offset, 1);
        assert!(until >= t0 + Duration::from_secs(30));
        // After the hold's own 2 s a stranger still does not get it.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(one(&mut l, &dynamic(&r, "x"), t1), Ok(2));
        // web-0 does.
        assert_eq!(one(&mut l, &dynamic(&r, "web-0"), t1), Ok(1));
    }

    #[test]
    fn a_full_range_hands_out_the_cooled_address_that_ends_first_before_any_hold() {
        let r = range("198.51.100.0/29"); // .1-.6
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        for pod in ["a", "b", "c", "d", "e", "web-0"] {
            one(&mut l, &dynamic(&r, pod), t0).expect("allocates");
        }
        // web-0 (.6) is held; c (.3) cools first, a (.1) later, e (.5)
        // last (a longer cooldown of another network sharing the pool).
        release(&mut l, &deleted("web-0"), CLAIM_DELETED, t0);
        release(&mut l, &deleted("c"), DELETED_COOLING, t0);
        let t1 = t0 + Duration::from_secs(1);
        release(&mut l, &deleted("a"), DELETED_COOLING, t1);
        let longer = ReleaseReason::ClaimDeleted {
            hold: Duration::ZERO,
            cooldown: Duration::from_secs(60),
        };
        release(&mut l, &deleted("e"), longer, t0);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(one(&mut l, &dynamic(&r, "x"), t2), Ok(3), "cooled first");
        assert_eq!(one(&mut l, &dynamic(&r, "y"), t2), Ok(1));
        assert_eq!(one(&mut l, &dynamic(&r, "z"), t2), Ok(5));
        assert_eq!(l.holds().count(), 1, "the hold gives way last");
        assert_eq!(one(&mut l, &dynamic(&r, "w"), t2), Ok(6));
        assert!(matches!(
            one(&mut l, &dynamic(&r, "v"), t2),
            Err(AllocError::Exhausted { .. })
        ));
    }

    #[test]
    fn a_static_request_takes_a_cooled_address_at_once() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "a"), t0).expect("allocates");
        release(&mut l, &deleted("a"), DELETED_COOLING, t0);
        let fixed = Request {
            static_ip: Some(ip("198.51.100.1")),
            reserve: true,
            ..dynamic(&r, "b")
        };
        let d = l.decide(&[&fixed], &[], t0);
        assert_eq!(d.allocs, vec![Ok(1)]);
        assert_eq!(d.reserve.len(), 1);
        assert!(l.cooldowns().next().is_none());
        assert_eq!(written(&l, 0)[0].1, pod("b"));
    }

    #[test]
    fn a_cooled_address_an_overlapping_range_took_is_not_handed_out() {
        let r = range("198.51.100.0/30"); // .1 and .2
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "a"), t0).expect("allocates");
        one(&mut l, &dynamic(&r, "b"), t0).expect("allocates");
        release(&mut l, &deleted("a"), DELETED_COOLING, t0);
        // Its reservation went with the release; an overlapping range of
        // the network took .1 meanwhile.
        l.mark_foreign([1], t0 + FOREIGN_RECHECK);
        assert!(matches!(
            one(&mut l, &dynamic(&r, "c"), t0),
            Err(AllocError::Exhausted { .. })
        ));
        // Freed there: the cooldown still rests it until it ends.
        l.freed(1);
        assert!(l.is_blocked(1, t0));
        assert!(!l.is_blocked(1, t0 + COOLDOWN));
    }

    #[test]
    fn cooldowns_go_to_their_shard_and_strays_stay_put() {
        let r = range("100.64.0.0/16");
        let mut l = Ledger::new(*r.cidr());
        let t0 = SystemTime::now();
        // An adopted whereabouts pool holding offset 300 in shard 0.
        l.load([(0u128, vec![("300".to_owned(), pod("stray"))])]);
        let fixed = Request {
            static_ip: Some(ip("100.64.1.45")), // offset 301, shard 2
            ..dynamic(&r, "b")
        };
        one(&mut l, &fixed, t0).expect("allocates");
        let d = l.decide(
            &[],
            &[
                (&deleted("stray"), DELETED_COOLING),
                (&deleted("b"), DELETED_COOLING),
            ],
            t0,
        );
        assert_eq!(d.touched, BTreeSet::from([0, 2]));
        assert_eq!(written(&l, 0)[0].0, "300");
        assert_eq!(written(&l, 2)[0].0, "301");
        assert!(cooling_until(&written(&l, 2)[0].1.container_id).is_some());
        // Reloaded from both shards: both cool on.
        let shards = vec![(0u128, written(&l, 0)), (2u128, written(&l, 2))];
        let mut next = Ledger::new(*r.cidr());
        assert!(next.load(shards).is_empty());
        assert_eq!(
            cooled(&next),
            [("ns/b".to_owned(), 301), ("ns/stray".to_owned(), 300)]
        );
        assert_eq!(next.shard_of(300), 0);
    }

    #[test]
    fn cooling_markers_read_back_and_are_never_container_ids_or_holds() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(cooling_until(&cooling_marker(t)), Some(t));
        assert_eq!(held_until(&cooling_marker(t)), None);
        assert_eq!(cooling_until(&hold_marker(t)), None);
        assert_eq!(resting_until(&hold_marker(t)), Some(t));
        assert_eq!(resting_until("0123456789abcdef"), None);
        assert_eq!(
            cooling_until("hereabouts.dev/cooling-until=-1"),
            Some(UNIX_EPOCH)
        );
    }
}
