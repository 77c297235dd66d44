//! `cleandift eval merge DIR… --out MERGED`: the folders of the shards of
//! one evaluation (`eval --shard K/N --out DIR`) joined into the table,
//! JSON and figure of a single run, with the same numbers. Refused, by
//! name: folders of other settings, a shard missing or given twice, a shard
//! that has not finished, and a pair held by two shards.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::eval_run::{Folder, Manifest, write_eval_outputs};
use crate::eval::records::{diff_settings, merge_shards, read_records, report_of};

#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// The shards' folders, all N of them, in any order.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// The folder for the merged outputs (created): report.txt and
    /// report.json, or a sweep's sweep.csv, sweep.json, sweep.png, sweep.svg.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also write the merged JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(m: &MergeArgs) -> anyhow::Result<()> {
    let mut shards = Vec::new();
    for dir in &m.dirs {
        let manifest = Manifest::read(dir)?.with_context(|| {
            format!(
                "{} is not an evaluation folder (no {}): give the --out folders of `eval --shard K/N`",
                dir.display(),
                super::eval_run::MANIFEST
            )
        })?;
        let Some(shard) = manifest.shard else {
            bail!(
                "{} holds an unsharded evaluation: its report.json is already the whole run; merge only the folders of `eval --shard K/N`",
                dir.display()
            );
        };
        shards.push((dir.clone(), shard, manifest));
    }
    let (first_dir, first_shard, first) = shards[0].clone();
    let (first_dir, first_shard, first) = (&first_dir, &first_shard, &first);
    for (dir, shard, manifest) in &shards[1..] {
        let changes = diff_settings(&first.settings, &manifest.settings);
        if !changes.is_empty() {
            let list: Vec<String> = changes.iter().map(|c| format!("  {c}")).collect();
            bail!(
                "{} (shard {shard}) was run with other settings than {} (shard {first_shard}); these differ ({} -> {}):\n{}\nshards of one evaluation must share every setting",
                dir.display(),
                first_dir.display(),
                first_dir.display(),
                dir.display(),
                list.join("\n")
            );
        }
        if manifest.plan != first.plan {
            bail!(
                "{} (shard {shard}) planned other outputs than {}: {:?} vs {:?}",
                dir.display(),
                first_dir.display(),
                manifest.plan.runs,
                first.plan.runs
            );
        }
        if shard.count != first_shard.count {
            bail!(
                "{} is shard {shard} but {} is shard {first_shard}: shards of one evaluation split it into the same N",
                dir.display(),
                first_dir.display()
            );
        }
    }
    let n = first_shard.count;
    let mut by_index: BTreeMap<usize, Vec<&PathBuf>> = BTreeMap::new();
    for (dir, shard, _) in &shards {
        by_index.entry(shard.index).or_default().push(dir);
    }
    for (k, dirs) in &by_index {
        if dirs.len() > 1 {
            let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            bail!(
                "shard {k}/{n} is given twice: {}; give each shard once",
                names.join(", ")
            );
        }
    }
    let missing: Vec<String> = (0..n)
        .filter(|k| !by_index.contains_key(k))
        .map(|k| format!("{k}/{n}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing shard{} {} of {n}: run `eval --shard K/N --out DIR` for {} and give its folder too",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "each" }
        );
    }
    shards.sort_by_key(|(_, s, _)| s.index);
    let plan = first.plan.clone();
    let mut reports = Vec::new();
    for run in &plan.runs {
        let mut parts = Vec::new();
        for (dir, shard, _) in &shards {
            let path = Folder::records_path(dir, run);
            let records = read_records(&path)?.with_context(|| {
                format!(
                    "shard {shard} ({}) has no records of run {run}: it has not got that far; rerun it (the same command continues it)",
                    dir.display()
                )
            })?;
            if records.header.shard != Some(*shard) {
                bail!(
                    "{} holds the records of shard {}, but its folder is shard {shard}: it was copied from another folder",
                    path.display(),
                    records
                        .header
                        .shard
                        .map_or_else(|| "none".to_string(), |s| s.to_string())
                );
            }
            if records.torn.is_some() {
                bail!(
                    "shard {shard} ({}) was interrupted in run {run}: rerun it (the same command continues it) before merging",
                    dir.display()
                );
            }
            parts.push(records);
        }
        let (header, lines) = merge_shards(parts)?;
        reports.push(report_of(&header, lines)?);
    }
    std::fs::create_dir_all(&m.out)
        .with_context(|| format!("creating the output folder {}", m.out.display()))?;
    eprintln!("merged {n} shards of {}", first_dir.display());
    match &plan.sweep {
        Some(spec) => spec.finish(&m.out, reports, m.json.as_deref()),
        None => write_eval_outputs(&m.out, &plan, &reports, m.json.as_deref()),
    }
}
