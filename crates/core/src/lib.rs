//! The pure IPAM core: everything hereabouts decides about addresses,
//! without touching the network, the Kubernetes API or an async runtime.
//!
//! It owns:
//! - [`config`]: parsing and validating a NAD's `ipam` section with every
//!   whereabouts option (and the flat-file merge), from a plugin's stdin or a
//!   NAD's `spec.config`;
//! - [`cidr`] and [`range`]: CIDRs and ranges as `u128` offsets from the
//!   network address, so IPv4 and IPv6 of any size share one code path;
//! - [`naming`]: `IPPool` and `OverlappingRangeIPReservation` names exactly
//!   as whereabouts derives them;
//! - [`request`]: static addresses a pod asks for (`runtimeConfig.ips`,
//!   `args.cni.ips`, `CNI_ARGS IP=`);
//! - [`duration`]: durations from input (`request_timeout`, the
//!   controller's flags), bounded;
//! - [`allocator`]: the in-memory [`Pool`] of one range: lowest free
//!   address first, idempotent per (pod, interface), O(log n) per
//!   allocation, memory proportional to allocations.
//!
//! Every refusal is a typed error naming the field and value; nothing here
//! panics on input.
//!
//! ```
//! use hereabouts_core::{Allocation, NetConf, Pool};
//!
//! let stdin = br#"{"cniVersion": "1.0.0", "name": "blue", "type": "macvlan",
//!     "ipam": {"type": "whereabouts", "range": "192.168.1.0/24",
//!              "range_start": "192.168.1.5", "network_name": "blue"}}"#;
//! let config = NetConf::parse(stdin)?.ipam_config()?;
//! let range = &config.ranges[0];
//! assert_eq!(range.pool_name.as_str(), "blue-192.168.1.0-24");
//!
//! // The controller loads the IPPool's `spec.allocations` (decimal offsets)...
//! let held = [("5", Allocation::new("c1", "default/web-0", "net1"))];
//! let (mut pool, issues) = Pool::from_keyed(range.range.clone(), held);
//! assert!(issues.is_empty());
//! // ...allocates the lowest free address, idempotently per (pod, interface)...
//! let web1 = Allocation::new("c2", "default/web-1", "net1");
//! let assigned = pool.allocate(web1.clone())?;
//! assert_eq!(assigned.ip.to_string(), "192.168.1.6");
//! assert_eq!(pool.allocate(web1)?.ip, assigned.ip);
//! // ...and writes `pool.keyed()` back: {"5": .., "6": ..}.
//! assert_eq!(pool.keyed().map(|(k, _)| k).collect::<Vec<_>>(), ["5", "6"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod allocator;
pub mod attachment;
#[cfg(test)]
mod bad_input;
pub mod cidr;
pub mod config;
pub mod duration;
mod excerpt;
mod json;
pub mod ledger;
pub mod naming;
pub mod range;
pub mod request;
mod runs;
mod warning;

pub use allocator::{
    AllocError, Allocation, Assigned, LoadIssue, Outcome, Pool, Released, allocation_key,
    parse_allocation_key,
};
pub use cidr::{Cidr, CidrError, Family, parse_ip};
pub use config::{
    ConfigError, ConfigWarning, Dns, Hold, IpamConfig, IpamKind, NetConf, RangeConfig, Route,
    StaticAddress, find_ipam_sections, merge_flat_file, read_flat_file,
};
pub use duration::{Bounds, DurationError};
pub use excerpt::{EXCERPT_CHARS, Excerpt, excerpt};
pub use naming::{
    NamingError, PoolName, ReservationName, SHARD_SPAN, network_name_of, node_slice_pool_name,
    pool_name, possible_network_names, reservation_address, reservation_name, shard_base,
    shard_index, shard_name,
};
pub use range::{Exclusion, IpRange, RangeError, RangeFields, Unusable};
pub use request::{
    CniArgs, IpSource, RangeRequest, RequestError, RequestedIp, claim_requests, match_requests,
    requested_ips,
};
