//! `hereabouts`: the CNI IPAM plugin. Reads the CNI environment and the
//! network configuration, asks the controller through an IPClaim, prints
//! exactly one JSON document on stdout. Logs go to stderr, and to the
//! configuration's `log_file` when set.

use std::io::{IsTerminal, Read, Write};

use hereabouts_node::cni::{self, env::Environment};

fn main() {
    let environment = Environment::from_process();
    // A person at a terminal gets no prompt: only runtimes pipe stdin.
    let mut stdin = Vec::new();
    if !std::io::stdin().is_terminal() {
        let _ = std::io::stdin().read_to_end(&mut stdin);
    }
    let log_file = log_file_of(&stdin);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let outcome = match runtime {
        Ok(rt) => rt.block_on(cni::run(environment.clone(), &stdin)),
        Err(e) => cni::Outcome {
            stdout: Some(
                cni::error::CniError::new(cni::error::code::IO, format!("cannot start: {e}"))
                    .to_json("1.1.0"),
            ),
            success: false,
        },
    };
    if let Some(doc) = &outcome.stdout {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, doc);
        let _ = out.write_all(b"\n");
    }
    if !outcome.success {
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
        log(&line, log_file.as_deref());
        std::process::exit(1);
    }
}

fn log_file_of(stdin: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    value["ipam"]["log_file"]
        .as_str()
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
}

fn log(line: &str, file: Option<&str>) {
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
