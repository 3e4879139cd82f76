//! `hereabouts`: the CNI IPAM plugin a runtime executes. Reads the CNI
//! environment and the network configuration and prints exactly one JSON
//! document on stdout. Logs go to stderr, and to the configuration's
//! `log_file` when set.
//!
//! This binary is thin: std, serde and `hereabouts-plugin` only, no kube
//! client, no TLS, no async runtime. VERSION is answered here. Every other
//! verb goes to the node agent over its unix socket; when no agent answers
//! (no socket, refused, the agent gone mid-request or not serving this
//! request), the direct plugin installed beside this one
//! (`hereabouts-direct`) does the work with a client of its own, given the
//! same environment and stdin.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use hereabouts_plugin::env::{Environment, version_info};
use hereabouts_plugin::error::{CniError, code};
use hereabouts_plugin::{DIRECT_PLUGIN, Outcome, client, error_version, protocol};

fn main() {
    let environment = Environment::from_process();
    let stdin = hereabouts_plugin::read_stdin();
    let log_file = hereabouts_plugin::log_file_of(&stdin);
    let outcome = match environment.command.as_deref() {
        Some("VERSION") => Outcome {
            stdout: Some(version_info(&error_version(&stdin))),
            success: true,
        },
        Some("ADD" | "DEL" | "CHECK" | "GC" | "STATUS") => {
            let config: serde_json::Value = serde_json::from_slice(&stdin).unwrap_or_default();
            let from_env = std::env::var(protocol::SOCKET_ENV).ok();
            let socket = client::socket_path(from_env.as_deref(), &config);
            match client::ask(&socket, &environment, &stdin) {
                client::Asked::Answer { stdout, success } => Outcome { stdout, success },
                // No agent here: the usual case where none is installed.
                client::Asked::Direct(_) if !socket.exists() => direct(&stdin),
                client::Asked::Direct(why) => {
                    hereabouts_plugin::log(
                        &format!(
                            "hereabouts: the node agent did not serve this request ({why}); working directly"
                        ),
                        log_file.as_deref(),
                    );
                    direct(&stdin)
                }
            }
        }
        // Unknown or missing: the direct plugin names it.
        _ => direct(&stdin),
    };
    std::process::exit(hereabouts_plugin::finish(
        &outcome,
        &environment,
        log_file.as_deref(),
    ));
}

/// Runs the direct plugin beside this binary with this process's
/// environment, stdout and stderr, writes `stdin` to it, and exits with
/// its exit code: its answer is this plugin's answer. Returns only when it
/// cannot be run, with the error to print.
fn direct(stdin: &[u8]) -> Outcome {
    let path = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(DIRECT_PLUGIN),
        Err(e) => PathBuf::from(format!("(cannot locate this binary: {e})")),
    };
    let failed = |what: String| Outcome {
        stdout: Some(
            CniError::new(
                code::IO,
                format!(
                    "no node agent answered and the direct plugin {} {what}",
                    path.display()
                ),
            )
            .to_json(&error_version(stdin)),
        ),
        success: false,
    };
    let mut child = match Command::new(&path).stdin(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot run: {e}")),
    };
    if let Some(mut pipe) = child.stdin.take() {
        // A direct plugin that exits before reading all of it (a bad
        // environment) still answers on stdout.
        let _ = pipe.write_all(stdin);
    }
    match child.wait() {
        Ok(status) => match status.code() {
            Some(code) => std::process::exit(code),
            // Killed before it answered: the runtime still gets an error.
            None => failed(format!("was killed ({status})")),
        },
        Err(e) => failed(format!("was lost: {e}")),
    }
}
