//! The fault suite of issue 12 (`make faults`, `make faults-quick`):
//! scenarios against the local control plane, each with its own namespace,
//! NAD, controller replicas (real `hereabouts-controller` processes with
//! short lease settings) and a storm of ADDs (real `hereabouts` plugin
//! processes) in flight when the fault strikes. After every run the
//! invariants are checked against the API server itself ([`check`]): no
//! address held twice, every answered ADD held in its pool, nothing left
//! after DEL of everything, every failed ADD a CNI error 11.
//!
//! `cargo test --test faults` runs the quick matrix (2 runs of each
//! scenario; `make test` runs it), `-- --full` the full one (10 runs, larger
//! storms, table also written to `bench/results/faults/`). `--only=a,b`
//! picks scenarios, `--runs=N` overrides the runs. A scenario that breaks
//! an invariant makes the run fail, naming scenario and invariant.

mod bed;
mod check;
mod report;
mod scenarios;

use std::time::Instant;

use bed::Settings;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets -- --ignored ipvlan` (e2e/test.sh's second
    // pass) names a filter this binary has no test for.
    if let Some(other) = args
        .iter()
        .find(|a| !(a.starts_with("--only=") || a.starts_with("--runs=") || *a == "--full"))
    {
        println!("faults: not run: argument {other:?} selects no fault scenario");
        return std::process::ExitCode::SUCCESS;
    }
    let mut settings = if args.iter().any(|a| a == "--full") {
        Settings::full()
    } else {
        Settings::quick()
    };
    if let Some(runs) = hereabouts_kit::arg_value(&args, "--runs") {
        settings.runs = runs;
    }
    let only = hereabouts_kit::arg_list(&args, "--only");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("faults: no runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings, only)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("faults: could not run: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the matrix; `Ok(false)` when an invariant broke.
async fn run(settings: Settings, only: Vec<String>) -> anyhow::Result<bool> {
    let started = Instant::now();
    let all = scenarios::all();
    if let Some(unknown) = only.iter().find(|o| !all.iter().any(|s| s.name == *o)) {
        anyhow::bail!(
            "--only: no scenario {unknown:?}; the scenarios are {}",
            all.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
    }
    let kit = hereabouts_kit::kit().await?;
    hereabouts_kit::install_crds(&kit.client).await?;
    let shared = bed::Shared::new(&kit, &settings).await?;
    eprintln!(
        "[faults] {} run: {} runs of each scenario, storms of {} ADDs, {} controller replicas",
        settings.mode, settings.runs, settings.storm, settings.replicas
    );
    let mut rows = Vec::new();
    for scenario in all
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
    {
        rows.push(scenarios::run(scenario, &shared, &settings).await);
    }
    let table = report::table(&settings, &rows, started.elapsed());
    println!("{table}");
    if settings.mode == "full" {
        let path = report::write(&table)?;
        eprintln!("[faults] wrote {}", path.display());
    }
    let failed: Vec<String> = rows.iter().flat_map(report::Row::failures).collect();
    if failed.is_empty() {
        eprintln!("[faults] every invariant held");
        Ok(true)
    } else {
        eprintln!("[faults] FAILED:");
        for f in &failed {
            eprintln!("[faults]   {f}");
        }
        Ok(false)
    }
}
