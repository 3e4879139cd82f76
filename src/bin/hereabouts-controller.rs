//! `hereabouts-controller`: flags and environment in, the controller out.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hereabouts::telemetry::{self, LogFormat};
use hereabouts_controller::{Settings, gc::GcConfig, leader::LeaseConfig};
use hereabouts_core::duration::{self, Bounds, DurationError};

/// jemalloc rather than glibc's malloc: the controller's heap churns
/// (watch events decoded, requests built, a task per release), and glibc
/// kept what a fill had freed.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// How long a leader's claim lasts without renewal (1s to 1h).
    #[arg(long, env = "HEREABOUTS_LEASE_DURATION", default_value = "15s", value_parser = lease_duration)]
    lease_duration: Duration,
    /// A leader that could not renew for this long stops writing (100ms to
    /// 1h, shorter than the lease duration).
    #[arg(long, env = "HEREABOUTS_RENEW_DEADLINE", default_value = "10s", value_parser = renew_deadline)]
    renew_deadline: Duration,
    /// How often the leader renews and standbys retry (10ms to 10m,
    /// shorter than the renew deadline).
    #[arg(long, env = "HEREABOUTS_RETRY_PERIOD", default_value = "1s", value_parser = retry_period)]
    retry_period: Duration,
    /// When the garbage collector runs (cron, seconds optional), besides
    /// shortly after pods are deleted.
    #[arg(long, env = "HEREABOUTS_GC_SCHEDULE", default_value = "*/5 * * * *", value_parser = parse_cron)]
    gc_schedule: croner::Cron,
    /// How long something must stay orphaned before it is reclaimed (0 to
    /// 7 days).
    #[arg(long, env = "HEREABOUTS_GC_GRACE", default_value = "60s", value_parser = gc_grace)]
    gc_grace: Duration,
    /// How long an address freed by a pod's deletion stays reserved for a
    /// pod of the same name (StatefulSets); 0 disables, at most 1 day.
    #[arg(long, env = "HEREABOUTS_HOLD_RELEASED", default_value = "60s", value_parser = hold_released)]
    hold_released: Duration,
    /// How long an address released (a pod's deletion, a leak collected,
    /// an IPAMClaim deleted) rests before it goes to another pod, unless
    /// the range would otherwise be exhausted; 0 disables, at most 1 day.
    /// A NAD's `release_cooldown` overrides it for its network.
    #[arg(long, env = "HEREABOUTS_RELEASE_COOLDOWN", default_value = "5s", value_parser = release_cooldown)]
    release_cooldown: Duration,
    /// Requests the controller has in flight to the API server at most
    /// (1 to 10,000; the Lease's renewals are not counted: they never wait).
    #[arg(long, env = "HEREABOUTS_API_CONCURRENCY", default_value = "64", value_parser = api_concurrency)]
    api_concurrency: usize,
    /// Log lines as plain text or JSON.
    #[arg(long, env = "HEREABOUTS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    /// Log filter when RUST_LOG is unset.
    #[arg(long, env = "HEREABOUTS_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

// Every duration flag is bounded where it is parsed: an unbounded one ends
// in an overflow panic far away (`Instant + Duration`), or in a busy loop
// (a zero retry period). The bounds are in each flag's help.
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const LEASE_DURATION: Bounds = Bounds::new(SECOND, HOUR);
const RENEW_DEADLINE: Bounds = Bounds::new(Duration::from_millis(100), HOUR);
const RETRY_PERIOD: Bounds = Bounds::new(Duration::from_millis(10), Duration::from_secs(600));
const GC_GRACE: Bounds = Bounds::new(Duration::ZERO, Duration::from_secs(7 * 24 * 3600));
const HOLD_RELEASED: Bounds = Bounds::new(Duration::ZERO, DAY);
const RELEASE_COOLDOWN: Bounds = Bounds::new(Duration::ZERO, DAY);

fn lease_duration(s: &str) -> Result<Duration, DurationError> {
    duration::parse_text(
        "--lease-duration (HEREABOUTS_LEASE_DURATION)",
        s,
        LEASE_DURATION,
    )
}

fn renew_deadline(s: &str) -> Result<Duration, DurationError> {
    duration::parse_text(
        "--renew-deadline (HEREABOUTS_RENEW_DEADLINE)",
        s,
        RENEW_DEADLINE,
    )
}

fn retry_period(s: &str) -> Result<Duration, DurationError> {
    duration::parse_text("--retry-period (HEREABOUTS_RETRY_PERIOD)", s, RETRY_PERIOD)
}

fn gc_grace(s: &str) -> Result<Duration, DurationError> {
    duration::parse_text("--gc-grace (HEREABOUTS_GC_GRACE)", s, GC_GRACE)
}

fn hold_released(s: &str) -> Result<Duration, DurationError> {
    duration::parse_text(
        "--hold-released (HEREABOUTS_HOLD_RELEASED)",
        s,
        HOLD_RELEASED,
    )
}

fn release_cooldown(s: &str) -> Result<Duration, DurationError> {
    duration::parse_text(
        "--release-cooldown (HEREABOUTS_RELEASE_COOLDOWN)",
        s,
        RELEASE_COOLDOWN,
    )
}

fn api_concurrency(s: &str) -> Result<usize, String> {
    let flag = "--api-concurrency (HEREABOUTS_API_CONCURRENCY)";
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag}: {:?} is not a whole number from 1 to 10000",
            s.chars().take(100).collect::<String>()
        )),
    }
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
    anyhow::ensure!(
        args.retry_period < args.renew_deadline,
        "--retry-period ({:?}) must be shorter than --renew-deadline ({:?})",
        args.retry_period,
        args.renew_deadline
    );
    let identity = identity();
    tracing::info!(%identity, "lease holder identity");
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (KUBECONFIG or in-cluster)")?;
    let clients = hereabouts_controller::Clients::new(config, args.api_concurrency)
        .context("the Kubernetes client")?;
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
        release_cooldown: args.release_cooldown,
    };
    let settings = Settings {
        lease: LeaseConfig {
            namespace: settings.namespace.clone(),
            ..settings.lease.clone()
        },
        ..settings
    };
    hereabouts_controller::run(clients, settings, shutdown_signal()).await?;
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

    #[test]
    fn every_duration_flag_is_bounded_and_named_in_its_error() {
        let flags = [
            "--lease-duration",
            "--renew-deadline",
            "--retry-period",
            "--gc-grace",
            "--hold-released",
            "--release-cooldown",
        ];
        for flag in flags {
            for value in ["1000000000y", "18446744073709551615s", "8d", "x", "-1s", ""] {
                let arg = format!("{flag}={value}");
                let e = Args::try_parse_from(["hereabouts-controller", arg.as_str()])
                    .expect_err(&format!("{flag} {value}"))
                    .to_string();
                assert!(
                    e.contains(&format!("{flag} (HEREABOUTS_")),
                    "{flag} {value}: {e}"
                );
                assert!(e.contains(&format!("{value:?}")), "{flag} {value}: {e}");
            }
        }
        for (flag, at_most) in [
            ("--lease-duration", "1h"),
            ("--renew-deadline", "1h"),
            ("--retry-period", "10m"),
            ("--gc-grace", "7days"),
            ("--hold-released", "1day"),
            ("--release-cooldown", "1day"),
        ] {
            let args = Args::try_parse_from(["hereabouts-controller", flag, at_most]);
            assert!(args.is_ok(), "{flag} {at_most} is allowed");
        }
        let zero_retry = Args::try_parse_from(["hereabouts-controller", "--retry-period", "0s"]);
        assert!(zero_retry.is_err(), "a zero retry period would spin");
        let zero_grace = Args::try_parse_from(["hereabouts-controller", "--gc-grace", "0s"]);
        assert!(zero_grace.is_ok(), "a zero grace period is allowed");
    }
}
