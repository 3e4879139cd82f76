//! The socket's protocol: one request per connection. The plugin writes one
//! JSON [`Request`] and shuts its writing half; the agent answers one JSON
//! [`Response`] and closes. Both sides bound what they read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::env::Environment;

/// Where the DaemonSet's agent listens on the host (its run directory).
pub const DEFAULT_SOCKET: &str = "/run/hereabouts/agent.sock";
/// The environment variable that names the socket (it wins over the IPAM
/// configuration's `agent_socket`): for hosts that run several simulated
/// nodes, each with an agent of its own.
pub const SOCKET_ENV: &str = "HEREABOUTS_AGENT_SOCKET";
/// The IPAM configuration's key that names the socket.
pub const SOCKET_KEY: &str = "agent_socket";
/// The largest request the agent reads (a configuration with a large
/// prevResult stays far below it).
pub const MAX_REQUEST: usize = 4 << 20;
/// The largest answer the plugin reads.
pub const MAX_RESPONSE: usize = 4 << 20;
/// The protocol version a request carries; the agent refuses others (and
/// the plugin then takes its direct path).
pub const VERSION: u32 = 1;

/// One invocation of the plugin, as the runtime gave it, plus what only the
/// plugin's side can see.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub version: u32,
    /// The CNI environment; `node_name` is the node the plugin believes it
    /// runs on (`NODENAME`, the installer's file, the host name).
    pub env: Environment,
    /// The network configuration, as the runtime wrote it on stdin.
    pub stdin: String,
    /// The flat configuration file (`configuration_path` or a default) as
    /// the plugin reads it on the host: the agent's container may see other
    /// files, so it uses this one.
    pub flat_file: Option<FlatFile>,
}

/// A flat file the plugin found: its path and its JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlatFile {
    pub path: String,
    pub value: Value,
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// What the plugin prints, and whether it exits successfully.
    Answer {
        stdout: Option<Value>,
        success: bool,
    },
    /// Not for this agent (another node, other credentials, another
    /// protocol version): the plugin takes its direct path.
    NotServed { reason: String },
}
