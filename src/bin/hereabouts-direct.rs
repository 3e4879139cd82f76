//! `hereabouts-direct`: the CNI IPAM plugin doing the work itself, with a
//! kube client of its own and a watch of its own claim: what the thin
//! `hereabouts` binary beside it starts when no node agent answers (none
//! installed, one restarting, or one that does not serve this request).
//! A runtime may also execute it as a plugin of its own.

use hereabouts_node::cni::{self, env::Environment};

fn main() {
    let environment = Environment::from_process();
    let stdin = hereabouts_plugin::read_stdin();
    let log_file = hereabouts_plugin::log_file_of(&stdin);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let outcome = match runtime {
        Ok(rt) => rt.block_on(cni::run(environment.clone(), &stdin)),
        Err(e) => cni::Outcome {
            stdout: Some(
                cni::error::CniError::new(cni::error::code::IO, format!("cannot start: {e}"))
                    .to_json(&cni::error_version(&stdin)),
            ),
            success: false,
        },
    };
    std::process::exit(hereabouts_plugin::finish(
        &outcome,
        &environment,
        log_file.as_deref(),
    ));
}
