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
//! - foreign marks: addresses whose reservation an overlapping range holds,
//!   passed over until a recheck or until their release is heard; and
//!   suspected ones (the reservation cache says so, never confirmed), passed
//!   over only while something else is free;
//! - the shard layout: offsets `[k * SHARD_SPAN, (k+1) * SHARD_SPAN)` live in
//!   shard `k`, except strays (an adopted whereabouts pool holding offsets
//!   beyond its block), which stay where they were found until reloaded.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::allocator::{AllocError, Allocation, Assigned, Pool, allocation_key};
use crate::cidr::Cidr;
use crate::naming::{SHARD_SPAN, shard_index, shard_name};
use crate::range::IpRange;

/// How long an address found reserved by an overlapping range is passed
/// over before its reservation is tried again.
pub const FOREIGN_RECHECK: Duration = Duration::from_secs(60);

/// The longest hold the ledger keeps.
const MAX_HOLD: Duration = Duration::from_secs(366 * 24 * 3600);

/// The container ID a pool entry carries while its address is held: the
/// marker and the expiry in seconds since the Unix epoch. Container IDs are
/// hex; this cannot be one.
const HOLD_MARKER: &str = "hereabouts.dev/held-until=";

/// The container ID of a hold that ends at `until`.
pub fn hold_marker(until: SystemTime) -> String {
    let secs = until
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    format!("{HOLD_MARKER}{secs}")
}

/// When the hold a pool entry's container ID marks ends; `None` when the
/// entry is an allocation.
pub fn held_until(container_id: &str) -> Option<SystemTime> {
    let secs: u64 = container_id.strip_prefix(HOLD_MARKER)?.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
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

/// Why the release happens; a claim deletion holds the address for the
/// same pod name a while (StatefulSet pods come back under the same name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseReason {
    ClaimDeleted,
    Collected,
    Manual,
}

impl ReleaseReason {
    pub fn metric_label(self) -> &'static str {
        match self {
            ReleaseReason::ClaimDeleted => "claim_deleted",
            ReleaseReason::Collected => "garbage_collected",
            ReleaseReason::Manual => "manual",
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

type Owner = (String, String);

/// The ledger of one pool (all its shards).
#[derive(Debug)]
pub struct Ledger {
    cidr: Cidr,
    hold: Duration,
    /// The truth: every committed allocation, by offset...
    allocations: BTreeMap<u128, Allocation>,
    /// ...and by (pod reference, interface).
    owners: HashMap<Owner, u128>,
    /// Offsets found in a shard other than their block's, with that shard.
    strays: HashMap<u128, u128>,
    variants: HashMap<IpRange, (Pool, u64)>,
    generation: u64,
    held: HashMap<Owner, (u128, SystemTime)>,
    foreign: HashMap<u128, SystemTime>,
    suspected: HashMap<u128, SystemTime>,
}

impl Ledger {
    /// An empty ledger for `cidr`; a claim deletion holds its address for
    /// `hold` (zero: no holds).
    pub fn new(cidr: Cidr, hold: Duration) -> Self {
        Ledger {
            cidr,
            // Bounded so that `now + hold` cannot overflow whatever the
            // caller passes (the controller's flag allows a day).
            hold: hold.min(MAX_HOLD),
            allocations: BTreeMap::new(),
            owners: HashMap::new(),
            strays: HashMap::new(),
            variants: HashMap::new(),
            generation: 0,
            held: HashMap::new(),
            foreign: HashMap::new(),
            suspected: HashMap::new(),
        }
    }

    pub fn cidr(&self) -> &Cidr {
        &self.cidr
    }

    /// Replaces the truth with what the pool's objects hold: `shards` are
    /// (shard index, allocation entries keyed as whereabouts keys them).
    /// Holds and foreign marks survive a reload (they are this replica's
    /// knowledge, not the objects').
    pub fn load<I, E>(&mut self, shards: I) -> Vec<LoadWarning>
    where
        I: IntoIterator<Item = (u128, E)>,
        E: IntoIterator<Item = (String, Allocation)>,
    {
        self.allocations.clear();
        self.owners.clear();
        self.strays.clear();
        self.held.clear();
        self.variants.clear();
        self.generation += 1;
        let mut warnings = Vec::new();
        for (shard, entries) in shards {
            for (key, a) in entries {
                let Some(offset) =
                    crate::parse_allocation_key(&key).filter(|&o| o <= self.cidr.last_offset())
                else {
                    warnings.push(LoadWarning::BadKey { shard, key });
                    continue;
                };
                let held = self.held.values().any(|(o, _)| *o == offset);
                if self.allocations.contains_key(&offset) || held {
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
        self.variants.keys()
    }

    /// The offset (pod reference, interface) holds.
    pub fn owned_by(&self, pod_ref: &str, ifname: &str) -> Option<u128> {
        self.owners
            .get(&(pod_ref.to_owned(), ifname.to_owned()))
            .copied()
    }

    /// The shard an allocation at `offset` is written to.
    pub fn shard_of(&self, offset: u128) -> u128 {
        self.strays
            .get(&offset)
            .copied()
            .unwrap_or_else(|| shard_index(offset))
    }

    /// The entries shard `index` holds, keyed as whereabouts keys them:
    /// its allocations, and its holds as [`hold_marker`] entries.
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
        entries
    }

    /// Addresses held for a (pod, interface) whose claim went, with their
    /// expiry.
    pub fn holds(&self) -> impl Iterator<Item = (&str, &str, u128, SystemTime)> + '_ {
        self.held
            .iter()
            .map(|((p, i), (o, until))| (p.as_str(), i.as_str(), *o, *until))
    }

    /// Whether `offset` is passed over as an overlapping range's.
    pub fn is_foreign(&self, offset: u128) -> bool {
        self.foreign.contains_key(&offset)
    }

    /// Whether a dynamic request passes `offset` over at `now`: held for a
    /// pod, or marked as an overlapping range's (confirmed or suspected).
    pub fn is_blocked(&self, offset: u128, now: SystemTime) -> bool {
        self.held
            .values()
            .any(|(o, until)| *o == offset && *until > now)
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
        // Holds are written into the pool: every hold made, taken, given
        // way or ended touches its shard.
        let holds_before: HashMap<u128, SystemTime> = self.held.values().copied().collect();
        self.expire(now);
        for (by, reason) in releases {
            if let Some(offset) = self.find_hold(by) {
                // A hold the collector found expired (or a manual release
                // of it): the entry goes, nothing was allocated.
                self.held.retain(|_, (o, _)| *o != offset);
                self.unblock(offset);
                decision.releases.push(true);
                continue;
            }
            let found = self.find(by);
            let Some((offset, allocation)) =
                found.and_then(|o| Some((o, self.allocations.get(&o)?.clone())))
            else {
                decision.releases.push(false);
                continue;
            };
            self.apply(Change::Remove(offset), None);
            if *reason == ReleaseReason::ClaimDeleted && !self.hold.is_zero() {
                let earlier = self.held.insert(
                    (allocation.pod_ref.clone(), allocation.ifname.clone()),
                    (offset, now + self.hold),
                );
                if let Some((earlier, _)) = earlier.filter(|(o, _)| *o != offset) {
                    self.unblock(earlier);
                }
                self.apply(Change::Block(offset), None);
            }
            decision.touched.insert(self.shard_of(offset));
            decision.released.push((offset, allocation));
            decision.releases.push(true);
        }
        for request in requests {
            let result = self.decide_one(request, now);
            if let Ok((offset, true)) = &result {
                decision.touched.insert(self.shard_of(*offset));
                if request.reserve {
                    decision.reserve.push((*offset, request.owner.clone()));
                }
            }
            decision.allocs.push(result.map(|(o, _)| o));
        }
        let holds_after: HashMap<u128, SystemTime> = self.held.values().copied().collect();
        for offset in holds_before.keys().chain(holds_after.keys()) {
            if holds_before.get(offset) != holds_after.get(offset) {
                decision.touched.insert(self.shard_of(*offset));
            }
        }
        decision
    }

    /// Ends holds and foreign marks whose time is up.
    fn expire(&mut self, now: SystemTime) {
        let expired: Vec<_> = self
            .held
            .iter()
            .filter(|(_, (_, until))| *until <= now)
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
        self.suspected.retain(|_, until| *until > now);
    }

    /// The held offset an exact release names by its hold marker.
    fn find_hold(&self, by: &ReleaseBy) -> Option<u128> {
        let ReleaseBy::Exact { ip, container_id } = by else {
            return None;
        };
        let until = held_until(container_id)?;
        let offset = self.cidr.offset_of(*ip)?;
        self.held
            .values()
            .any(|(o, u)| *o == offset && hold_marker(*u) == hold_marker(until))
            .then_some(offset)
    }

    fn find(&self, by: &ReleaseBy) -> Option<u128> {
        match by {
            ReleaseBy::Owner {
                pod_ref,
                ifname,
                container_id,
            } => self
                .owners
                .get(&(pod_ref.clone(), ifname.clone()))
                .copied()
                .filter(|o| {
                    container_id.as_ref().is_none_or(|c| {
                        self.allocations
                            .get(o)
                            .is_some_and(|a| &a.container_id == c)
                    })
                }),
            ReleaseBy::Exact { ip, container_id } => self.cidr.offset_of(*ip).filter(|o| {
                self.allocations
                    .get(o)
                    .is_some_and(|a| &a.container_id == container_id)
            }),
        }
    }

    /// One allocation: `(offset, whether the pool changed)`.
    fn decide_one(
        &mut self,
        request: &Request,
        now: SystemTime,
    ) -> Result<(u128, bool), AllocError> {
        let key = (request.owner.pod_ref.clone(), request.owner.ifname.clone());
        // A (pod, interface) coming back within the hold gets its address,
        // unless an overlapping range took it meanwhile (its reservation is
        // another's: the hold only binds this pool).
        if let Some((offset, _)) = self.held.remove(&key) {
            self.unblock(offset);
            let wanted = request.static_ip.and_then(|ip| self.cidr.offset_of(ip));
            if wanted.is_none_or(|w| w == offset)
                && !self.foreign.contains_key(&offset)
                && !self.allocations.contains_key(&offset)
                && request.range.is_usable(offset)
            {
                self.apply(Change::Insert(offset, request.owner.clone()), None);
                return Ok((offset, true));
            }
        }
        // A static request for an address held for another pod name takes
        // it: the hold keeps a StatefulSet pod's address from strangers'
        // dynamic requests, but an address asked for by name belongs to
        // whoever carries it now (a Deployment's fixed IP moving to its
        // next pod), as whereabouts hands it over at once.
        if let Some(wanted) = request.static_ip.and_then(|ip| self.cidr.offset_of(ip)) {
            // Suspected only from the cache: its reservation decides.
            if self.suspected.remove(&wanted).is_some() && !self.foreign.contains_key(&wanted) {
                self.unblock(wanted);
            }
            let holders: Vec<_> = self
                .held
                .iter()
                .filter(|(_, (o, _))| *o == wanted)
                .map(|(k, _)| k.clone())
                .collect();
            for holder in holders {
                self.held.remove(&holder);
                self.unblock(wanted);
            }
        }
        let assigned = match request.static_ip {
            Some(ip) => self
                .variant(&request.range, now)
                .allocate_static(ip, request.owner.clone()),
            None => match self.allocate_dynamic(request, now) {
                Err(AllocError::Exhausted { .. }) => match self.oldest_hold(&request.range) {
                    // Out of free addresses: the oldest hold gives way.
                    Some((holder, offset)) => {
                        self.held.remove(&holder);
                        self.unblock(offset);
                        self.apply(Change::Insert(offset, request.owner.clone()), None);
                        return Ok((offset, true));
                    }
                    None => Err(AllocError::Exhausted {
                        range: request.range.to_string(),
                        allocated: self.allocations.len(),
                    }),
                },
                other => other,
            },
        }?;
        if assigned.changed() {
            self.apply(
                Change::Insert(assigned.offset, request.owner.clone()),
                Some(&request.range),
            );
        }
        Ok((assigned.offset, assigned.changed()))
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
        assert!(release(
            ledger,
            &deleted("web-0"),
            ReleaseReason::ClaimDeleted,
            now
        ));
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
        let mut l = Ledger::new(*r.cidr(), Duration::ZERO);
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
        let hold = Duration::from_secs(300);
        let mut l = Ledger::new(*r.cidr(), hold);
        let t0 = SystemTime::now();
        assert_eq!(one(&mut l, &dynamic(&r, "web-0"), t0), Ok(1));
        assert!(release(
            &mut l,
            &deleted("web-0"),
            ReleaseReason::ClaimDeleted,
            t0
        ));
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
        let mut l = Ledger::new(*r.cidr(), Duration::from_secs(300));
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
        let mut l = Ledger::new(*r.cidr(), Duration::from_secs(300));
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
        let mut l = Ledger::new(*r.cidr(), Duration::from_secs(300));
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
        let mut l = Ledger::new(*r.cidr(), Duration::from_secs(300));
        let t0 = SystemTime::now();
        assert_eq!(one(&mut l, &dynamic(&r, "a"), t0), Ok(1));
        let by = ReleaseBy::Exact {
            ip: ip("198.51.100.1"),
            container_id: "c-a".to_owned(),
        };
        assert!(release(&mut l, &by, ReleaseReason::Collected, t0));
        assert_eq!(l.holds().count(), 0);
        assert_eq!(one(&mut l, &dynamic(&r, "b"), t0), Ok(1));
    }

    #[test]
    fn holds_expire() {
        let r = range("198.51.100.0/29");
        let hold = Duration::from_secs(300);
        let mut l = Ledger::new(*r.cidr(), hold);
        let t0 = SystemTime::now();
        hold_web0(&mut l, &r, t0);
        let later = t0 + hold + Duration::from_secs(1);
        assert_eq!(one(&mut l, &dynamic(&r, "other"), later), Ok(1));
        assert_eq!(l.holds().count(), 0);
    }

    #[test]
    fn the_oldest_hold_gives_way_when_nothing_else_is_free() {
        let r = range("198.51.100.0/30"); // .1 and .2 usable
        let mut l = Ledger::new(*r.cidr(), Duration::from_secs(300));
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "old"), t0).expect("allocates");
        one(&mut l, &dynamic(&r, "young"), t0).expect("allocates");
        release(&mut l, &deleted("old"), ReleaseReason::ClaimDeleted, t0);
        let t1 = t0 + Duration::from_secs(10);
        release(&mut l, &deleted("young"), ReleaseReason::ClaimDeleted, t1);
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
        let mut l = Ledger::new(*r.cidr(), Duration::from_secs(300));
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
        let mut l = Ledger::new(*r.cidr(), Duration::ZERO);
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
    fn a_release_with_another_container_id_releases_nothing() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr(), Duration::ZERO);
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "a"), t0).expect("allocates");
        let stale = ReleaseBy::Owner {
            pod_ref: "ns/a".to_owned(),
            ifname: "net1".to_owned(),
            container_id: Some("an-earlier-sandbox".to_owned()),
        };
        assert!(!release(&mut l, &stale, ReleaseReason::ClaimDeleted, t0));
        let exact = ReleaseBy::Exact {
            ip: ip("198.51.100.1"),
            container_id: "another".to_owned(),
        };
        assert!(!release(&mut l, &exact, ReleaseReason::Collected, t0));
        assert_eq!(l.owned_by("ns/a", "net1"), Some(1));
    }

    #[test]
    fn foreign_addresses_are_passed_over_until_freed_or_rechecked() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr(), Duration::ZERO);
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
        let mut l = Ledger::new(*r.cidr(), Duration::ZERO);
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
        let mut l = Ledger::new(*r.cidr(), Duration::ZERO);
        l.mark_foreign([1, 2], until);
        assert!(matches!(
            one(&mut l, &dynamic(&r, "a"), t0),
            Err(AllocError::Exhausted { .. })
        ));
    }

    #[test]
    fn a_static_request_unblocks_a_suspected_address() {
        let r = range("198.51.100.0/29");
        let mut l = Ledger::new(*r.cidr(), Duration::ZERO);
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
        let mut l = Ledger::new(*whole.cidr(), Duration::ZERO);
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
        let mut l = Ledger::new(*r.cidr(), Duration::ZERO);
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
        let mut l = Ledger::new(*r.cidr(), Duration::from_secs(300));
        let t0 = SystemTime::now();
        hold_web0(&mut l, &r, t0);
        l.mark_foreign([2], t0 + FOREIGN_RECHECK);
        l.load([(0u128, written(&l, 0))]);
        assert_eq!(one(&mut l, &dynamic(&r, "x"), t0), Ok(3));
        assert_eq!(one(&mut l, &dynamic(&r, "web-0"), t0), Ok(1));
        // A pool without the hold entry has no hold.
        let mut l = Ledger::new(*r.cidr(), Duration::from_secs(300));
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
        let mut l = Ledger::new(*r.cidr(), hold);
        let t0 = SystemTime::now();
        one(&mut l, &dynamic(&r, "web-0"), t0).expect("allocates");
        let d = l.decide(&[], &[(&deleted("web-0"), ReleaseReason::ClaimDeleted)], t0);
        assert_eq!(d.touched, BTreeSet::from([0]));
        let entries = written(&l, 0);
        assert_eq!(entries.len(), 1, "the held address stays in the pool");
        let (key, entry) = &entries[0];
        assert_eq!(key, "1");
        assert_eq!(entry.pod_ref, "ns/web-0");
        assert!(held_until(&entry.container_id).is_some_and(|u| u >= t0 + hold));
        assert!(!entry.container_id.starts_with("c-"), "not a container ID");
        // Another replica loads the pool after a leader change.
        let mut next = Ledger::new(*r.cidr(), hold);
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
        assert_eq!(written(&next, 0)[0].1.container_id, "c-web-0");
    }

    #[test]
    fn an_ended_hold_leaves_the_pool_with_the_next_write_or_the_collector() {
        let r = range("198.51.100.0/29");
        let hold = Duration::from_secs(300);
        let mut l = Ledger::new(*r.cidr(), hold);
        let t0 = SystemTime::now();
        hold_web0(&mut l, &r, t0);
        let marker = written(&l, 0)[0].1.container_id.clone();
        // The next batch after the hold ends rewrites the shard without it.
        let later = t0 + hold + Duration::from_secs(1);
        let d = l.decide(&[], &[], later);
        assert_eq!(d.touched, BTreeSet::from([0]));
        assert!(written(&l, 0).is_empty());
        // Or the collector releases it by its marker.
        let mut l = Ledger::new(*r.cidr(), hold);
        hold_web0(&mut l, &r, t0);
        let by = ReleaseBy::Exact {
            ip: ip("198.51.100.1"),
            container_id: marker,
        };
        let d = l.decide(&[], &[(&by, ReleaseReason::Collected)], t0);
        assert_eq!(d.releases, vec![true]);
        assert_eq!(d.touched, BTreeSet::from([0]));
        assert!(written(&l, 0).is_empty());
    }

    #[test]
    fn hold_markers_read_back_and_are_never_container_ids() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(held_until(&hold_marker(t)), Some(t));
        assert_eq!(held_until("0123456789abcdef"), None);
        assert_eq!(held_until("hereabouts.dev/held-until=soon"), None);
        assert_eq!(
            held_until("hereabouts.dev/held-until=99999999999999999999999"),
            None
        );
    }
}
