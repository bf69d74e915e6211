//! `cargo xtask`: the project's own tasks.
//!
//! - `setup`  installs what the build needs (FFmpeg/clang packages, libtorch) and writes
//!   `.cargo/local.toml` so that plain `cargo build/test/run` work.
//! - `models` fetches and verifies pretrained weights listed in `models/models.toml`.
//! - `data`   fetches and verifies datasets (`mnist`, `fsdd`).
//! - `test`   runs `setup`, `models`, `data`, then the whole test suite.
//! - `demo`   runs the main job on the built-in dataset.
//! - `bench`  trains the AV-MNIST configurations and records the results table.
//! - `fuzz`   runs one `cargo fuzz` target (nightly) from its seeds for a while.
//! - `load`   a bounded HTTP load generator for the serving benchmarks.
//! - `gpu-bundle` builds the binaries `benchmarks/gpu.sh` runs on a GPU machine.

mod bench;
mod data;
mod fetch;
mod fuzz;
mod gpu;
mod load;
mod models;
mod paths;
mod pth;
mod setup;

use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  setup [--cuda|--cpu]          install FFmpeg/clang packages and libtorch 2.11.0, write .cargo/local.toml
  models [NAME...]              fetch, convert and verify pretrained weights (models/models.toml)
  data NAME... [--mirror DIR]   fetch and verify datasets: mnist, fsdd
  test [-- CARGO TEST ARGS]     setup + models + data, then the whole test suite
  demo                          setup, then the main job on the built-in dataset
  bench avmnist [OPTIONS]       every configs/avmnist/ model × seeds on an AV-MNIST protocol
                                (--protocol clean|hard, --seeds 3, --epochs N, --train/--val/--test N,
                                --configs a,b, --out FILE, --no-benchmarks-md, --fusion BIN, --threads N)
  fuzz NAME [--time S] [--runs N] [--rss-mb M]
                                one fuzz target of fuzz/ for S seconds (default 60) or N executions,
                                whichever ends first (needs nightly and
                                cargo-fuzz): wav_log_mel, image, video, tokens, manifest_jsonl,
                                manifest_csv, feature_shard, run_config, checkpoint
  load --addr HOST:PORT --body FILE [--path P] [--content-type T] [--concurrency C]
       [--requests N] [--warmup W]
                                POST one body N times over C kept-alive connections; prints
                                requests/s and p50/p95/p99 latency (benchmarks/serve)
  gpu-bundle [--out DIR] [--debug] [--cpu]
                                the release `fusion` and device-aware test binary, linked to CUDA,
                                in DIR (default target/gpu-bundle) for `sh benchmarks/gpu.sh DIR`

environment:
  FUSION_CACHE_DIR     where libtorch, models and data live (default: $XDG_CACHE_HOME/fusion or ~/.cache/fusion)
  FUSION_LIBTORCH      use this existing libtorch (a folder with lib/ and include/) instead of installing one
  FUSION_DATA_MIRROR   a local folder holding mnist/ and fsdd/ to copy datasets from";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "setup" => setup::run(&setup::Options::parse(rest)?).map(drop),
        "models" => models::run(rest),
        "data" => data::run(rest),
        "test" => test(rest),
        "demo" => demo(rest),
        "bench" => bench::run(&bench::Options::parse(rest)?).map(drop),
        "fuzz" => fuzz::run(rest),
        "gpu-bundle" => gpu::run(rest),
        "load" => load::run(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// `cargo xtask test`: everything the suite needs, then the suite.
fn test(args: &[String]) -> Result<()> {
    let (ours, cargo_args) = split_at_double_dash(args);
    setup::run(&setup::Options::parse(ours)?)?;
    models::run(&[])?;
    data::run(&["mnist".into(), "fsdd".into()])?;
    let mut command = cargo();
    // Tests that need the fetched models or data skip when run by plain `cargo test`
    // without them; here they are present, so a skip would hide a failure.
    command.env("FUSION_REQUIRE_ASSETS", "1");
    command.args(["test", "--workspace", "--all-features"]).args(cargo_args);
    run_checked(&mut command)?;
    manifests_stand_alone()?;
    // The GPU bundle's build: the program and the run library without video (no FFmpeg).
    run_checked(cargo().args([
        "check",
        "-p",
        "fusion-cli",
        "-p",
        "fusion-run",
        "--no-default-features",
        "--all-targets",
    ]))?;
    // The test run built the debug `fusion`; the benchmark command runs on a small build.
    bench::smoke(&paths::project_root().join("target/debug/fusion"))?;
    // The GPU script, on CPU: every step runs, so the first GPU machine runs a tested script.
    let bundle = paths::project_root().join("target/gpu-bundle-dry");
    gpu::run(&[
        "--debug".into(),
        "--cpu".into(),
        "--out".into(),
        bundle.display().to_string(),
    ])?;
    run_checked(
        Command::new("sh")
            .current_dir(paths::project_root())
            .arg("benchmarks/gpu.sh")
            .arg("--dry-run")
            .arg(&bundle),
    )
}

/// Reading and validating manifests needs no FFmpeg, libtorch or tokenizers: fusion-data
/// without its modality features depends on none of them, and builds.
fn manifests_stand_alone() -> Result<()> {
    let base = ["-p", "fusion-data", "--no-default-features"];
    let tree = cargo()
        .args(["tree", "-e", "normal", "--prefix", "none"])
        .args(base)
        .output()?;
    let listed = String::from_utf8_lossy(&tree.stdout);
    if !tree.status.success() {
        bail!("cargo tree failed: {}", String::from_utf8_lossy(&tree.stderr));
    }
    for heavy in ["ffmpeg-sys-next", "torch-sys", "tokenizers"] {
        if listed.lines().any(|l| l.starts_with(&format!("{heavy} "))) {
            bail!("fusion-data without features depends on {heavy}");
        }
    }
    run_checked(cargo().arg("check").args(base))?;
    println!("fusion-data without modality features: no FFmpeg, libtorch or tokenizers, and it builds");
    Ok(())
}

/// `cargo xtask demo`: the main job, in release mode.
fn demo(args: &[String]) -> Result<()> {
    let (ours, fusion_args) = split_at_double_dash(args);
    setup::run(&setup::Options::parse(ours)?)?;
    let mut command = cargo();
    command
        .args([
            "run",
            "--release",
            "--package",
            "fusion-cli",
            "--bin",
            "fusion",
            "--",
            "demo",
        ])
        .args(fusion_args);
    run_checked(&mut command)
}

fn split_at_double_dash(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

/// A cargo child that reads the configuration `setup` just wrote, not the values this
/// process inherited from the cargo that started it.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(paths::project_root());
    for managed in setup::MANAGED_ENV {
        command.env_remove(managed);
    }
    command
}

fn run_checked(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
