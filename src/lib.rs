//! hereabouts: cluster-wide IP address management for the secondary networks
//! of Kubernetes pods.
//!
//! Data flow: a NetworkAttachmentDefinition names hereabouts (or whereabouts)
//! as its IPAM. The node-side CNI plugin turns each ADD into one [`crd::IPClaim`]
//! per (pod, interface, network); the leader-elected [`controller`]
//! allocates from its cached `IPPool`s, commits with a compare-and-swap on
//! the pool, and only then publishes the address to the claim's status.
//! DEL deletes the claim; a garbage collector returns what nobody deletes.
//!
//! [`ipam`] is the pure core: configuration, range arithmetic, naming and the
//! allocator. Nothing in it touches the network or the Kubernetes API.
//!
//! Around them: [`install`] is the node DaemonSet's installer (the plugin
//! binary, its kubeconfig and node name on the host), and [`admin`] is what
//! the `kubectl hereabouts` plugin does (usage, who holds an address, the
//! consistency audit, manual release).

pub mod admin;
pub mod cni;
pub mod controller;
pub mod crd;
pub mod http;
pub mod install;
pub mod ipam;
pub mod telemetry;
