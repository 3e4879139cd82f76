//! Bytes drive a range (family, prefix, start, end, exclusions) and a
//! sequence of allocator operations; after each one the pool must hold
//! only usable addresses, none twice, and dynamic allocation must take the
//! lowest free one.

#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hereabouts_core::{Allocation, Cidr, Exclusion, IpRange, Pool};
use libfuzzer_sys::fuzz_target;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u128(&mut self) -> Option<u128> {
        let mut v = 0u128;
        for _ in 0..16 {
            v = (v << 8) | u128::from(self.u8()?);
        }
        Some(v)
    }

    /// A value that is usually small but sometimes anywhere in `0..size`.
    fn offset(&mut self, size_minus_one: u128) -> Option<u128> {
        let kind = self.u8()?;
        let raw = if kind & 1 == 0 {
            u128::from(self.u8()?)
        } else {
            self.u128()?
        };
        Some(if size_minus_one == u128::MAX {
            raw
        } else {
            raw % (size_minus_one + 1)
        })
    }
}

fn build_range(b: &mut Bytes<'_>) -> Option<IpRange> {
    let v6 = b.u8()? & 1 == 1;
    let width: u8 = if v6 { 128 } else { 32 };
    let prefix = b.u8()? % (width + 1);
    let net = b.u128()?;
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::from(net))
    } else {
        IpAddr::V4(Ipv4Addr::from((net & 0xffff_ffff) as u32))
    };
    let cidr = Cidr::new(addr, prefix).ok()?;
    let last = cidr.last_offset();
    let start = if b.u8()? & 1 == 1 { cidr.ip_at(b.offset(last)?) } else { None };
    let end = if b.u8()? & 1 == 1 { cidr.ip_at(b.offset(last)?) } else { None };
    let mut exclusions = Vec::new();
    for _ in 0..(b.u8()? % 4) {
        let ip = cidr.ip_at(b.offset(last)?)?;
        let len = b.u8()? % (width + 1);
        exclusions.push(if len == width {
            Exclusion::Address(ip)
        } else {
            Exclusion::Cidr(Cidr::new(ip, len.max(prefix)).ok()?)
        });
    }
    IpRange::new(cidr, start, end, &exclusions).ok()
}

fn check(pool: &Pool) {
    let range = pool.range();
    let mut seen_ip = HashSet::new();
    let mut seen_owner = HashSet::new();
    for (offset, ip, a) in pool.iter() {
        assert!(range.is_usable(offset), "{ip} not usable");
        assert!(seen_ip.insert(ip), "{ip} twice");
        assert!(seen_owner.insert((a.pod_ref.clone(), a.ifname.clone())), "{a:?} twice");
    }
    assert!(pool.index_runs() <= pool.len() + pool.foreign_count() + range.excluded().len() + 2);
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let Some(range) = build_range(&mut b) else {
        return;
    };
    let last = range.cidr().last_offset();
    let mut pool = Pool::new(range.clone());
    while let Some(op) = b.u8() {
        let pod = op >> 4;
        let who = Allocation::new(format!("c{pod}"), format!("ns/p{pod}"), format!("net{}", op & 1));
        match (op >> 1) & 7 {
            0..=2 => {
                let before = pool.peek_lowest_free();
                let held = pool.find_owner(&who.pod_ref, &who.ifname).map(|(o, _)| o);
                match pool.allocate(who) {
                    Ok(a) => assert_eq!(Some(a.offset), held.or(before)),
                    Err(_) => assert!(held.is_none() && before.is_none()),
                }
            }
            3 => {
                let Some(ip) = b.offset(last).and_then(|o| range.ip_at(o)) else {
                    return;
                };
                let _ = pool.allocate_static(ip, who);
            }
            4 => {
                let _ = pool.release(&who.container_id, &who.ifname);
            }
            5 => {
                let Some(o) = b.offset(last) else { return };
                let _ = pool.release_offset(o);
            }
            6 => {
                let Some(ip) = b.offset(last).and_then(|o| range.ip_at(o)) else {
                    return;
                };
                let _ = pool.mark_foreign(ip);
            }
            _ => {
                let Some(ip) = b.offset(last).and_then(|o| range.ip_at(o)) else {
                    return;
                };
                let _ = pool.unmark_foreign(ip);
            }
        }
        check(&pool);
    }
});
