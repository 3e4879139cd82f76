//! `make bench`: hereabouts and its peers side by side on one local
//! control plane, in one run, through the real CNI path. The peers:
//! whereabouts v0.9.3 (the kit's), and the newest whereabouts the Go module
//! proxy serves (v0.9.4, `e2e/tools/peers`) in its default mode and in its
//! node-slice mode (`node_slice_size`, its node-slice controller running).
//!
//! Each system gets a namespace of its own (its pools, reservations and
//! Leases live there; the kubeconfig's context namespace says so), the same
//! network ranges, the same simulated nodes (`NODENAME`, with Node objects)
//! and the same number of plugin processes in flight. Scenarios alternate
//! the order of the systems: storm, re-creation, many networks per pod,
//! scale, idle; then the API
//! server's own floor. Results go to `bench/results/` as JSON, Markdown and a PNG
//! ([`report`]). `--quick` runs the same scenarios small (about a minute).
//!
//! Flags after `--`: `--quick`, `--only=storm,networks,scale,...` (storm
//! and recreation go together), `--systems=hereabouts,whereabouts,...` (names:
//! hereabouts, whereabouts, whereabouts-0.9.4, whereabouts-0.9.4-slices;
//! all by default),
//! `--scale-steps=N` (fill the /16 only N steps far), `--drain-s=N` (how
//! long the pools and reservations may stay unchanged after the last DEL
//! before what is left counts as leaked; 30 s in the full run, and the
//! wait ends after 10 minutes whatever happens), `--direct` (hereabouts'
//! plugin talks to the API server itself; by default a node agent per
//! simulated node serves it on a unix socket, as installed),
//! `--no-overlapping` (every system's networks say
//! `enable_overlapping_ranges: false`: no OverlappingRangeIPReservation
//! per address).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) this does
//! nothing: it needs release binaries and minutes.

mod apiserver;
mod cpu;
mod plugin;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use plugin::{Kind, Target};
use scenarios::Settings;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("cni bench: skipped (run it with `make bench` or `make bench-quick`)");
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    let agents = !args.iter().any(|a| a == "--direct");
    let overlapping = !args.iter().any(|a| a == "--no-overlapping");
    let only = hereabouts_kit::arg_list(&args, "--only");
    let systems = hereabouts_kit::arg_list(&args, "--systems");
    let mut settings = if quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    settings.agents = agents;
    settings.overlapping = overlapping;
    let mut mode = vec![settings.mode.clone()];
    if !agents {
        mode.push("direct plugin".to_owned());
    }
    if !overlapping {
        mode.push("enable_overlapping_ranges false".to_owned());
    }
    settings.mode = mode.join(", ");
    if let Some(steps) = hereabouts_kit::arg_value(&args, "--scale-steps") {
        settings.scale_steps = steps;
    }
    if let Some(seconds) = hereabouts_kit::arg_value(&args, "--drain-s") {
        settings.drain_s = seconds;
    }
    let root = hereabouts_kit::repo_root();
    let bin_dir = std::env::var_os("HB_BENCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"))
                .join("release")
        });
    let out_dir = if quick {
        root.join("bench").join("results").join("quick")
    } else {
        root.join("bench").join("results")
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(settings, bin_dir, out_dir, only, systems))
}

async fn run(
    settings: Settings,
    bin_dir: PathBuf,
    out_dir: PathBuf,
    only: Vec<String>,
    systems: Vec<String>,
) -> anyhow::Result<()> {
    let wanted = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let kit = hereabouts_kit::kit().await?;
    hereabouts_kit::install_crds(&kit.client).await?;
    let mut record = report::Record::new(&settings, &bin_dir);
    eprintln!(
        "[bench] {} mode; binaries from {}",
        settings.mode,
        bin_dir.display()
    );

    for s in &systems {
        anyhow::ensure!(
            Kind::ALL.iter().any(|k| k.name() == s),
            "--systems: unknown system {s:?} (known: {})",
            Kind::ALL.map(Kind::name).join(", ")
        );
    }
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| systems.is_empty() || systems.iter().any(|s| s == k.name()))
        .collect();
    let peers = if kinds.iter().any(|k| k.is_extra_peer()) {
        Some(build_peers()?)
    } else {
        None
    };
    plugin::ensure_nodes(&kit.client).await?;
    if kinds.contains(&Kind::Whereabouts094Slices)
        && let Some(peers) = &peers
    {
        plugin::install_slice_crd(&kit.client, peers).await?;
    }
    let mut targets = Vec::new();
    for kind in kinds {
        let ns = kit.namespace(kind.namespace_prefix()).await?;
        let mut target = Target::new(
            kind,
            ns,
            kit.client.clone(),
            &bin_dir,
            peers.as_deref(),
            settings.agents,
        )
        .await?;
        target.overlapping = settings.overlapping;
        // A peer that cannot be set up is left out, loudly, and the run
        // goes on with the others.
        if let Err(e) = target.prepare(&settings.networks()).await {
            eprintln!("[bench] NOT RUN: {}: {e:#}", kind.name());
            record.notes.push(format!(
                "NOT RUN: {} could not be set up: {e:#}",
                kind.label()
            ));
            continue;
        }
        targets.push(target);
    }
    // The first system of the first scenario must not pay for a control
    // plane that is still starting up (a kit just started spends its first
    // half minute or so busy).
    let (waited, busy) = cpu::quiet().await;
    eprintln!(
        "[bench] control plane quiet after {:.1} s (last {:.0}% of one core)",
        waited.as_secs_f64(),
        busy * 100.0
    );
    record.notes.push(format!(
        "the scenarios began once the control plane (API server, etcd, controller manager) used under {:.0}% of one core over {} s: after {:.1} s{}",
        cpu::QUIET_BELOW * 100.0,
        cpu::QUIET_WINDOW.as_secs(),
        waited.as_secs_f64(),
        if busy < cpu::QUIET_BELOW { "" } else { " (never that quiet: the wait's cap)" }
    ));
    // Alternate which system goes first, scenario by scenario.
    let n = targets.len();
    let order = |i: usize| -> Vec<usize> {
        let mut o: Vec<usize> = (0..n).collect();
        if i % 2 == 1 {
            o.reverse();
        }
        o
    };

    if wanted("storm") || wanted("recreation") {
        for (i, step) in ["storm", "recreation"].iter().enumerate() {
            for t in order(i) {
                let target = &mut targets[t];
                match *step {
                    "storm" => record.push(scenarios::storm(&settings, target).await?),
                    _ => record.push(scenarios::recreation(&settings, target).await?),
                }
                settle().await;
            }
        }
    }
    if wanted("networks") {
        for t in order(1) {
            record.push(scenarios::many_networks(&settings, &mut targets[t]).await?);
            settle().await;
        }
    }
    if wanted("scale") {
        for t in order(0) {
            let scale = scenarios::scale(&settings, &mut targets[t]).await?;
            record.scale.push(scale);
            settle().await;
        }
    }
    if wanted("idle") {
        for t in order(1) {
            record.push(scenarios::idle(&settings, &mut targets[t]).await?);
            settle().await;
        }
    }
    if wanted("floor") {
        let ns = kit.namespace("bench-floor").await?;
        record.floor = Some(scenarios::floor(&settings, &kit.client, &ns.name).await?);
    }
    for target in &mut targets {
        if let Some(rss) = target.controller_rss_kib() {
            record.controller_rss_end_kib = Some(rss);
        }
    }
    record.finish();
    let written = report::write(&record, &out_dir)?;
    for path in written {
        eprintln!("[bench] wrote {}", path.display());
    }
    println!("{}", report::markdown(&record));
    Ok(())
}

/// Builds (or finds in the cache) the peers of `e2e/tools/peers` and
/// returns their folder.
fn build_peers() -> anyhow::Result<PathBuf> {
    let script = hereabouts_kit::repo_root().join("e2e/tools/peers/build.sh");
    let output = std::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed ({}): the whereabouts v0.9.4 peers cannot run; leave them out with --systems=hereabouts,whereabouts",
        script.display(),
        output.status
    );
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

/// A pause between runs so one system's tail (watch fan-out, lease
/// expiry, the collector) does not land in the other's measurement.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}
