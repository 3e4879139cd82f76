//! The CNI plugin's thin side, with no kube client, no TLS and no async
//! runtime: what the `hereabouts` binary a runtime executes needs to answer
//! VERSION, hand every other verb to the node agent over its unix socket,
//! and start the direct plugin (`hereabouts-direct`, beside it) when no
//! agent answers.
//!
//! - [`env`]: the `CNI_*` environment and stdin, parsed and checked.
//! - [`error`]: CNI error documents with the spec's codes and ours.
//! - [`protocol`]: what goes over the agent's socket, and where it is.
//! - [`client`]: the plugin's side of the socket, blocking std I/O.
//!
//! `hereabouts-node` builds the verbs, the agent and the installer on
//! these.

pub mod client;
pub mod env;
pub mod error;
pub mod protocol;

use std::io::{IsTerminal as _, Read as _, Write as _};

use serde_json::Value;

/// The direct plugin's file name, installed beside the thin plugin: the
/// verbs with a kube client of their own, for when no agent answers.
pub const DIRECT_PLUGIN: &str = "hereabouts-direct";

/// What the binary prints, and whether it exits successfully.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: Option<Value>,
    pub success: bool,
}

/// The cniVersion to answer an error in: the configuration's when it can
/// be read, else the newest.
pub fn error_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .filter(|v| env::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_owned())
}

/// The network configuration on stdin. A person at a terminal gets no
/// prompt (only runtimes pipe stdin): nothing is read then.
pub fn read_stdin() -> Vec<u8> {
    let mut stdin = Vec::new();
    if !std::io::stdin().is_terminal() {
        let _ = std::io::stdin().read_to_end(&mut stdin);
    }
    stdin
}

/// The configuration's `ipam.log_file`, when it names one.
pub fn log_file_of(stdin: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    value["ipam"]["log_file"]
        .as_str()
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
}

/// A line to stderr, and to the configuration's log file when it has one.
pub fn log(line: &str, file: Option<&str>) {
    eprintln!("{line}");
    if let Some(path) = file
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Prints `outcome` (exactly one JSON document on stdout), logs a failure
/// naming the verb and attachment, and gives the process's exit code.
pub fn finish(outcome: &Outcome, environment: &env::Environment, log_file: Option<&str>) -> i32 {
    if let Some(doc) = &outcome.stdout {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, doc);
        let _ = out.write_all(b"\n");
    }
    if outcome.success {
        return 0;
    }
    let line = format!(
        "hereabouts {} container={} ifname={}: {}",
        environment.command.as_deref().unwrap_or("?"),
        environment.container_id.as_deref().unwrap_or("?"),
        environment.ifname.as_deref().unwrap_or("?"),
        outcome
            .stdout
            .as_ref()
            .map(|d| d["msg"].to_string())
            .unwrap_or_default()
    );
    log(&line, log_file);
    1
}
