//! One row per scenario, the table, and the file the full run writes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::bed::Settings;

/// What one run of a scenario saw.
#[derive(Clone, Debug, Default)]
pub struct RunRecord {
    /// ADD calls made (retries included, deliberate kills excluded).
    pub adds: usize,
    /// Failed ADDs by CNI code ("none" when the plugin printed no code).
    pub failed: BTreeMap<String, usize>,
    pub killed: usize,
    pub duplicates: usize,
    pub lost: usize,
    /// Allocations plus reservations left after DEL of everything.
    pub leaks: usize,
    /// From the fault to the moment the invariant it threatened held again
    /// (every ADD answered, or the orphaned addresses released).
    pub recovery: Option<Duration>,
    /// Each broken invariant, with what was seen.
    pub violations: Vec<String>,
    /// What the API server held when something went wrong.
    pub evidence: Vec<String>,
}

impl RunRecord {
    pub fn violation(&mut self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("[faults]     VIOLATION: {what}");
        self.violations.push(what);
    }

    pub fn evidence(&mut self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("[faults]     evidence: {what}");
        self.evidence.push(what);
    }
}

/// A scenario over all its runs.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub scenario: &'static str,
    pub runs: Vec<RunRecord>,
    pub wall: Duration,
}

impl Row {
    /// "scenario: run N: invariant ..." for every violation.
    pub fn failures(&self) -> Vec<String> {
        self.runs
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                r.violations
                    .iter()
                    .map(move |v| format!("{}: run {}: {v}", self.scenario, i + 1))
            })
            .collect()
    }

    fn sum(&self, f: impl Fn(&RunRecord) -> usize) -> usize {
        self.runs.iter().map(f).sum()
    }
}

pub fn table(settings: &Settings, rows: &[Row], wall: Duration) -> String {
    let mut out = format!(
        "Fault suite, {} run ({} runs per scenario, storms of {} ADDs, {} replicas), {:.0} s in all\n\n",
        settings.mode,
        settings.runs,
        settings.storm,
        settings.replicas,
        wall.as_secs_f64()
    );
    out.push_str("| scenario | runs | ADDs | duplicates | lost | leaks | failed ADDs by code | killed | recovery max (s) | result |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---|---:|---:|---|\n");
    for row in rows {
        let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &row.runs {
            for (c, n) in &r.failed {
                *codes.entry(c).or_default() += n;
            }
        }
        let codes = if codes.is_empty() {
            "-".to_owned()
        } else {
            codes
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let recovery = row
            .runs
            .iter()
            .filter_map(|r| r.recovery)
            .max()
            .map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64()));
        let broken = row.sum(|r| r.violations.len());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.runs.len(),
            row.sum(|r| r.adds),
            row.sum(|r| r.duplicates),
            row.sum(|r| r.lost),
            row.sum(|r| r.leaks),
            codes,
            row.sum(|r| r.killed),
            recovery,
            if broken == 0 {
                "ok".to_owned()
            } else {
                format!("FAIL ({broken})")
            }
        ));
    }
    let failures: Vec<String> = rows.iter().flat_map(Row::failures).collect();
    if !failures.is_empty() {
        out.push_str("\nBroken invariants:\n\n");
        for f in failures {
            out.push_str(&format!("- {f}\n"));
        }
        out.push_str("\nEvidence:\n\n");
        for row in rows {
            for (i, r) in row.runs.iter().enumerate() {
                for e in &r.evidence {
                    out.push_str(&format!("- {}: run {}: {e}\n", row.scenario, i + 1));
                }
            }
        }
    }
    out
}

/// `bench/results/faults/faults.md`.
pub fn write(table: &str) -> anyhow::Result<PathBuf> {
    let dir = hereabouts_kit::repo_root()
        .join("bench")
        .join("results")
        .join("faults");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("faults.md");
    std::fs::write(&path, table)?;
    Ok(path)
}
