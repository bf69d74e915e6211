//! `cargo xtask data`: datasets fetched from their public homes or a local mirror, every
//! file checked against the SHA-256 lists in `xtask/checksums/`, stored under
//! `$FUSION_CACHE_DIR/data/<name>/`. A dataset appears whole or not at all.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::{
    fetch::{Partial, check_sha256, download, sha256_file, sha256_reader},
    paths,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dataset {
    /// MNIST IDX files, stored gzipped; checksums are of the uncompressed bytes, which do
    /// not depend on the gzip version that compressed them.
    Mnist,
    /// Free Spoken Digit Dataset v1.0.10 recordings.
    Fsdd,
}

const MNIST_URLS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];
const FSDD_URL: &str = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz";

impl Dataset {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "mnist" => Ok(Self::Mnist),
            "fsdd" => Ok(Self::Fsdd),
            other => bail!("unknown dataset `{other}` (known: mnist, fsdd)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::Fsdd => "fsdd",
        }
    }

    fn checksums(self) -> Vec<Entry> {
        let list = match self {
            Self::Mnist => include_str!("../checksums/mnist.sha256"),
            Self::Fsdd => include_str!("../checksums/fsdd.sha256"),
        };
        parse_checksums(list)
    }

    /// Where an entry is stored, relative to the dataset folder.
    fn stored_name(self, entry: &Entry) -> String {
        match self {
            Self::Mnist => format!("{}.gz", entry.path),
            Self::Fsdd => entry.path.clone(),
        }
    }

    /// SHA-256 of the content an entry's checksum covers.
    fn content_sha256(self, file: &Path) -> Result<String> {
        match self {
            Self::Mnist => {
                let gz = fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
                sha256_reader(flate2::read::GzDecoder::new(gz))
                    .with_context(|| format!("{} is not valid gzip", file.display()))
            }
            Self::Fsdd => sha256_file(file),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    sha256: String,
    path: String,
}

fn parse_checksums(list: &str) -> Vec<Entry> {
    list.lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(sha256, path)| Entry {
            sha256: sha256.to_string(),
            path: path.to_string(),
        })
        .collect()
}

pub fn run(args: &[String]) -> Result<()> {
    let mut mirror = paths::non_empty_env("FUSION_DATA_MIRROR").map(PathBuf::from);
    let mut datasets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mirror" => mirror = Some(PathBuf::from(args.next().context("--mirror needs a folder")?)),
            name => datasets.push(Dataset::parse(name)?),
        }
    }
    if datasets.is_empty() {
        bail!("name the datasets to fetch: cargo xtask data mnist fsdd [--mirror DIR]");
    }
    let root = paths::data_dir();
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    for dataset in datasets {
        fetch(dataset, &dataset.checksums(), &root, mirror.as_deref())?;
    }
    Ok(())
}

/// Makes `root/<name>` hold exactly the verified dataset.
fn fetch(dataset: Dataset, entries: &[Entry], root: &Path, mirror: Option<&Path>) -> Result<()> {
    let dest = root.join(dataset.name());
    if verify(dataset, entries, &dest).is_ok() {
        println!(
            "data: {} verified in {} ({} files)",
            dataset.name(),
            dest.display(),
            entries.len()
        );
        return Ok(());
    }
    let partial = Partial::beside(&dest);
    fs::create_dir_all(partial.path())?;
    match mirror {
        Some(mirror) => {
            let source = mirror.join(dataset.name());
            println!("data: copying {} from {}", dataset.name(), source.display());
            for entry in entries {
                let stored = dataset.stored_name(entry);
                let target = partial.path().join(&stored);
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                let from = source.join(&stored);
                fs::copy(&from, &target).with_context(|| format!("cannot copy {}", from.display()))?;
                check_sha256(&from, &dataset.content_sha256(&target)?, &entry.sha256)?;
            }
        }
        None => download_dataset(dataset, entries, partial.path())?,
    }
    partial.commit(&dest)?;
    println!(
        "data: {} stored in {} ({} files)",
        dataset.name(),
        dest.display(),
        entries.len()
    );
    Ok(())
}

fn download_dataset(dataset: Dataset, entries: &[Entry], dir: &Path) -> Result<()> {
    match dataset {
        Dataset::Mnist => {
            for entry in entries {
                let stored = dataset.stored_name(entry);
                let target = dir.join(&stored);
                let mut failures = Vec::new();
                let fetched = MNIST_URLS.iter().map(|base| format!("{base}{stored}")).find(|url| {
                    println!("data: downloading {url}");
                    let ok = download(url, &target).map_err(|e| failures.push(e.to_string())).is_ok()
                        && dataset.content_sha256(&target).is_ok_and(|sha| sha == entry.sha256);
                    if !ok {
                        failures.push(format!("{url}: missing or checksum mismatch"));
                    }
                    ok
                });
                if fetched.is_none() {
                    bail!("cannot fetch a verified {stored}:\n  {}", failures.join("\n  "));
                }
            }
            Ok(())
        }
        Dataset::Fsdd => {
            let archive = dir.join("fsdd.tar.gz");
            println!("data: downloading {FSDD_URL}");
            download(FSDD_URL, &archive)?;
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(&archive)?));
            for item in tar.entries()? {
                let mut item = item?;
                let path = item.path()?.into_owned();
                // <repo>-<version>/recordings/<file>.wav
                let Some(relative) = path.iter().skip(1).collect::<PathBuf>().to_str().map(String::from) else {
                    continue;
                };
                if relative.starts_with("recordings/") && relative.ends_with(".wav") && !relative.contains("..") {
                    let target = dir.join(&relative);
                    fs::create_dir_all(target.parent().unwrap_or(dir))?;
                    let mut bytes = Vec::new();
                    item.read_to_end(&mut bytes)?;
                    fs::write(&target, bytes)?;
                }
            }
            fs::remove_file(&archive)?;
            for entry in entries {
                let file = dir.join(&entry.path);
                let named = Path::new(FSDD_URL).join(&entry.path);
                check_sha256(
                    &named,
                    &sha256_file(&file).with_context(|| format!("{FSDD_URL} lacks {}", entry.path))?,
                    &entry.sha256,
                )?;
            }
            Ok(())
        }
    }
}

/// Every listed file is there with the right content.
fn verify(dataset: Dataset, entries: &[Entry], dir: &Path) -> Result<()> {
    for entry in entries {
        let file = dir.join(dataset.stored_name(entry));
        check_sha256(&file, &dataset.content_sha256(&file)?, &entry.sha256)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes)?;
        Ok(encoder.finish()?)
    }

    fn entry(path: &str, content: &[u8]) -> Result<Entry> {
        Ok(Entry {
            sha256: sha256_reader(content)?,
            path: path.to_string(),
        })
    }

    #[test]
    fn mirror_copy_is_verified_on_uncompressed_content() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mirror = dir.path().join("mirror");
        fs::create_dir_all(mirror.join("mnist"))?;
        fs::write(mirror.join("mnist/labels.gz"), gzip(b"\x00\x00\x08\x01labels")?)?;
        let entries = [entry("labels", b"\x00\x00\x08\x01labels")?];
        let root = dir.path().join("data");
        fs::create_dir_all(&root)?;
        fetch(Dataset::Mnist, &entries, &root, Some(&mirror))?;
        verify(Dataset::Mnist, &entries, &root.join("mnist"))?;
        Ok(())
    }

    #[test]
    fn wrong_checksum_names_the_file_and_keeps_nothing() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mirror = dir.path().join("mirror");
        fs::create_dir_all(mirror.join("fsdd/recordings"))?;
        fs::write(mirror.join("fsdd/recordings/0_a_0.wav"), b"good")?;
        fs::write(mirror.join("fsdd/recordings/1_a_0.wav"), b"corrupted")?;
        let entries = [
            entry("recordings/0_a_0.wav", b"good")?,
            entry("recordings/1_a_0.wav", b"original")?,
        ];
        let root = dir.path().join("data");
        fs::create_dir_all(&root)?;
        let err = fetch(Dataset::Fsdd, &entries, &root, Some(&mirror))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("checksum mismatch") && err.contains("1_a_0.wav"), "{err}");
        assert_eq!(fs::read_dir(&root)?.count(), 0, "no partial dataset may remain");
        Ok(())
    }

    #[test]
    fn committed_checksum_lists_are_complete() {
        let mnist = Dataset::Mnist.checksums();
        assert_eq!(mnist.len(), 4);
        let fsdd = Dataset::Fsdd.checksums();
        assert_eq!(fsdd.len(), 3000);
        assert!(fsdd.iter().chain(&mnist).all(|e| e.sha256.len() == 64));
    }
}
