//! `cargo xtask fuzz NAME [--time S] [--runs N] [--rss-mb M]`: one `cargo fuzz` target (in
//! `fuzz/`) for S seconds or N executions, whichever ends first, on the nightly toolchain, starting from its committed seeds
//! (`fuzz/corpus/NAME`) and a growing work corpus (`fuzz/corpus-work/NAME`, not committed).
//! Prints the executions it ran; a crash, hang or out-of-memory leaves the input under
//! `fuzz/artifacts/NAME/` (copy it to `fuzz/regressions/NAME/` once fixed: the normal suite
//! replays those).

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{paths, setup};

/// The targets of `fuzz/Cargo.toml` (and of `fuzz/harness.rs`).
pub const TARGETS: [&str; 13] = [
    "wav_log_mel",
    "image",
    "video",
    "tokens",
    "manifest_jsonl",
    "manifest_csv",
    "feature_shard",
    "run_config",
    "checkpoint",
    "table_inference",
    "ensemble_file",
    "shard_index",
    "run_json",
];

#[derive(Debug, PartialEq)]
struct Options {
    target: String,
    seconds: u64,
    runs: Option<u64>,
    rss_mb: u64,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            target: String::new(),
            seconds: 60,
            runs: None,
            rss_mb: 2048,
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let mut number = |flag: &str| -> Result<u64> {
                let value = rest.next().with_context(|| format!("{flag} needs a value"))?;
                value
                    .parse()
                    .with_context(|| format!("{flag} {value}: not a whole number"))
            };
            match arg.as_str() {
                "--time" => options.seconds = number("--time")?,
                "--rss-mb" => options.rss_mb = number("--rss-mb")?,
                "--runs" => options.runs = Some(number("--runs")?),
                name if !name.starts_with('-') && options.target.is_empty() => options.target = name.into(),
                other => bail!("fuzz: unexpected `{other}`"),
            }
        }
        if !TARGETS.contains(&options.target.as_str()) {
            bail!("fuzz: name a target: {} (got `{}`)", TARGETS.join(", "), options.target);
        }
        if options.seconds == 0 {
            bail!("fuzz: --time must be at least 1 second");
        }
        Ok(options)
    }
}

/// What libFuzzer's final statistics say.
#[derive(Debug, PartialEq)]
struct Stats {
    executions: u64,
    seconds: u64,
    peak_rss_mb: u64,
}

fn parse_stats(log: &str) -> Option<Stats> {
    let field = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(Stats {
        executions: field("number_of_executed_units")?,
        seconds: field("average_exec_per_sec")
            .zip(field("number_of_executed_units"))
            .map_or(0, |(rate, n): (u64, u64)| n.checked_div(rate).unwrap_or(0)),
        peak_rss_mb: field("peak_rss_mb").unwrap_or(0),
    })
}

pub fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let libtorch = setup::run(&setup::Options::default())?;
    let root = paths::project_root();
    let fuzz = root.join("fuzz");
    let work = fuzz.join("corpus-work").join(&options.target);
    let seeds = fuzz.join("corpus").join(&options.target);
    let artifacts = fuzz.join("artifacts").join(&options.target);
    for folder in [&work, &artifacts] {
        std::fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let probe = Command::new("rustup")
        .args(["run", "nightly", "cargo", "fuzz", "--version"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        bail!(
            "fuzz needs the nightly toolchain and cargo-fuzz: rustup toolchain install nightly && cargo install cargo-fuzz"
        );
    }
    // cargo-fuzz sets RUSTFLAGS, which replaces the rpath of .cargo/local.toml: libtorch is
    // found through the loader path instead.
    let lib = libtorch.root.join("lib");
    let loader_path = match std::env::var("LD_LIBRARY_PATH") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", lib.display()),
        _ => lib.display().to_string(),
    };
    let mut command = Command::new("rustup");
    command
        .current_dir(&root)
        .env("LD_LIBRARY_PATH", loader_path)
        .env("LIBTORCH", &libtorch.root)
        .args(["run", "nightly", "cargo", "fuzz", "run", "--sanitizer", "none"])
        .arg(&options.target)
        .arg("--")
        .arg(format!("-max_total_time={}", options.seconds))
        .arg(format!("-rss_limit_mb={}", options.rss_mb))
        .args(options.runs.map(|n| format!("-runs={n}")))
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&work)
        .arg(&seeds);
    match options.runs {
        Some(runs) => println!(
            "fuzzing {} for {runs} executions or {} s",
            options.target, options.seconds
        ),
        None => println!("fuzzing {} for {} s", options.target, options.seconds),
    }
    let output = command.output().with_context(|| format!("cannot start {command:?}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let log_path = fuzz.join("artifacts").join(format!("{}.log", options.target));
    std::fs::write(&log_path, log.as_bytes()).with_context(|| format!("cannot write {}", log_path.display()))?;
    let stats = parse_stats(&log);
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        bail!(
            "{} failed ({}); inputs in {}, log {}:\n{}",
            options.target,
            output.status,
            artifacts.display(),
            log_path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    match stats {
        Some(s) => println!(
            "{}: {} executions in about {} s, no crash, hang or out-of-memory; peak RSS {} MB (log {})",
            options.target,
            s.executions,
            if options.runs.is_some() {
                s.seconds
            } else {
                s.seconds.max(options.seconds)
            },
            s.peak_rss_mb,
            log_path.display()
        ),
        None => println!("{}: finished; no statistics in {}", options.target, log_path.display()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_need_a_known_target_and_numbers() -> Result<()> {
        assert_eq!(
            Options::parse(&args("image --time 30"))?,
            Options {
                target: "image".into(),
                seconds: 30,
                runs: None,
                rss_mb: 2048
            }
        );
        assert_eq!(Options::parse(&args("video --runs 1000 --time 600"))?.runs, Some(1000));
        for bad in [
            "",
            "imgae",
            "image --time",
            "image --time x",
            "image --time 0",
            "image --runs -5",
            "image extra",
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn final_statistics_are_read() {
        let log = "INFO: seed\n#1048576 pulse\nDone 2000 runs in 2 second(s)\nstat::number_of_executed_units: 2000\nstat::average_exec_per_sec:     1000\nstat::new_units_added:          3\nstat::slowest_unit_time_sec:    0\nstat::peak_rss_mb:              61\n";
        assert_eq!(
            parse_stats(log),
            Some(Stats {
                executions: 2000,
                seconds: 2,
                peak_rss_mb: 61
            })
        );
        assert_eq!(parse_stats("crashed early"), None);
    }

    #[test]
    fn the_targets_are_the_fuzz_crates() -> Result<()> {
        let manifest = std::fs::read_to_string(paths::project_root().join("fuzz/Cargo.toml"))?;
        let declared: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .map(|n| n.trim_end_matches('"'))
            .filter(|n| *n != "fusion-fuzz")
            .collect();
        assert_eq!(declared, TARGETS);
        Ok(())
    }
}
