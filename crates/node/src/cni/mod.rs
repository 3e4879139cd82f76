//! The CNI IPAM plugin protocol: environment and stdin parsed into a typed
//! [`env::Invocation`], one function per verb in [`verbs`], results in the
//! configuration's cniVersion ([`result`]), errors with CNI codes
//! ([`error`]). The binary prints exactly one JSON document on stdout.
//! The environment, the errors and the outcome come from
//! `hereabouts-plugin`, the thin side the `hereabouts` binary is made of.

pub mod result;
pub mod verbs;
pub mod watch;

pub use hereabouts_plugin::{Outcome, env, error, error_version};

use env::{Command, Environment, Invocation};
use error::CniError;
use hereabouts_plugin::client::VERB_TIMEOUT;

/// Runs one invocation of the plugin on its own (the direct path).
pub async fn run(environment: Environment, stdin: &[u8]) -> Outcome {
    run_with(environment, stdin, verbs::Backend::Direct).await
}

/// Runs one invocation with `backend`'s connection to the API server.
pub async fn run_with(
    environment: Environment,
    stdin: &[u8],
    backend: verbs::Backend<'_>,
) -> Outcome {
    let answer = async {
        let command = Command::parse(environment.command.as_deref())?;
        if command == Command::Version {
            return Ok(Some(env::version_info(&error_version(stdin))));
        }
        let invocation = Invocation::parse(command, environment, stdin)?;
        let value = match command {
            Command::Add => verbs::add(&invocation, backend).await?,
            Command::Del => verbs::bounded(VERB_TIMEOUT, verbs::del(&invocation, backend)).await?,
            Command::Check => {
                verbs::bounded(VERB_TIMEOUT, verbs::check(&invocation, backend)).await?
            }
            Command::Gc => verbs::bounded(VERB_TIMEOUT, verbs::gc(&invocation, backend)).await?,
            Command::Status => {
                verbs::bounded(VERB_TIMEOUT, verbs::status(&invocation, backend)).await?
            }
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
