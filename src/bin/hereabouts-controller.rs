//! `hereabouts-controller`: flags and environment in, the controller out.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hereabouts::controller::{self, Settings, gc::GcConfig, leader::LeaseConfig};
use hereabouts::telemetry::{self, LogFormat};

/// Cluster-wide IPAM for Multus secondary networks: the leader-elected
/// operator that answers the hereabouts CNI plugin's claims.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Namespace of the IPPools, reservations and the Lease.
    #[arg(long, env = "HEREABOUTS_NAMESPACE", default_value = "kube-system")]
    namespace: String,
    /// Serve only claims and NADs of this namespace (default: all).
    #[arg(long, env = "HEREABOUTS_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "HEREABOUTS_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    http_addr: SocketAddr,
    /// Name of the coordination.k8s.io Lease the replicas elect a leader on.
    #[arg(
        long,
        env = "HEREABOUTS_LEASE_NAME",
        default_value = "hereabouts-controller"
    )]
    lease_name: String,
    /// How long a leader's claim lasts without renewal.
    #[arg(long, env = "HEREABOUTS_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// A leader that could not renew for this long stops writing.
    #[arg(long, env = "HEREABOUTS_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    renew_deadline: Duration,
    /// How often the leader renews and standbys retry.
    #[arg(long, env = "HEREABOUTS_RETRY_PERIOD", default_value = "1s", value_parser = humantime::parse_duration)]
    retry_period: Duration,
    /// When the garbage collector runs (cron, seconds optional), besides
    /// shortly after pods are deleted.
    #[arg(long, env = "HEREABOUTS_GC_SCHEDULE", default_value = "*/5 * * * *", value_parser = parse_cron)]
    gc_schedule: croner::Cron,
    /// How long something must stay orphaned before it is reclaimed.
    #[arg(long, env = "HEREABOUTS_GC_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    gc_grace: Duration,
    /// How long an address freed by a pod's deletion stays reserved for a
    /// pod of the same name (StatefulSets); 0 disables.
    #[arg(long, env = "HEREABOUTS_HOLD_RELEASED", default_value = "60s", value_parser = humantime::parse_duration)]
    hold_released: Duration,
    /// Log lines as plain text or JSON.
    #[arg(long, env = "HEREABOUTS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    /// Log filter when RUST_LOG is unset.
    #[arg(long, env = "HEREABOUTS_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

fn parse_cron(s: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(s)
        .map_err(|e| format!("invalid cron expression {s:?}: {e}"))
}

fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host}_{}", std::process::id())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, &args.log_level);
    anyhow::ensure!(
        args.renew_deadline < args.lease_duration,
        "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?})",
        args.renew_deadline,
        args.lease_duration
    );
    let identity = identity();
    tracing::info!(%identity, "lease holder identity");
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (KUBECONFIG or in-cluster)")?;
    let settings = Settings {
        namespace: args.namespace,
        watch_namespace: args.watch_namespace,
        http_addr: args.http_addr,
        lease: LeaseConfig {
            namespace: String::new(),
            name: args.lease_name,
            identity,
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        },
        gc: GcConfig {
            schedule: args.gc_schedule,
            grace: args.gc_grace,
        },
        hold_released: args.hold_released,
    };
    let settings = Settings {
        lease: LeaseConfig {
            namespace: settings.namespace.clone(),
            ..settings.lease.clone()
        },
        ..settings
    };
    controller::run(client, settings, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
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

    #[test]
    fn defaults_parse() {
        let args = Args::try_parse_from(["hereabouts-controller"]).expect("defaults");
        assert_eq!(args.namespace, "kube-system");
        assert!(args.renew_deadline < args.lease_duration);
    }
}
