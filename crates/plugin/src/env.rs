//! What the runtime tells a plugin: the `CNI_*` environment and the network
//! configuration on stdin, parsed into one typed request.

use hereabouts_core::{CniArgs, NetConf, attachment};

use crate::error::{CniError, code};

/// Where the installer writes the node's name for the plugin.
pub const NODENAME_FILE: &str = "/etc/cni/net.d/hereabouts.d/nodename";

/// The spec versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(value: Option<&str>) -> Result<Self, CniError> {
        match value {
            Some("ADD") => Ok(Command::Add),
            Some("DEL") => Ok(Command::Del),
            Some("CHECK") => Ok(Command::Check),
            Some("GC") => Ok(Command::Gc),
            Some("STATUS") => Ok(Command::Status),
            Some("VERSION") => Ok(Command::Version),
            Some(other) => Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_COMMAND: unknown command {other:?}"),
            )),
            None => Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                "CNI_COMMAND is not set",
            )),
        }
    }

    /// The first spec version that has this command.
    fn since(self) -> &'static str {
        match self {
            Command::Check => "0.4.0",
            Command::Gc | Command::Status => "1.1.0",
            Command::Add | Command::Del | Command::Version => "0.3.0",
        }
    }
}

/// The environment of one invocation (everything but stdin).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Environment {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
    /// `NODENAME`, as whereabouts reads it.
    pub node_name: Option<String>,
}

impl Environment {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Environment {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH"),
            node_name: var("NODENAME"),
        }
    }
}

/// A parsed invocation of ADD, DEL, CHECK, GC or STATUS.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: Command,
    pub cni_version: String,
    pub conf: NetConf,
    pub container_id: String,
    pub ifname: String,
    pub args: CniArgs,
    pub env: Environment,
    pub raw: serde_json::Value,
}

impl Invocation {
    /// Parses stdin and checks what `command` requires of the environment.
    pub fn parse(command: Command, env: Environment, stdin: &[u8]) -> Result<Self, CniError> {
        let raw: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODING,
                format!("stdin: not a JSON network configuration: {e}"),
            )
        })?;
        let conf = NetConf::parse(stdin)?;
        let cni_version = conf
            .cni_version
            .clone()
            .ok_or_else(|| CniError::invalid_config("cniVersion: missing"))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion: {cni_version:?} is not supported; supported: {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if version_less(&cni_version, command.since()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion: {command:?} needs {} or later, the configuration says {cni_version}",
                    command.since()
                ),
            ));
        }
        let args = CniArgs::parse(env.args.as_deref().unwrap_or(""))
            .map_err(|e| CniError::new(code::INVALID_ENVIRONMENT, format!("CNI_ARGS: {e}")))?;
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let required = |value: &Option<String>, name: &str| -> Result<String, CniError> {
            match value {
                Some(v) => Ok(v.clone()),
                None if needs_attachment => Err(CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!("{name} is not set"),
                )),
                None => Ok(String::new()),
            }
        };
        let container_id = required(&env.container_id, "CNI_CONTAINERID")?;
        let ifname = required(&env.ifname, "CNI_IFNAME")?;
        if !container_id.is_empty() {
            check_container_id(&container_id)?;
        }
        if !ifname.is_empty() {
            check_ifname(&ifname)?;
        }
        Ok(Invocation {
            command,
            cni_version,
            conf,
            container_id,
            ifname,
            args,
            env,
            raw,
        })
    }

    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` from CNI_ARGS.
    pub fn pod(&self) -> Result<(String, String), CniError> {
        let get = |key: &str| {
            self.args
                .get(key)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    CniError::new(
                        code::INVALID_ENVIRONMENT,
                        format!("CNI_ARGS: {key} is missing; hereabouts serves Kubernetes pods (through Multus or a CRI runtime)"),
                    )
                })
        };
        let (namespace, name) = (get("K8S_POD_NAMESPACE")?, get("K8S_POD_NAME")?);
        // Both end up in API paths and object names: refuse what no pod
        // can be called before anything is sent.
        let namespace_ok = hereabouts_core::naming::check_object_name(&namespace).and(
            if namespace.len() <= 63 && !namespace.contains('.') {
                Ok(())
            } else {
                Err("a namespace is one DNS label of at most 63 characters")
            },
        );
        if let Err(reason) = namespace_ok {
            return Err(invalid_env(
                "CNI_ARGS K8S_POD_NAMESPACE",
                &namespace,
                reason,
            ));
        }
        if let Err(reason) = hereabouts_core::naming::check_object_name(&name) {
            return Err(invalid_env("CNI_ARGS K8S_POD_NAME", &name, reason));
        }
        Ok((namespace, name))
    }
}

fn invalid_env(field: &str, value: &str, reason: &str) -> CniError {
    const SHOWN: usize = 80;
    let shown: String = value.chars().take(SHOWN).collect();
    let more = if value.chars().count() > SHOWN {
        "..."
    } else {
        ""
    };
    CniError::new(
        code::INVALID_ENVIRONMENT,
        format!("{field}: {shown:?}{more} is not valid: {reason}"),
    )
}

/// The spec's rule for `CNI_CONTAINERID` (libcni's `ValidateContainerID`),
/// with a length bound.
fn check_container_id(id: &str) -> Result<(), CniError> {
    attachment::check_container_id(id).map_err(|reason| invalid_env("CNI_CONTAINERID", id, reason))
}

/// The spec's rule for `CNI_IFNAME` (libcni's `ValidateInterfaceName`): a
/// Linux interface name, at most 15 bytes.
fn check_ifname(name: &str) -> Result<(), CniError> {
    attachment::check_ifname(name).map_err(|reason| invalid_env("CNI_IFNAME", name, reason))
}

/// Whether spec version `a` is older than `b` (both of the supported set).
pub fn version_less(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    parse(a) < parse(b)
}

/// The VERSION verb's answer.
pub fn version_info(cni_version: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}
