//! `cargo xtask gpu-bundle [--out DIR] [--debug] [--cpu]`: the binaries a GPU machine needs
//! for `benchmarks/gpu.sh` (which has no Rust): the `fusion` program (without video, so
//! without FFmpeg) and the device-aware fusion-core and encoder test binaries, linked to keep `libtorch_cuda.so` (see BUILD-NOTES: `--as-needed`
//! drops it otherwise, and CUDA is then never available). They find libtorch through
//! `LD_LIBRARY_PATH` there (the PyTorch wheel's `torch/lib`), as `gpu.sh` sets it.
//!
//! `--debug --cpu` bundles the debug binaries without CUDA for `gpu.sh --dry-run`, which
//! `cargo xtask test` runs on CPU. The CUDA link lands in `target/release/fusion` too (one
//! output path); the next `cargo build --release` relinks it as before (measured: 22 s).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::{paths, setup};

/// What the device tool carries to the GPU machine.
pub const CARRY_LIMIT_BYTES: u64 = 64 << 20;

#[derive(Debug, PartialEq)]
struct Options {
    out: PathBuf,
    debug: bool,
    cuda: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            out: paths::project_root().join("target/gpu-bundle"),
            debug: false,
            cuda: true,
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "--out" => options.out = rest.next().context("--out needs a folder")?.into(),
                "--debug" => options.debug = true,
                "--cpu" => options.cuda = false,
                other => bail!("gpu-bundle: unexpected `{other}` (expected --out DIR, --debug, --cpu)"),
            }
        }
        Ok(options)
    }
}

/// Builds one artifact with `cargo rustc` (extra link arguments reach only its final link,
/// so no dependency is rebuilt) and returns the executable's path.
fn build(target: &[&str], options: &Options, link_args: &[String]) -> Result<PathBuf> {
    let mut command = crate::cargo();
    command.args(["rustc", "--message-format=json-render-diagnostics"]);
    command.args(target);
    if !options.debug {
        command.arg("--release");
    }
    command.arg("--");
    for arg in link_args {
        command.args(["-C", arg]);
    }
    cargo_messages(&mut command)?
        .iter()
        .filter_map(|message| message["executable"].as_str().map(PathBuf::from))
        .next_back()
        .with_context(|| format!("{command:?} named no executable"))
}

/// Runs a cargo command with `--message-format=json…` and returns its JSON messages.
fn cargo_messages(command: &mut std::process::Command) -> Result<Vec<serde_json::Value>> {
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed with {}", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// The debug `fusion`, `methods` and `encoders` binaries as `cargo xtask test` builds them
/// (the same flags, so nothing is rebuilt).
fn built_by_the_test_run() -> Result<(PathBuf, PathBuf, PathBuf)> {
    let mut command = crate::cargo();
    command.args([
        "test",
        "--workspace",
        "--all-features",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    let (mut fusion, mut methods, mut encoders) = (None, None, None);
    for message in cargo_messages(&mut command)? {
        let (Some(name), Some(executable)) = (message["target"]["name"].as_str(), message["executable"].as_str())
        else {
            continue;
        };
        let kinds = message["target"]["kind"].to_string();
        // The bin target also gives a unit-test harness named `fusion`: not that one.
        let harness = message["profile"]["test"].as_bool().unwrap_or(true);
        match name {
            "fusion" if kinds.contains("bin") && !harness => fusion = Some(PathBuf::from(executable)),
            "methods" if kinds.contains("test") => methods = Some(PathBuf::from(executable)),
            "encoders" if kinds.contains("test") => encoders = Some(PathBuf::from(executable)),
            _ => {}
        }
    }
    Ok((
        fusion.context("the test build named no `fusion` binary")?,
        methods.context("the test build named no `methods` test binary")?,
        encoders.context("the test build named no `encoders` test binary")?,
    ))
}

pub fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let libtorch = setup::run(&setup::Options::default())?;
    let link_args = if options.cuda {
        // libtorch_cuda.so is linked, not loaded here: its own CUDA libraries may be absent
        // on a build machine with the slim PyTorch install.
        vec![
            format!(
                "link-arg=-Wl,--no-as-needed,-L{},-ltorch_cuda,--as-needed",
                libtorch.root.join("lib").display()
            ),
            "link-arg=-Wl,--allow-shlib-undefined".to_string(),
        ]
    } else {
        Vec::new()
    };
    let (fusion, methods, encoders) = if options.debug && !options.cuda {
        built_by_the_test_run()?
    } else {
        (
            // Without video: FFmpeg's 200 MB of libraries are not on a GPU machine.
            build(
                &["-p", "fusion-cli", "--bin", "fusion", "--no-default-features"],
                &options,
                &link_args,
            )?,
            build(&["-p", "fusion-core", "--test", "methods"], &options, &link_args)?,
            build(
                &["-p", "fusion-run", "--test", "encoders", "--no-default-features"],
                &options,
                &link_args,
            )?,
        )
    };
    let tests = options.out.join("tests");
    std::fs::create_dir_all(&tests).with_context(|| format!("cannot create {}", tests.display()))?;
    let mut files = serde_json::Map::new();
    let mut total = 0;
    for (from, to) in [
        (&fusion, options.out.join("fusion")),
        (&methods, tests.join("methods")),
        (&encoders, tests.join("encoders")),
    ] {
        copy(from, &to)?;
        let bytes = std::fs::metadata(&to)?.len();
        total += bytes;
        let name = to.strip_prefix(&options.out).unwrap_or(&to).display().to_string();
        files.insert(name, bytes.into());
    }
    let summary = serde_json::json!({
        "profile": if options.debug { "debug" } else { "release" },
        "cuda_linked": options.cuda,
        "files": files,
        "bytes": total,
    });
    let path = options.out.join("bundle.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if !options.debug && total > CARRY_LIMIT_BYTES {
        bail!("the bundle holds {total} bytes, over the {CARRY_LIMIT_BYTES} bytes a GPU machine is sent");
    }
    let relative = options
        .out
        .strip_prefix(paths::project_root())
        .unwrap_or(&options.out)
        .display()
        .to_string();
    println!(
        "bundle: {} — on a GPU machine, from the repository root: sh benchmarks/gpu.sh {relative} (carry `{relative}`)",
        options.out.display()
    );
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    // Replaced, not overwritten: a running copy of the old binary keeps its file. A hard
    // link costs no space (debug binaries are hundreds of MB); a copy where none can be made.
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
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
    fn options_default_to_a_cuda_release_bundle() -> Result<()> {
        let default = Options::parse(&[])?;
        assert!(default.cuda && !default.debug);
        assert!(default.out.ends_with("target/gpu-bundle"));
        let dry = Options::parse(&args("--debug --cpu --out /tmp/b"))?;
        assert_eq!(
            dry,
            Options {
                out: "/tmp/b".into(),
                debug: true,
                cuda: false
            }
        );
        assert!(Options::parse(&args("--out")).is_err());
        assert!(Options::parse(&args("--gpu")).is_err());
        Ok(())
    }
}
