//! Downloading and verifying files: nothing reaches its final name unverified.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// SHA-256 of everything `reader` yields, as lower-case hex.
pub fn sha256_reader(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    sha256_reader(file).with_context(|| format!("cannot read {}", path.display()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fails, naming the file, unless `actual` equals `expected`.
pub fn check_sha256(path: &Path, actual: &str, expected: &str) -> Result<()> {
    if actual != expected {
        bail!(
            "checksum mismatch for {}: expected sha256 {expected}, got {actual}",
            path.display()
        );
    }
    Ok(())
}

/// A sibling name for work in progress, removed on drop unless kept.
pub struct Partial {
    path: PathBuf,
    keep: bool,
}

impl Partial {
    pub fn beside(target: &Path) -> Self {
        let name = target
            .file_name()
            .map_or_else(|| "download".into(), |n| n.to_string_lossy().into_owned());
        let path = target.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        Self { path, keep: false }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the verified work to `target`, replacing what was there.
    pub fn commit(mut self, target: &Path) -> Result<()> {
        if target.is_dir() {
            fs::remove_dir_all(target).with_context(|| format!("cannot replace {}", target.display()))?;
        }
        fs::rename(&self.path, target)
            .with_context(|| format!("cannot move {} to {}", self.path.display(), target.display()))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path).or_else(|_| fs::remove_file(&self.path));
        }
    }
}

/// Downloads `url` to `dest` with curl (retries, fails on HTTP errors).
pub fn download(url: &str, dest: &Path) -> Result<()> {
    let status = Command::new("curl")
        .args([
            "--fail",
            "--location",
            "--silent",
            "--show-error",
            "--retry",
            "3",
            "--connect-timeout",
            "20",
        ])
        .arg("--output")
        .arg(dest)
        .arg(url)
        .status()
        .context("cannot run curl (install it with `apt-get install curl`)")?;
    if !status.success() {
        bail!("download of {url} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() -> Result<()> {
        assert_eq!(
            sha256_reader(&b"abc"[..])?,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        Ok(())
    }

    #[test]
    fn partial_is_removed_unless_committed() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("dataset");
        let dropped = Partial::beside(&target);
        fs::create_dir_all(dropped.path())?;
        fs::write(dropped.path().join("half"), b"x")?;
        let dropped_path = dropped.path().to_path_buf();
        drop(dropped);
        assert!(!dropped_path.exists());

        let kept = Partial::beside(&target);
        fs::create_dir_all(kept.path())?;
        fs::write(kept.path().join("whole"), b"y")?;
        kept.commit(&target)?;
        assert_eq!(fs::read(target.join("whole"))?, b"y");
        Ok(())
    }
}
