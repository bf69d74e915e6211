//! `cargo xtask setup`: system packages, libtorch, and the cargo configuration that makes
//! plain `cargo build/test/run` work on this machine.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::paths::{self, non_empty_env};

/// PyTorch release that `tch = "=0.24.0"` is built against.
pub const TORCH_VERSION: &str = "2.11.0";

/// CUDA runtime libraries that `libtorch_cpu.so` of the CUDA 13 wheel loads even on CPU.
const SLIM_CUDA_RUNTIME: [&str; 2] = ["nvidia-cuda-runtime~=13.0.0", "nvidia-cuda-cupti~=13.0.0"];

/// Debian packages the build needs: FFmpeg's libraries for ffmpeg-next, clang for its
/// bindgen, the `ffmpeg` program that regenerates video fixtures, and the headless
/// browser in which the suite tries `fusion serve`'s page.
const DEBIAN_PACKAGES: [&str; 12] = [
    "libavcodec-dev",
    "libavformat-dev",
    "libavutil-dev",
    "libswscale-dev",
    "libswresample-dev",
    "libavfilter-dev",
    "libavdevice-dev",
    "pkg-config",
    "clang",
    "libclang-dev",
    "ffmpeg",
    "chromium",
];

/// Variables `setup` writes into `.cargo/local.toml`.
pub const MANAGED_ENV: [&str; 5] = [
    "LIBTORCH",
    "FUSION_TORCH_CUDA",
    "FUSION_CACHE_DIR",
    "FUSION_MODELS_DIR",
    "FUSION_DATA_DIR",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// torch without its CUDA dependencies: builds and runs on CPU (~1.4 GB).
    Cpu,
    /// The full CUDA 13 install (~4.6 GB).
    Cuda,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }
}

#[derive(Debug, Default)]
pub struct Options {
    /// `None`: decide by whether this machine has an NVIDIA GPU.
    variant: Option<Variant>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self::default();
        for arg in args {
            options.variant = Some(match arg.as_str() {
                "--cuda" => Variant::Cuda,
                "--cpu" => Variant::Cpu,
                other => bail!("setup: unknown option `{other}` (expected --cuda or --cpu)"),
            });
        }
        Ok(options)
    }
}

/// What setup settled on.
#[derive(Debug)]
pub struct Libtorch {
    /// The folder holding `lib/` and `include/`.
    pub root: PathBuf,
    /// Whether binaries should link `libtorch_cuda.so`.
    pub cuda: bool,
}

pub fn run(options: &Options) -> Result<Libtorch> {
    ensure_system_packages()?;
    let libtorch = match non_empty_env("FUSION_LIBTORCH") {
        Some(existing) => existing_libtorch(Path::new(&existing))?,
        None => {
            let variant = options
                .variant
                .unwrap_or_else(|| if has_nvidia_gpu() { Variant::Cuda } else { Variant::Cpu });
            managed_libtorch(variant)?
        }
    };
    write_local_config(&libtorch)?;
    Ok(libtorch)
}

fn ensure_system_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !debian_package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    if !is_root() {
        bail!(
            "missing system packages: {}\nrun as root:\n  {command}\nthen run `cargo xtask setup` again",
            missing.join(", ")
        );
    }
    println!("setup: installing {}", missing.join(" "));
    let status = Command::new("sh")
        .args(["-c", &command])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("`{command}` failed ({status})");
    }
    Ok(())
}

fn debian_package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["--show", "--showformat=${db:Status-Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout == b"installed")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn has_nvidia_gpu() -> bool {
    Path::new("/proc/driver/nvidia/version").exists()
        || Command::new("nvidia-smi")
            .arg("-L")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A libtorch the user already has (an unzipped libtorch or a `site-packages/torch`).
fn existing_libtorch(root: &Path) -> Result<Libtorch> {
    for needed in ["lib/libtorch_cpu.so", "include/torch"] {
        if !root.join(needed).exists() {
            bail!(
                "FUSION_LIBTORCH={} is not a libtorch folder: {needed} is missing",
                root.display()
            );
        }
    }
    let cuda = cuda_libs_present(root);
    println!(
        "setup: using libtorch at {} (CUDA {})",
        root.display(),
        if cuda { "on" } else { "off" }
    );
    Ok(Libtorch {
        root: root.to_path_buf(),
        cuda,
    })
}

/// Whether `libtorch_cuda.so` can be loaded: it is there and so is cuBLAS, which the slim
/// CPU install leaves out (libtorch zips bundle it in `lib/`, wheels in `nvidia/cu13/lib`).
fn cuda_libs_present(torch_root: &Path) -> bool {
    let has_cublas = |dir: PathBuf| {
        fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libcublas"))
        })
    };
    torch_root.join("lib/libtorch_cuda.so").exists()
        && (has_cublas(torch_root.join("lib")) || has_cublas(torch_root.join("../nvidia/cu13/lib")))
}

/// The venv holding PyTorch from PyPI, installed once and reused by every clone. What is
/// installed is read off the files, so an interrupted install is simply done again.
fn managed_libtorch(wanted: Variant) -> Result<Libtorch> {
    let venv = paths::cache_dir().join(format!("torch-{TORCH_VERSION}"));
    let torch_root = |venv: &Path| site_packages(venv).map(|site| site.join("torch"));
    let have = torch_root(&venv).ok().filter(|_| torch_version_ok(&venv)).map(|root| {
        if cuda_libs_present(&root) {
            Variant::Cuda
        } else {
            Variant::Cpu
        }
    });
    // The full install is a superset of the slim one: never downgrade it.
    let variant = match (have, wanted) {
        (Some(Variant::Cuda), _) => Variant::Cuda,
        (Some(Variant::Cpu), Variant::Cpu) => Variant::Cpu,
        _ => {
            install_torch(&venv, wanted, have.is_some())?;
            wanted
        }
    };
    if variant == Variant::Cuda && !cuda_libs_present(&torch_root(&venv)?) {
        bail!(
            "the CUDA install in {} lacks cuBLAS; remove the folder and run setup again",
            venv.display()
        );
    }
    println!(
        "setup: PyTorch {TORCH_VERSION} ({}) in {}",
        variant.name(),
        venv.display()
    );
    Ok(Libtorch {
        root: torch_root(&venv)?,
        cuda: variant == Variant::Cuda,
    })
}

fn install_torch(venv: &Path, variant: Variant, venv_ok: bool) -> Result<()> {
    if !venv_ok {
        if venv.exists() {
            fs::remove_dir_all(venv).with_context(|| format!("cannot remove broken {}", venv.display()))?;
        }
        fs::create_dir_all(venv.parent().unwrap_or(venv))?;
        println!("setup: creating a Python venv at {}", venv.display());
        let python = non_empty_env("PYTHON").unwrap_or_else(|| "python3".into());
        let status = Command::new(&python).args(["-m", "venv"]).arg(venv).status();
        if !status.is_ok_and(|s| s.success()) {
            bail!(
                "`{python} -m venv {}` failed: install Python 3 with venv (Debian: apt-get install python3-venv)",
                venv.display()
            );
        }
    }
    let pip = |args: &[&str]| -> Result<()> {
        let mut command = Command::new(venv.join("bin/python"));
        command
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--quiet"])
            .args(args);
        let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
        if !status.success() {
            bail!("{command:?} failed ({status})");
        }
        Ok(())
    };
    let torch = format!("torch=={TORCH_VERSION}");
    match variant {
        Variant::Cpu => {
            println!("setup: installing PyTorch {TORCH_VERSION} without CUDA libraries (~520 MB download)");
            pip(&["--no-deps", &torch])?;
            pip(&[&["--no-deps"][..], &SLIM_CUDA_RUNTIME[..]].concat())?;
        }
        Variant::Cuda => {
            println!("setup: installing PyTorch {TORCH_VERSION} with CUDA 13 (~2.6 GB download)");
            pip(&[&torch])?;
        }
    }
    if !torch_version_ok(venv) {
        bail!(
            "PyTorch {TORCH_VERSION} is not in {} after installing it",
            venv.display()
        );
    }
    Ok(())
}

fn site_packages(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    let entries = fs::read_dir(&lib).with_context(|| format!("cannot list {}", lib.display()))?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path().join("site-packages")))
        .find(|p| p.is_dir())
        .with_context(|| format!("no site-packages under {}", lib.display()))
}

fn torch_version_ok(venv: &Path) -> bool {
    let Ok(site) = site_packages(venv) else { return false };
    let version = fs::read_to_string(site.join("torch/version.py")).unwrap_or_default();
    let expected = format!("__version__ = '{TORCH_VERSION}");
    version.lines().any(|l| l.starts_with(&expected))
        && site.join("torch/lib/libtorch_cpu.so").exists()
        && site.join("nvidia/cu13/lib/libcudart.so.13").exists()
}

/// Writes `.cargo/local.toml`, read by the committed `.cargo/config.toml`.
fn write_local_config(libtorch: &Libtorch) -> Result<()> {
    let content = local_config(libtorch);
    let path = paths::project_root().join(".cargo/local.toml");
    if fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
        fs::write(&path, &content).with_context(|| format!("cannot write {}", path.display()))?;
        println!("setup: wrote {}", path.display());
    }
    println!(
        "setup: ready (libtorch {}, CUDA linking {})",
        libtorch.root.display(),
        if libtorch.cuda { "on" } else { "off" }
    );
    Ok(())
}

/// The text of `.cargo/local.toml` for `libtorch`.
fn local_config(libtorch: &Libtorch) -> String {
    let lib = libtorch.root.join("lib");
    let quote = |p: &Path| toml::Value::String(p.to_string_lossy().into_owned()).to_string();
    let mut link_flags = vec![format!("link-arg=-Wl,-rpath,{}", lib.display())];
    if libtorch.cuda {
        // Nothing in Rust references a symbol of libtorch_cuda.so, so `--as-needed` would
        // drop it and libtorch would never register its CUDA backend: keep it explicitly.
        link_flags.push(format!(
            "link-arg=-Wl,--no-as-needed,-L{},-ltorch_cuda,--as-needed",
            lib.display()
        ));
    }
    let flags = link_flags
        .iter()
        .map(|flag| format!("\"-C\", {}", quote(Path::new(flag))))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "# Written by `cargo xtask setup` for this machine. Not committed; rerun setup to change it.\n\
         [env]\n\
         LIBTORCH = {libtorch}\n\
         FUSION_TORCH_CUDA = \"{cuda}\"\n\
         FUSION_CACHE_DIR = {cache}\n\
         FUSION_MODELS_DIR = {models}\n\
         FUSION_DATA_DIR = {data}\n\n\
         # Binaries, test binaries and doctests find libtorch without LD_LIBRARY_PATH\n\
         # (and, with CUDA, keep libtorch_cuda.so linked).\n\
         [build]\n\
         rustdocflags = [{flags}]\n\n\
         [target.'cfg(target_os = \"linux\")']\n\
         rustflags = [{flags}]\n",
        libtorch = quote(&libtorch.root),
        cuda = u8::from(libtorch.cuda),
        cache = quote(&paths::cache_dir()),
        models = quote(&paths::models_dir()),
        data = quote(&paths::data_dir()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rustflags(text: &str) -> Vec<String> {
        let parsed: toml::Table = toml::from_str(text).expect("valid TOML");
        let target = &parsed["target"]["cfg(target_os = \"linux\")"]["rustflags"];
        let flags: Vec<String> = target
            .as_array()
            .expect("array")
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect();
        let doc: Vec<String> = parsed["build"]["rustdocflags"]
            .as_array()
            .expect("array")
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(flags, doc, "doctests link like every other binary");
        flags
    }

    #[test]
    fn local_config_sets_rpath_and_keeps_libtorch_cuda_only_with_cuda() {
        let root = PathBuf::from("/opt/torch dir");
        let cpu = rustflags(&local_config(&Libtorch {
            root: root.clone(),
            cuda: false,
        }));
        assert_eq!(cpu, ["-C", "link-arg=-Wl,-rpath,/opt/torch dir/lib"]);
        let cuda = rustflags(&local_config(&Libtorch { root, cuda: true }));
        assert_eq!(
            cuda,
            [
                "-C",
                "link-arg=-Wl,-rpath,/opt/torch dir/lib",
                "-C",
                "link-arg=-Wl,--no-as-needed,-L/opt/torch dir/lib,-ltorch_cuda,--as-needed"
            ]
        );
    }
}
