//! `hereabouts-install`: the node DaemonSet's container. Installs the CNI
//! plugin and keeps its kubeconfig and node name current (see
//! `hereabouts_node::install`), and runs the node agent: the plugin served
//! on a unix socket (see `hereabouts_node::agent`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hereabouts::telemetry::{self, LogFormat};
use hereabouts_node::agent::{protocol, server};
use hereabouts_node::install::{self, Settings};

/// Installs the hereabouts CNI plugin on this node and writes its
/// credentials: a kubeconfig from this pod's service-account token
/// (rewritten when the token rotates) and the node's name.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The plugin binary to install.
    #[arg(
        long,
        env = "HEREABOUTS_PLUGIN",
        default_value = "/usr/local/bin/hereabouts"
    )]
    plugin: PathBuf,
    /// The direct plugin binary, installed beside the plugin as
    /// `hereabouts-direct` (the plugin runs it when no agent answers).
    #[arg(
        long,
        env = "HEREABOUTS_DIRECT_PLUGIN",
        default_value = "/usr/local/bin/hereabouts-direct"
    )]
    direct_plugin: PathBuf,
    /// Name to install the plugin under (repeatable); add `whereabouts` to
    /// serve NADs that still say `"type": "whereabouts"`.
    #[arg(long = "install-as", default_value = "hereabouts")]
    install_as: Vec<String>,
    /// The host's CNI bin dir, as mounted in this container.
    #[arg(
        long,
        env = "HEREABOUTS_CNI_BIN_DIR",
        default_value = "/host/opt/cni/bin"
    )]
    cni_bin_dir: PathBuf,
    /// The host's CNI configuration dir, as mounted in this container; the
    /// files go to its `hereabouts.d/`.
    #[arg(
        long,
        env = "HEREABOUTS_CNI_CONF_DIR",
        default_value = "/host/etc/cni/net.d"
    )]
    cni_conf_dir: PathBuf,
    /// The projected service-account token.
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    token_file: PathBuf,
    /// The API server's CA bundle.
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    ca_file: PathBuf,
    /// API server URL for the plugin (default: the in-cluster service,
    /// from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT).
    #[arg(long, env = "HEREABOUTS_API_SERVER")]
    api_server: Option<String>,
    #[arg(long, env = "KUBERNETES_SERVICE_HOST", hide = true)]
    service_host: Option<String>,
    #[arg(long, env = "KUBERNETES_SERVICE_PORT", hide = true)]
    service_port: Option<u16>,
    /// Namespace of the pools: the kubeconfig context's namespace.
    #[arg(long, env = "HEREABOUTS_NAMESPACE")]
    namespace: String,
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// How often to look for a rotated token.
    #[arg(long, env = "HEREABOUTS_REFRESH_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    refresh_interval: Duration,
    /// Install, write the credentials once, and exit (no agent).
    #[arg(long)]
    once: bool,
    /// Where the node agent listens, as mounted in this container (the
    /// host's run directory; the plugin's default is the same path).
    #[arg(long, env = "HEREABOUTS_AGENT_SOCKET", default_value = protocol::DEFAULT_SOCKET)]
    agent_socket: PathBuf,
    /// Install and keep the credentials current, but serve no agent.
    #[arg(long, conflicts_with = "agent_only")]
    no_agent: bool,
    /// Serve the agent only: install nothing, write no credentials (a
    /// host whose plugin is installed otherwise, e.g. simulated nodes).
    #[arg(long, conflicts_with = "once")]
    agent_only: bool,
    /// The agent's credentials (default: this pod's projected token, CA and
    /// API server, the same the plugin's kubeconfig holds). Configurations
    /// naming this kubeconfig, the installer's or none are served.
    #[arg(long, env = "HEREABOUTS_AGENT_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    #[arg(long, env = "HEREABOUTS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    #[arg(long, env = "HEREABOUTS_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, &args.log_level);
    let server = install::api_server(
        args.api_server.as_deref(),
        args.service_host.as_deref(),
        args.service_port,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown().await;
        let _ = stop.send(true);
    });
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    if args.agent_only {
        let server = match &args.kubeconfig {
            Some(_) => None,
            None => Some(server?),
        };
        let agent = start_agent(&args, server.as_deref(), until_stopped()).await?;
        agent.await.context("the agent stopped")?;
        return Ok(());
    }
    let settings = Settings {
        server: server?,
        plugin: args.plugin.clone(),
        direct_plugin: args.direct_plugin.clone(),
        install_as: args.install_as.clone(),
        cni_bin_dir: args.cni_bin_dir.clone(),
        cni_conf_dir: args.cni_conf_dir.clone(),
        token_file: args.token_file.clone(),
        ca_file: args.ca_file.clone(),
        namespace: args.namespace.clone(),
        node_name: args.node_name.clone(),
    };
    if args.once || args.no_agent {
        install::run(&settings, args.once, args.refresh_interval, until_stopped()).await?;
        return Ok(());
    }
    // The plugin and its credentials first (the plugin falls back on them
    // whenever the agent does not answer), then the socket.
    install::run(&settings, true, args.refresh_interval, until_stopped()).await?;
    let agent = start_agent(&args, Some(&settings.server), until_stopped()).await?;
    let refresh = install::run(&settings, false, args.refresh_interval, until_stopped());
    let (refreshed, served) = tokio::join!(refresh, agent);
    refreshed?;
    served.context("the agent stopped")?;
    Ok(())
}

/// Binds the agent's socket and serves it until SIGTERM (the task's end).
async fn start_agent(
    args: &Args,
    server: Option<&str>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    anyhow::ensure!(
        !args.node_name.trim().is_empty(),
        "--node-name (NODE_NAME): empty; the DaemonSet sets it from spec.nodeName"
    );
    anyhow::ensure!(
        !args.namespace.trim().is_empty(),
        "--namespace (HEREABOUTS_NAMESPACE): empty; the DaemonSet sets it from metadata.namespace"
    );
    let client = server::client(
        args.kubeconfig.as_deref(),
        server,
        &args.token_file,
        &args.ca_file,
    )
    .await?;
    let agent = server::Agent::start(
        client,
        args.namespace.clone(),
        args.node_name.trim().to_owned(),
        args.kubeconfig.clone(),
    );
    let (listener, bound) = server::bind(&args.agent_socket)?;
    tracing::info!(socket = %bound.path.display(), node = %agent.node, "the node agent serves the plugin");
    Ok(tokio::spawn(async move {
        server::serve(listener, agent, stop).await;
        // Gone at once: plugins starting now take their direct path.
        bound.remove();
    }))
}

/// SIGTERM (the kubelet stopping the pod) or Ctrl-C. The installed files
/// stay: the plugin keeps working while the DaemonSet rolls.
async fn shutdown() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
