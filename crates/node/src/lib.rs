//! The node side of hereabouts: the CNI IPAM plugin ([`cni`]: env and stdin
//! in, one claim per attachment filed with the API server, one result out)
//! and the node DaemonSet's installer ([`install`]: the plugin binary, its
//! kubeconfig and node name on the host).

pub mod cni;
pub mod install;
