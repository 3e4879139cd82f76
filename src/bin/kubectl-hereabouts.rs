//! `kubectl-hereabouts`: the kubectl plugin (`kubectl hereabouts ...`) for
//! usage, audits and manual release. The work is in `hereabouts_admin`;
//! this file parses flags and prints.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hereabouts_admin::{audit, inventory, query, release, table};
use serde_json::json;

/// Cluster-wide IPAM for Multus secondary networks: pool usage, who holds
/// an address, a consistency audit and manual release.
///
/// Exit status: 0 done (and, for `check`, consistent); 1 `check` found
/// problems or `who` found no holder; 2 an error (bad flags, the API
/// server, a refused or unconfirmed release).
#[derive(Debug, Parser)]
#[command(name = "kubectl-hereabouts", bin_name = "kubectl hereabouts", version)]
struct Cli {
    /// Namespace of the IPPools and reservations (default: the kubeconfig
    /// context's namespace, else kube-system).
    #[arg(long, short = 'n', global = true, env = "HEREABOUTS_NAMESPACE")]
    namespace: Option<String>,
    /// Path to a kubeconfig (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Range, size, allocated and free addresses of every pool, shards
    /// merged.
    Pools,
    /// Which pod holds an address: allocations, and the claims and
    /// reservations that name it.
    Who {
        ip: IpAddr,
        /// Only IPClaims of this namespace (default: all).
        #[arg(long)]
        claim_namespace: Option<String>,
    },
    /// Audit: allocations whose pod does not exist, reservations without
    /// allocation, claims without allocation, addresses held twice,
    /// malformed entries. Exits 1 when anything is found.
    Check {
        /// Only IPClaims of this namespace (default: all).
        #[arg(long)]
        claim_namespace: Option<String>,
    },
    /// Release an address by hand: its IPPool entry (compare-and-swap), its
    /// reservation and the IPClaims answered with it. Shows what it would
    /// do unless --yes.
    Release {
        ip: IpAddr,
        /// The pool (range) to release it from, when several hold it.
        #[arg(long)]
        pool: Option<String>,
        /// Do it.
        #[arg(long)]
        yes: bool,
        /// Release even though the holding pod still exists.
        #[arg(long)]
        force: bool,
        /// Only IPClaims of this namespace (default: all).
        #[arg(long)]
        claim_namespace: Option<String>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (client, namespace) = hereabouts_admin::connect(
        cli.kubeconfig.as_deref(),
        cli.context.as_deref(),
        cli.namespace.as_deref(),
    )
    .await?;
    match cli.command {
        Command::Pools => {
            let (pools, malformed) = inventory::load_pools(&client, &namespace).await?;
            for m in &malformed {
                eprintln!("warning: IPPool {} is malformed: {}", m.name, m.error);
            }
            let usage = query::usage(&pools);
            if cli.output == Output::Json {
                print_json(&json!({"namespace": namespace, "pools": usage}))?;
            } else if usage.is_empty() {
                eprintln!("no IPPools in namespace {namespace}");
            } else {
                let rows: Vec<Vec<String>> = usage
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.range.clone(),
                            p.shards.to_string(),
                            dash(p.size.as_deref()),
                            p.allocated.to_string(),
                            dash(p.free.as_deref()),
                            p.exhausted.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(
                        &[
                            "NAME",
                            "RANGE",
                            "SHARDS",
                            "SIZE",
                            "ALLOCATED",
                            "FREE",
                            "EXHAUSTED"
                        ],
                        &rows
                    )
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Who {
            ip,
            claim_namespace,
        } => {
            let inv =
                inventory::Inventory::load(&client, &namespace, claim_namespace.as_deref()).await?;
            let holders = query::who(&inv, ip);
            if cli.output == Output::Json {
                print_json(&json!({"ip": ip, "namespace": namespace, "holders": holders}))?;
            } else if !holders.is_empty() {
                let rows: Vec<Vec<String>> = holders
                    .iter()
                    .map(|h| {
                        vec![
                            h.ip.clone(),
                            dash(h.pool.as_deref()),
                            dash(h.state),
                            dash(h.until.as_deref()),
                            h.pod.clone(),
                            h.interface.clone(),
                            dash(h.ipamclaim.as_deref()),
                            audit::short(&h.container_id).to_owned(),
                            h.pod_exists.to_string(),
                            h.allocated.to_string(),
                            dash(h.claim.as_deref()),
                            dash(h.node.as_deref()),
                            dash(h.reservation.as_deref()),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(
                        &[
                            "IP",
                            "POOL",
                            "STATE",
                            "UNTIL",
                            "POD",
                            "INTERFACE",
                            "IPAMCLAIM",
                            "CONTAINER",
                            "POD-EXISTS",
                            "ALLOCATED",
                            "CLAIM",
                            "NODE",
                            "RESERVATION"
                        ],
                        &rows
                    )
                );
            }
            if holders.is_empty() {
                eprintln!("nobody holds {ip} in the pools of namespace {namespace}");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { claim_namespace } => {
            let inv =
                inventory::Inventory::load(&client, &namespace, claim_namespace.as_deref()).await?;
            let findings = audit::audit(&inv);
            if cli.output == Output::Json {
                print_json(&json!({
                    "namespace": namespace,
                    "consistent": findings.is_empty(),
                    "findings": findings,
                }))?;
            } else if findings.is_empty() {
                let allocations: usize = inv.pools.iter().map(|p| p.allocations.len()).sum();
                println!(
                    "consistent: {} pools, {allocations} allocations, {} reservations, {} claims",
                    inv.pools.len(),
                    inv.reservations.len(),
                    inv.claims.len()
                );
            } else {
                let rows: Vec<Vec<String>> = findings
                    .iter()
                    .map(|f| {
                        let (kind, object, detail) = f.describe();
                        vec![kind.to_owned(), object, detail]
                    })
                    .collect();
                print!("{}", table::render(&["FINDING", "OBJECT", "DETAIL"], &rows));
            }
            Ok(if findings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Release {
            ip,
            pool,
            yes,
            force,
            claim_namespace,
        } => {
            let inv =
                inventory::Inventory::load(&client, &namespace, claim_namespace.as_deref()).await?;
            let plan = release::plan(&inv, ip, pool.as_deref())?;
            if !yes {
                if cli.output == Output::Json {
                    print_json(&json!({"plan": plan, "outcome": null}))?;
                } else {
                    print!("{}", describe_plan(&plan, "would "));
                }
                let also = if plan.pod_exists {
                    format!(" and --force (pod {} still exists)", plan.pod)
                } else {
                    String::new()
                };
                anyhow::bail!("nothing changed: pass --yes{also} to release {ip}");
            }
            let outcome = release::execute(&client, &plan, force).await?;
            if cli.output == Output::Json {
                print_json(&json!({"plan": plan, "outcome": outcome}))?;
            } else if outcome.released {
                print!("{}", describe_plan(&plan, ""));
            } else {
                println!("{ip}: the entry in IPPool {} was already gone", plan.object);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The plan as sentences, each starting with `mood` ("would " or "").
fn describe_plan(plan: &release::Plan, mood: &str) -> String {
    let (release, delete) = if mood.is_empty() {
        ("released", "deleted")
    } else {
        ("release", "delete")
    };
    let mut out = format!(
        "{mood}{release} {} from IPPool {}/{} (entry {:?}), held by {} {} (container {})\n",
        plan.ip,
        plan.namespace,
        plan.object,
        plan.key,
        plan.pod,
        plan.interface,
        audit::short(&plan.container_id)
    );
    if let Some(r) = &plan.reservation {
        out.push_str(&format!(
            "{mood}{delete} OverlappingRangeIPReservation {}/{}\n",
            r.namespace, r.name
        ));
    }
    for c in &plan.claims {
        out.push_str(&format!(
            "{mood}{delete} IPClaim {}/{}\n",
            c.namespace, c.name
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn addresses_are_checked_where_they_enter() {
        let e = Cli::try_parse_from(["kubectl-hereabouts", "who", "10.0.0.300"])
            .expect_err("bad ip")
            .to_string();
        assert!(e.contains("10.0.0.300") && e.contains("<IP>"), "{e}");
    }
}
