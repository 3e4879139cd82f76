//! `hereabouts-install`: the node DaemonSet's container. Installs the CNI
//! plugin and keeps its kubeconfig and node name current (see
//! `hereabouts_node::install`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hereabouts::telemetry::{self, LogFormat};
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
    /// Install, write the credentials once, and exit.
    #[arg(long)]
    once: bool,
    #[arg(long, env = "HEREABOUTS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    #[arg(long, env = "HEREABOUTS_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, &args.log_level);
    let settings = Settings {
        server: install::api_server(
            args.api_server.as_deref(),
            args.service_host.as_deref(),
            args.service_port,
        )?,
        plugin: args.plugin,
        install_as: args.install_as,
        cni_bin_dir: args.cni_bin_dir,
        cni_conf_dir: args.cni_conf_dir,
        token_file: args.token_file,
        ca_file: args.ca_file,
        namespace: args.namespace,
        node_name: args.node_name,
    };
    install::run(&settings, args.once, args.refresh_interval, shutdown()).await?;
    Ok(())
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
