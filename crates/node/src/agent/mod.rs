//! The node agent: the node DaemonSet's process serves the CNI plugin on a
//! unix socket, so an ADD costs one local round trip instead of a process
//! that parses a kubeconfig, shakes hands over TLS and opens a watch of its
//! own.
//!
//! - [`protocol`]: what goes over the socket (the verb's environment and
//!   stdin in, the plugin's stdout out), and where the socket is.
//! - [`client`]: the plugin's side, blocking std I/O only: no async runtime,
//!   no TLS, no kube client on this path. Anything short of an answer (no
//!   socket, connection refused, the agent gone mid-request, an agent of
//!   another node or other credentials) sends the plugin down its direct
//!   path (the `hereabouts-direct` binary beside it), so a node whose agent
//!   is restarting still works. Both live in `hereabouts-plugin`, which
//!   links no kube client.
//! - [`server`]: the agent's side: one kube client (one pool of keep-alive
//!   connections) and one watch of this node's IPClaims shared by every ADD
//!   ([`crate::cni::watch`], which the verbs wait on). It answers only for its own node and its own
//!   credentials, and keeps nothing a crash would lose: the claims in the
//!   API server are the record, and a repeated ADD finds its claim again.
//! - [`overtaken`]: a DEL that arrives while the agent still runs an ADD of
//!   the same attachment (the runtime killed the plugin) is run again when
//!   that ADD ends, so a claim it created late is not left answered.

pub mod overtaken;
pub mod server;

pub use hereabouts_plugin::{client, protocol};
