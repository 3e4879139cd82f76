//! hereabouts: cluster-wide IP address management for the secondary networks
//! of Kubernetes pods. This package holds the binaries; the work is in the
//! crates under `crates/`, layered so that arrows only point down:
//!
//! - `hereabouts-core`: the pure core (configuration, range arithmetic,
//!   naming, the allocator). Nothing in it touches the network or the API.
//! - `hereabouts-api`: the Kubernetes objects, the only schema source.
//! - `hereabouts-controller`: the leader-elected controller. The node-side
//!   plugin turns each ADD into one `IPClaim` per (pod, interface, network);
//!   the controller allocates from its cached `IPPool`s, commits with a
//!   compare-and-swap on the pool, and only then answers in the claim's
//!   status. DEL deletes the claim; a garbage collector returns what nobody
//!   deletes.
//! - `hereabouts-node`: the CNI plugin and the node DaemonSet's installer.
//! - `hereabouts-admin`: what `kubectl hereabouts` does.
//!
//! What the binaries share lives here: [`telemetry`].

pub mod telemetry;
