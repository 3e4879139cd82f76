//! The CNI IPAM plugin protocol: environment and stdin parsed into a typed
//! [`env::Invocation`], one function per verb in [`verbs`], results in the
//! configuration's cniVersion ([`result`]), errors with CNI codes
//! ([`error`]). The binary prints exactly one JSON document on stdout.

pub mod env;
pub mod error;
pub mod result;
pub mod verbs;

use serde_json::Value;

use env::{Command, Environment, Invocation};
use error::CniError;

/// What the binary prints, and whether it exits successfully.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: Option<Value>,
    pub success: bool,
}

/// The cniVersion to answer an error in: the configuration's when it can
/// be read, else the newest.
fn error_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .filter(|v| env::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_owned())
}

/// Runs one invocation of the plugin.
pub async fn run(environment: Environment, stdin: &[u8]) -> Outcome {
    let answer = async {
        let command = Command::parse(environment.command.as_deref())?;
        if command == Command::Version {
            return Ok(Some(env::version_info(&error_version(stdin))));
        }
        let invocation = Invocation::parse(command, environment, stdin)?;
        let value = match command {
            Command::Add => verbs::add(&invocation).await?,
            Command::Del => verbs::del(&invocation).await?,
            Command::Check => verbs::check(&invocation).await?,
            Command::Gc => verbs::gc(&invocation).await?,
            Command::Status => verbs::status(&invocation).await?,
            Command::Version => unreachable!("answered above"),
        };
        Ok::<_, CniError>((!value.is_null()).then_some(value))
    }
    .await;
    match answer {
        Ok(stdout) => Outcome {
            stdout,
            success: true,
        },
        Err(e) => Outcome {
            stdout: Some(e.to_json(&error_version(stdin))),
            success: false,
        },
    }
}
