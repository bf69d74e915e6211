//! `cargo xtask bench avmnist`: every configuration of `configs/avmnist/` trained with
//! several seeds on an AV-MNIST protocol built by `fusion data avmnist`; rows (accuracy,
//! accuracy with a modality absent, parameters, speed, memory) go to
//! `bench/results/avmnist.json` and to a marked section of BENCHMARKS.md.
//!
//! Protocols (both with MultiBench's image degradation, PCA keeping 25 % of the variance):
//! - `clean`: MultiBench's. FSDD's own split (recordings 0–4 of every speaker and digit are
//!   test, the others train), so test speakers are heard in training, test recordings are not.
//! - `hard`: `clean` plus white noise mixed into every recording at an SNR drawn uniformly
//!   from [−10, +5] dB, and speaker-disjoint test: theo and yweweler (two of FSDD's six
//!   speakers) are only heard in test. On clean audio the LeNet hears the digit almost
//!   always (≈ 98 %), so fusion methods cannot be told apart; noise and unseen voices take
//!   audio alone far below the fused model, which has to weigh both modalities.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::paths;

/// The hard protocol's held-out speakers and SNR range (dB).
const HARD_TEST_SPEAKERS: &str = "theo,yweweler";
const HARD_SNR_DB: &str = "-10,5";

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub protocol: Protocol,
    pub seeds: u64,
    pub epochs: Option<usize>,
    pub sizes: [usize; 3],
    pub configs: Option<Vec<String>>,
    pub out: PathBuf,
    pub benchmarks_md: Option<PathBuf>,
    pub fusion: Option<PathBuf>,
    pub threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Clean,
    Hard,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Hard => "hard",
        }
    }

    /// `fusion data avmnist` options beyond the sizes and seed.
    fn data_args(self) -> Vec<String> {
        let mut args = vec!["--pca-energy".to_string(), "0.25".into()];
        if self == Self::Hard {
            args.extend([
                "--test-speakers".into(),
                HARD_TEST_SPEAKERS.into(),
                format!("--noise-snr-db={HARD_SNR_DB}"),
            ]);
        }
        args
    }
}

const USAGE: &str = "usage: cargo xtask bench avmnist [--protocol clean|hard] [--seeds N] [--epochs N] \
[--train N --val N --test N] [--configs a,b,...] [--out FILE] [--no-benchmarks-md] [--fusion BIN] [--threads N]";

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let root = paths::project_root();
        let mut options = Self {
            protocol: Protocol::Clean,
            seeds: 3,
            epochs: None,
            sizes: [55_000, 5_000, 10_000],
            configs: None,
            out: root.join("bench/results/avmnist.json"),
            benchmarks_md: Some(root.join("BENCHMARKS.md")),
            fusion: None,
            threads: 2,
        };
        let mut rest = args.iter();
        let Some(dataset) = rest.next() else {
            bail!("{USAGE}");
        };
        if dataset != "avmnist" {
            bail!("unknown benchmark `{dataset}` (known: avmnist)\n{USAGE}");
        }
        while let Some(flag) = rest.next() {
            if flag == "--no-benchmarks-md" {
                options.benchmarks_md = None;
                continue;
            }
            let value = rest.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            let number = || -> Result<usize> {
                value
                    .parse()
                    .with_context(|| format!("{flag}: `{value}` is not a whole number"))
            };
            match flag.as_str() {
                "--protocol" => {
                    options.protocol = match value.as_str() {
                        "clean" => Protocol::Clean,
                        "hard" => Protocol::Hard,
                        other => bail!("--protocol: `{other}` is not clean or hard"),
                    }
                }
                "--seeds" => options.seeds = number()? as u64,
                "--epochs" => options.epochs = Some(number()?),
                "--train" => options.sizes[0] = number()?,
                "--val" => options.sizes[1] = number()?,
                "--test" => options.sizes[2] = number()?,
                "--threads" => options.threads = number()?,
                "--configs" => options.configs = Some(value.split(',').map(str::to_string).collect()),
                "--out" => options.out = PathBuf::from(value),
                "--fusion" => options.fusion = Some(PathBuf::from(value)),
                other => bail!("unknown option `{other}`\n{USAGE}"),
            }
        }
        if options.seeds == 0 || options.threads == 0 || options.sizes.contains(&0) {
            bail!("--seeds, --threads, --train, --val and --test must be at least 1");
        }
        Ok(options)
    }
}

/// Runs the benchmark; returns the rows written.
pub fn run(options: &Options) -> Result<Vec<Value>> {
    let fusion = match &options.fusion {
        Some(binary) => binary.clone(),
        None => {
            crate::run_checked(crate::cargo().args(["build", "--release", "-p", "fusion-cli"]))?;
            paths::project_root().join("target/release/fusion")
        }
    };
    let configs = config_files(options.configs.as_deref())?;
    let [train, val, test] = options.sizes;
    let protocol = options.protocol.name();
    let data = paths::data_dir()
        .join("avmnist")
        .join(format!("{protocol}-{train}-{val}-{test}"));
    build_dataset(&fusion, options, &data)?;
    let work = paths::project_root()
        .join("target/bench/avmnist")
        .join(format!("{protocol}-{train}-{val}-{test}"));
    let device = device_description(options.threads);
    let mut rows = Vec::new();
    for config_path in &configs {
        let name = config_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(config_path).with_context(|| format!("reading {}", config_path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
        let mut seeds = Vec::new();
        for seed in 0..options.seeds {
            println!("== avmnist {protocol}: {name}, seed {seed}");
            seeds.push(train_one(&fusion, options, &config, &name, seed, &data, &work)?);
        }
        rows.push(row(&name, &config, protocol, &seeds, &device, train));
        // Written after every configuration: a long bench stopped halfway keeps its rows.
        write_results(&options.out, protocol, &rows)?;
    }
    println!("{}", markdown_table(&rows));
    if let Some(md) = &options.benchmarks_md {
        update_benchmarks_md(md, protocol, options, &rows)?;
    }
    Ok(rows)
}

/// The configurations: all of `configs/avmnist/` (sorted), or the named ones.
fn config_files(names: Option<&[String]>) -> Result<Vec<PathBuf>> {
    let folder = paths::project_root().join("configs/avmnist");
    let mut all: Vec<PathBuf> = std::fs::read_dir(&folder)
        .with_context(|| format!("reading {}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    all.sort();
    let Some(names) = names else {
        return Ok(all);
    };
    names
        .iter()
        .map(|name| {
            let path = folder.join(format!("{name}.json"));
            if path.exists() {
                Ok(path)
            } else {
                bail!("no configuration `{name}` in {}", folder.display())
            }
        })
        .collect()
}

/// Builds the protocol's dataset once (into a temporary folder renamed when complete).
fn build_dataset(fusion: &Path, options: &Options, data: &Path) -> Result<()> {
    if data.join("manifest.jsonl").exists() {
        return Ok(());
    }
    crate::data::run(&["mnist".into(), "fsdd".into()])?;
    let partial = data.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    let [train, val, test] = options.sizes;
    let mut command = Command::new(fusion);
    command
        .args(["data", "avmnist", "--mnist"])
        .arg(paths::data_dir().join("mnist"))
        .arg("--fsdd")
        .arg(paths::data_dir().join("fsdd/recordings"))
        .arg("--out")
        .arg(&partial)
        .args([
            "--train",
            &train.to_string(),
            "--val",
            &val.to_string(),
            "--test",
            &test.to_string(),
        ])
        .args(options.protocol.data_args());
    crate::run_checked(&mut command)?;
    std::fs::rename(&partial, data).with_context(|| format!("renaming {} to {}", partial.display(), data.display()))
}

/// What one seed of one configuration gave.
#[derive(Debug, Clone, PartialEq)]
struct SeedResult {
    accuracy: f64,
    parameters: f64,
    epoch_seconds: Vec<f64>,
    peak_rss_mb: Option<f64>,
    /// Accuracy with only these modalities, by the modality kept.
    only: BTreeMap<String, f64>,
}

fn train_one(
    fusion: &Path,
    options: &Options,
    config: &Value,
    name: &str,
    seed: u64,
    data: &Path,
    work: &Path,
) -> Result<SeedResult> {
    let mut config = config.clone();
    config["manifest"] = json!(data.join("manifest.jsonl"));
    config["cache"] = json!(work.join("cache"));
    config["train"]["seed"] = json!(seed);
    if let Some(epochs) = options.epochs {
        config["train"]["epochs"] = json!(epochs);
    }
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let config_path = work.join(format!("{name}-{seed}.json"));
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("writing {}", config_path.display()))?;
    // A folder from an earlier bench of the same configuration is resumed (a finished one
    // is only evaluated); one of another configuration is replaced.
    let epochs = config["train"]["epochs"].as_u64().unwrap_or(0);
    let run = work.join(format!("runs/{name}-e{epochs}-{seed}"));
    let threads = options.threads.to_string();
    let fusion_json = |args: &[&str]| -> Result<Value> {
        let output = Command::new(fusion)
            .args(args)
            .args(["--device", "cpu", "--json"])
            .env("OMP_NUM_THREADS", &threads)
            .env("RAYON_NUM_THREADS", &threads)
            .output()
            .with_context(|| format!("cannot start {}", fusion.display()))?;
        if !output.status.success() {
            bail!(
                "fusion {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        serde_json::from_slice(&output.stdout).context("fusion printed no JSON")
    };
    let config_arg = config_path.to_string_lossy().into_owned();
    let run_arg = run.to_string_lossy().into_owned();
    let train_args = ["train", "--config", &config_arg, "--run", &run_arg];
    let trained = match fusion_json(&train_args) {
        Err(e) if e.to_string().contains("holds a run of another configuration") => {
            std::fs::remove_dir_all(&run).with_context(|| format!("removing {}", run.display()))?;
            fusion_json(&train_args)?
        }
        other => other?,
    };
    let number = |value: &Value, what: &str| value.as_f64().with_context(|| format!("fusion train: no {what}"));
    let accuracy = number(&trained["eval"]["metrics"]["accuracy"], "test accuracy")?;
    let epoch_seconds = trained["epochs"]
        .as_array()
        .context("fusion train: no epochs")?
        .iter()
        .map(|e| number(&e["seconds"], "epoch seconds"))
        .collect::<Result<Vec<_>>>()?;
    let mut only = BTreeMap::new();
    if config["modalities"].as_array().is_some_and(|m| m.len() > 1) {
        fusion_json(&["robustness", "--run", &run_arg, "--no-noise"])?;
        let text = std::fs::read_to_string(run.join("robustness.json"))
            .with_context(|| format!("reading {}/robustness.json", run.display()))?;
        let robustness: Value = serde_json::from_str(&text)?;
        for subset in robustness["subsets"].as_array().into_iter().flatten() {
            if let (Some([kept]), Some(accuracy)) = (
                subset["modalities"].as_array().map(Vec::as_slice),
                subset["accuracy"].as_f64(),
            ) && let Some(kept) = kept.as_str()
            {
                only.insert(kept.to_string(), accuracy);
            }
        }
    }
    // A process that resumed a finished run trained nothing: its memory says nothing.
    let trained_here = trained["resumed_from"]
        .as_u64()
        .is_some_and(|r| (r as usize) < epoch_seconds.len());
    Ok(SeedResult {
        accuracy,
        parameters: number(&trained["parameters"], "parameter count")?,
        epoch_seconds,
        peak_rss_mb: trained["peak_rss_mb"].as_f64().filter(|_| trained_here),
        only,
    })
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, variance.sqrt())
}

/// `unimodal`, `early`, `late` or `hybrid` (CentralNet mixes per-modality and fused
/// branches, so it counts as hybrid).
fn family(config: &Value) -> &'static str {
    if config["modalities"].as_array().is_some_and(|m| m.len() == 1) {
        return "unimodal";
    }
    match config["fusion"]["family"].as_str() {
        Some("early") => "early",
        Some("late") => "late",
        _ => "hybrid",
    }
}

fn encoders(config: &Value) -> String {
    let kinds: Vec<&str> = config["modalities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["encoder"]["kind"].as_str())
        .collect();
    if kinds.iter().all(|k| *k == "multibench_lenet") {
        "lenet".into()
    } else {
        kinds.join("+")
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn row(name: &str, config: &Value, protocol: &str, seeds: &[SeedResult], device: &str, train_samples: usize) -> Value {
    let (acc_mean, acc_std) = mean_std(&seeds.iter().map(|s| s.accuracy).collect::<Vec<_>>());
    let epoch_s: Vec<f64> = seeds.iter().flat_map(|s| s.epoch_seconds.iter().copied()).collect();
    let (epoch_mean, _) = mean_std(&epoch_s);
    let only = |modality: &str| {
        let values: Vec<f64> = seeds.iter().filter_map(|s| s.only.get(modality).copied()).collect();
        (values.len() == seeds.len() && !values.is_empty()).then(|| round(mean_std(&values).0, 4))
    };
    json!({
        "config": name,
        "family": family(config),
        "encoders": encoders(config),
        "fusion": config["fusion"],
        "protocol": protocol,
        "acc_mean": round(acc_mean, 4),
        "acc_std": round(acc_std, 4),
        "seeds": seeds.len(),
        "params": seeds.first().map_or(0.0, |s| s.parameters),
        "epochs": round(epoch_s.len() as f64 / seeds.len().max(1) as f64, 1),
        "epoch_s": round(epoch_mean, 2),
        "samples_per_s": round(train_samples as f64 / epoch_mean.max(1e-9), 1),
        "peak_rss_mb": seeds.iter().filter_map(|s| s.peak_rss_mb).fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b)))).map(|v| round(v, 0)),
        "acc_audio_absent": only("image"),
        "acc_image_absent": only("audio"),
        "train_samples": train_samples,
        "device": device,
    })
}

/// `cpu: MODEL, N threads`.
fn device_description(threads: usize) -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("cpu: {model}, {threads} threads")
}

/// Writes `rows` into `out`, atomically, replacing the rows of the same protocol and
/// configuration (the others stay).
fn write_results(out: &Path, protocol: &str, rows: &[Value]) -> Result<()> {
    let mut all: Vec<Value> = std::fs::read_to_string(out)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    all.retain(|old| old["protocol"] != protocol || rows.iter().all(|new| new["config"] != old["config"]));
    all.extend(rows.iter().cloned());
    write_atomic(out, &(serde_json::to_string_pretty(&all)? + "\n"))
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("renaming to {}", path.display()))
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "–".into(),
        Value::Number(n) => n.as_f64().map_or_else(
            || n.to_string(),
            |f| {
                if f.fract() == 0.0 {
                    format!("{f:.0}")
                } else {
                    format!("{f}")
                }
            },
        ),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The rows as a Markdown table.
pub fn markdown_table(rows: &[Value]) -> String {
    let columns = [
        ("config", "config"),
        ("family", "family"),
        ("encoders", "encoders"),
        ("acc_mean", "test acc"),
        ("acc_std", "± std"), // population standard deviation over the seeds
        ("acc_audio_absent", "audio absent"),
        ("acc_image_absent", "image absent"),
        ("params", "params"),
        ("epoch_s", "epoch s"),
        ("samples_per_s", "samples/s"),
        ("peak_rss_mb", "peak RSS MB"),
    ];
    let mut table = format!(
        "| {} |\n|{}\n",
        columns.map(|c| c.1).join(" | "),
        " --- |".repeat(columns.len())
    );
    for row in rows {
        let cells: Vec<String> = columns.iter().map(|(key, _)| cell(&row[*key])).collect();
        table.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    table
}

/// Rewrites the text between `<!-- avmnist-PROTOCOL:begin -->` and `…:end -->` in
/// BENCHMARKS.md (appending the section if it is not there).
fn update_benchmarks_md(path: &Path, protocol: &str, options: &Options, rows: &[Value]) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let [train, val, test] = options.sizes;
    let device = rows.first().and_then(|r| r["device"].as_str()).unwrap_or("cpu");
    let body = format!(
        "Protocol `{protocol}`, {train} train / {val} val / {test} test samples, {} seed(s), {device}.\n\
         `cargo xtask bench avmnist --protocol {protocol} --seeds {} --train {train} --val {val} --test {test}{}`\n\n{}",
        options.seeds,
        options.seeds,
        options.epochs.map(|e| format!(" --epochs {e}")).unwrap_or_default(),
        markdown_table(rows)
    );
    write_atomic(path, &replace_section(&text, &format!("avmnist-{protocol}"), &body))
}

fn replace_section(text: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let section = format!("{begin}\n{body}{end}");
    match (text.find(&begin), text.find(&end)) {
        (Some(start), Some(stop)) if stop > start => {
            format!("{}{section}{}", &text[..start], &text[stop + end.len()..])
        }
        _ => format!("{}\n{section}\n", text.trim_end()),
    }
}

/// A 1,000-sample build through the whole command (the test `cargo xtask test` runs).
pub fn smoke(fusion: &Path) -> Result<()> {
    let out = paths::project_root().join("target/bench/avmnist-smoke.json");
    // Trained afresh each time: a reused run folder would train nothing and report no memory.
    let work = paths::project_root().join("target/bench/avmnist/hard-700-100-200");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let options = Options {
        protocol: Protocol::Hard,
        seeds: 1,
        epochs: Some(1),
        sizes: [700, 100, 200],
        configs: Some(vec!["image_only".into(), "concat".into()]),
        out: out.clone(),
        benchmarks_md: None,
        fusion: Some(fusion.to_path_buf()),
        threads: 2,
    };
    let rows = run(&options)?;
    let written: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    if written != rows || rows.len() != 2 {
        bail!("{}: expected the 2 rows run, found {written:?}", out.display());
    }
    for row in &rows {
        for key in [
            "config",
            "family",
            "encoders",
            "protocol",
            "acc_mean",
            "acc_std",
            "seeds",
            "params",
            "epoch_s",
            "samples_per_s",
            "peak_rss_mb",
            "device",
        ] {
            if row[key].is_null() {
                bail!("bench row without `{key}`: {row}");
            }
        }
        let accuracy = row["acc_mean"].as_f64().unwrap_or(-1.0);
        if !(0.0..=1.0).contains(&accuracy) || row["params"].as_f64().unwrap_or(0.0) < 1000.0 {
            bail!("implausible bench row: {row}");
        }
    }
    let concat = &rows[1];
    if concat["family"] != "early" || concat["acc_audio_absent"].is_null() || concat["acc_image_absent"].is_null() {
        bail!("the concat row lacks its family or its missing-modality accuracies: {concat}");
    }
    if rows[0]["family"] != "unimodal" || rows[0]["encoders"] != "lenet" {
        bail!("the image-only row is not a unimodal LeNet row: {}", rows[0]);
    }
    println!("bench avmnist on a 1,000-sample build: rows complete");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn options_parse_and_refuse_nonsense() {
        let args = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let options = Options::parse(&args("avmnist --protocol hard --seeds 2 --train 100 --configs a,b")).unwrap();
        assert_eq!(options.protocol, Protocol::Hard);
        assert_eq!(options.seeds, 2);
        assert_eq!(options.sizes, [100, 5_000, 10_000]);
        assert_eq!(options.configs, Some(vec!["a".into(), "b".into()]));
        assert!(Options::parse(&args("imagenet")).is_err());
        assert!(Options::parse(&args("avmnist --protocol noisy")).is_err());
        assert!(Options::parse(&args("avmnist --seeds 0")).is_err());
        assert!(Options::parse(&args("avmnist --seeds")).is_err());
        assert!(Options::parse(&args("avmnist --sedes 3")).is_err());
    }

    #[test]
    fn rows_average_seeds_and_name_family_and_encoders() {
        let seed = |accuracy: f64, image: f64| SeedResult {
            accuracy,
            parameters: 1234.0,
            epoch_seconds: vec![2.0, 4.0],
            peak_rss_mb: Some(accuracy * 1000.0),
            only: BTreeMap::from([("image".to_string(), image), ("audio".to_string(), 0.5)]),
        };
        let config = json!({
            "modalities": [{"encoder": {"kind": "multibench_lenet"}}, {"encoder": {"kind": "multibench_lenet"}}],
            "fusion": {"family": "central_net", "depth": 2}
        });
        let row = row("c", &config, "hard", &[seed(0.8, 0.6), seed(0.9, 0.7)], "cpu", 300);
        assert_eq!(row["acc_mean"], json!(0.85));
        assert_eq!(row["acc_std"], json!(0.05));
        assert_eq!(row["family"], json!("hybrid"));
        assert_eq!(row["encoders"], json!("lenet"));
        assert_eq!(row["epoch_s"], json!(3.0));
        assert_eq!(row["samples_per_s"], json!(100.0));
        assert_eq!(row["peak_rss_mb"], json!(900.0));
        assert_eq!(row["acc_audio_absent"], json!(0.65));
        assert_eq!(row["acc_image_absent"], json!(0.5));
        let unimodal = json!({"modalities": [{"encoder": {"kind": "resnet18"}}], "fusion": {"family": "early"}});
        assert_eq!(family(&unimodal), "unimodal");
        assert_eq!(encoders(&unimodal), "resnet18");
    }

    #[test]
    fn sections_are_replaced_or_appended() {
        let text = "# B\n\n<!-- avmnist-clean:begin -->\nold\n<!-- avmnist-clean:end -->\n\nafter\n";
        let replaced = replace_section(text, "avmnist-clean", "new\n");
        assert_eq!(
            replaced,
            "# B\n\n<!-- avmnist-clean:begin -->\nnew\n<!-- avmnist-clean:end -->\n\nafter\n"
        );
        let appended = replace_section(&replaced, "avmnist-hard", "h\n");
        assert!(appended.starts_with(&replaced.trim_end().to_string()));
        assert!(appended.ends_with("<!-- avmnist-hard:begin -->\nh\n<!-- avmnist-hard:end -->\n"));
    }

    #[test]
    fn results_replace_only_the_same_protocol_and_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r/avmnist.json");
        let row = |protocol: &str, config: &str, acc: f64| json!({"protocol": protocol, "config": config, "acc": acc});
        write_results(&out, "clean", &[row("clean", "a", 0.1)]).unwrap();
        write_results(&out, "hard", &[row("hard", "a", 0.2)]).unwrap();
        write_results(&out, "clean", &[row("clean", "a", 0.3), row("clean", "b", 0.4)]).unwrap();
        let all: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(
            all,
            [row("hard", "a", 0.2), row("clean", "a", 0.3), row("clean", "b", 0.4)]
        );
    }
}
