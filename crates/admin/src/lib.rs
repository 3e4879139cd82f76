//! What `kubectl hereabouts` does, as a library the thin binary calls:
//!
//! - [`inventory`]: one read of the pools (shards merged per range),
//!   reservations, claims and pods;
//! - [`query`]: usage per pool and who holds an address;
//! - [`audit`]: the consistency check (allocations without pods,
//!   reservations without allocations, claims without allocations,
//!   duplicates);
//! - [`release`]: manual release of one address with a compare-and-swap
//!   write of its IPPool;
//! - [`table`]: kubectl-style columns.
//!
//! Everything but the loading and the release writes is pure, so the rules
//! are tested without a server.

pub mod audit;
pub mod inventory;
pub mod query;
pub mod release;
pub mod table;

use std::net::IpAddr;
use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Where pools live when neither a flag nor the kubeconfig context says:
/// whereabouts' default, and the controller's.
pub const DEFAULT_NAMESPACE: &str = "kube-system";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{ip} is not allocated in any IPPool of namespace {namespace}")]
    NotAllocated { ip: IpAddr, namespace: String },
    #[error("{ip} is allocated in several pools ({pools}); choose one with --pool")]
    Ambiguous { ip: IpAddr, pools: String },
    #[error("--pool {pool}: {ip} is not allocated there (it is in {found})")]
    NotInPool {
        ip: IpAddr,
        pool: String,
        found: String,
    },
    #[error(
        "pod {pod} still exists and holds {ip}: releasing it would let the address be \
         handed out twice; delete the pod, or pass --force"
    )]
    PodAlive { ip: IpAddr, pod: String },
    #[error(
        "IPPool {object}: {ip} changed hands since it was read (now {holder}); look again \
         with `kubectl hereabouts who {ip}`"
    )]
    Changed {
        ip: IpAddr,
        object: String,
        holder: String,
    },
    #[error("IPPool {object}: gave up after {attempts} conflicting writes")]
    Conflicts { object: String, attempts: u32 },
}

impl Error {
    fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        move |source| Error::Api { what, source }
    }
}

/// A client and the pools' namespace: `namespace` when given, else the
/// kubeconfig context's namespace, else [`DEFAULT_NAMESPACE`] (the rule the
/// CNI plugin follows with its own kubeconfig).
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<(kube::Client, String), Error> {
    let loaded = match kubeconfig {
        Some(path) => Some(
            Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("--kubeconfig {}: {e}", path.display())))?,
        ),
        None => Kubeconfig::read().ok(),
    };
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let (config, context_namespace) = match loaded {
        Some(file) => {
            let namespace = context_namespace(&file, context);
            let config = kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| Error::Config(e.to_string()))?;
            (config, namespace)
        }
        None => (
            kube::Config::incluster().map_err(|e| {
                Error::Config(format!(
                    "no kubeconfig (KUBECONFIG, ~/.kube/config or --kubeconfig) and not in a pod: {e}"
                ))
            })?,
            None,
        ),
    };
    let client = kube::Client::try_from(config).map_err(|e| Error::Config(e.to_string()))?;
    let namespace = namespace
        .map(str::to_owned)
        .or(context_namespace)
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    Ok((client, namespace))
}

/// The namespace of `context` (or the current context) in `file`.
fn context_namespace(file: &Kubeconfig, context: Option<&str>) -> Option<String> {
    let name = context.or(file.current_context.as_deref())?;
    file.contexts
        .iter()
        .find(|c| c.name == name)?
        .context
        .as_ref()?
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_comes_from_the_chosen_context() {
        let file = Kubeconfig::from_yaml(
            "apiVersion: v1\nkind: Config\ncurrent-context: a\ncontexts:\n\
             - name: a\n  context: {cluster: c, user: u, namespace: pools}\n\
             - name: b\n  context: {cluster: c, user: u}\n",
        )
        .expect("kubeconfig");
        assert_eq!(context_namespace(&file, None).as_deref(), Some("pools"));
        assert_eq!(context_namespace(&file, Some("b")), None);
        assert_eq!(context_namespace(&file, Some("missing")), None);
    }
}
