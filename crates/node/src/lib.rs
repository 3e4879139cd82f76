//! The node side of hereabouts: the CNI IPAM plugin ([`cni`]: env and stdin
//! in, one claim per attachment filed with the API server, one result out)
//! the node DaemonSet's installer ([`install`]: the plugin binary, its
//! kubeconfig and node name on the host), and the node agent the same
//! process runs ([`agent`]: the plugin served over a unix socket).

pub mod agent;
pub mod cni;
pub mod install;
