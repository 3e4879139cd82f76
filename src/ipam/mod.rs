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
//! - [`allocator`]: the in-memory [`Pool`] of one range: lowest free
//!   address first, idempotent per (pod, interface), O(log n) per
//!   allocation, memory proportional to allocations.
//!
//! Every refusal is a typed error naming the field and value; nothing here
//! panics on input.

pub mod allocator;
pub mod cidr;
pub mod config;
mod json;
pub mod naming;
pub mod range;
pub mod request;
mod runs;

pub use allocator::{
    AllocError, Allocation, Assigned, LoadIssue, Outcome, Pool, Released, allocation_key,
    parse_allocation_key,
};
pub use cidr::{Cidr, CidrError, Family, parse_ip};
pub use config::{
    ConfigError, ConfigWarning, Dns, IpamConfig, IpamKind, NetConf, RangeConfig, Route,
    StaticAddress, find_ipam_sections, merge_flat_file, read_flat_file,
};
pub use naming::{NamingError, PoolName, ReservationName, pool_name, reservation_name};
pub use range::{Exclusion, IpRange, RangeError, RangeFields, Unusable};
pub use request::{
    CniArgs, IpSource, RangeRequest, RequestError, RequestedIp, match_requests, requested_ips,
};
