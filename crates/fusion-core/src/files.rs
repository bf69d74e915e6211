//! Files that must survive crashes and damage: one atomic writer, safetensors that carry a
//! checksum of their tensors, and a lock that keeps two processes out of one run folder.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    sync::Mutex,
};

use tch::Tensor;

use crate::{CHECKSUM_KEY, Error, Result, checksum};

/// Prefix of the temporary files [`write_atomic`] makes for `name`: the writer's process id
/// is in it, so a later write can tell a dead writer's leftover from a live one's file.
fn temporary_prefix(name: &str, pid: u32) -> String {
    format!("{name}.{pid}.")
}

/// Removes `NAME.PID.*.tmp` files in `folder` whose writer (`PID`) no longer runs on this
/// machine: what a killed write left behind.
fn remove_stale_temporaries(folder: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(name))
            .and_then(|n| n.strip_prefix('.'))
            .filter(|n| n.ends_with(".tmp"))
        else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let gone = Path::new("/proc/self").exists() && !Path::new("/proc").join(pid.to_string()).exists();
        if gone {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Writes `path` through `write` into a temporary file beside it, synced, then renamed
/// into place: a reader sees the old file or the new one, never a mixture, and a failed
/// write (full disk, file-size limit, read-only folder) leaves the old file and no
/// temporary behind. A process killed mid-write leaves a `NAME.PID.*.tmp`, which no reader
/// takes for the file and the next write of `NAME` removes. The file's mode is 0666 less
/// the process's umask, like any file a program creates.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(folder).map_err(io(folder))?;
    // Named after the target: libtorch derives an archive's inner name from it.
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy().into_owned());
    remove_stale_temporaries(folder, &name);
    let temporary = tempfile::Builder::new()
        .prefix(&temporary_prefix(&name, std::process::id()))
        .suffix(".tmp")
        .permissions(<fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o666))
        .tempfile_in(folder)
        .map_err(io(folder))?;
    write(temporary.path())?;
    File::open(temporary.path())
        .and_then(|f| f.sync_all())
        .map_err(io(path))?;
    temporary.persist(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e.error,
    })?;
    // The rename is durable once the folder is synced (best effort: not every file
    // system lets a folder be opened).
    if let Ok(dir) = File::open(folder) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// [`write_atomic`] of bytes already in memory (JSON, text).
pub fn write_file_atomic(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    write_atomic(path, |tmp| {
        fs::write(tmp, bytes).map_err(|source| Error::Io {
            path: tmp.into(),
            source,
        })
    })
}

/// Writes named tensors as safetensors with a checksum entry, atomically.
pub fn write_checked_safetensors(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    let mut entries: Vec<(String, Tensor)> = named
        .iter()
        .filter(|(n, _)| n != CHECKSUM_KEY)
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    let sum = checksum(&entries)?;
    entries.push((CHECKSUM_KEY.into(), Tensor::from(sum)));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    write_atomic(path, |tmp| Ok(Tensor::write_safetensors(&entries, tmp)?))
}

/// Run folders this process holds the lock of, with how many guards share each.
static HELD: Mutex<Vec<(PathBuf, File, usize)>> = Mutex::new(Vec::new());

/// Exclusive use of a run folder by this process while it lives (an OS file lock on
/// `.lock`, released when the process dies however it dies). Guards of one process on
/// one folder nest.
#[derive(Debug)]
pub struct RunLock {
    root: Option<PathBuf>,
}

impl RunLock {
    /// Takes the lock of `root`, or says that another process holds it. A folder that
    /// cannot be written is not locked: nothing can change it through this process either.
    pub fn acquire(root: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: root.into(),
            source,
        };
        fs::create_dir_all(root).map_err(io)?;
        let root = root.canonicalize().map_err(io)?;
        let mut held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = held.iter_mut().find(|(r, _, _)| *r == root) {
            entry.2 += 1;
            return Ok(Self { root: Some(root) });
        }
        let path = root.join(".lock");
        let file = match fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                return Ok(Self { root: None });
            }
            Err(source) => return Err(Error::Io { path, source }),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Busy {
                    folder: root.clone(),
                    lock: path,
                });
            }
            Err(fs::TryLockError::Error(source)) => return Err(Error::Io { path, source }),
        }
        held.push((root.clone(), file, 1));
        Ok(Self { root: Some(root) })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let Some(root) = &self.root else { return };
        let mut held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(at) = held.iter().position(|(r, _, _)| r == root) {
            held[at].2 -= 1;
            if held[at].2 == 0 {
                // Closing the file releases the lock.
                held.swap_remove(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    use crate::read_checked_safetensors;

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    }

    fn temp_dir() -> Result<tempfile::TempDir> {
        tempfile::tempdir().map_err(io(Path::new("temp dir")))
    }

    fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
        fs::write(path, bytes).map_err(io(path))
    }

    fn named() -> Vec<(String, Tensor)> {
        vec![
            (
                "b.weight".into(),
                Tensor::from_slice(&[1.0f32, -2.5, 3.25]).view([3, 1]),
            ),
            ("a.step".into(), Tensor::from(7i64)),
        ]
    }

    /// The process's umask, from `/proc/self/status` (reading it through umask(2) would
    /// change it for a moment under other tests' feet).
    fn umask() -> u32 {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
            .unwrap_or(0o022)
    }

    #[test]
    fn written_files_follow_the_umask_and_dead_writers_temporaries_are_removed() -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir()?;
        let target = dir.path().join("eval.json");
        // A killed writer's leftover (no process has this id: pid_max is at most 2^22) and
        // a live writer's file (this process).
        let dead = dir.path().join("eval.json.999999999.aBc123.tmp");
        let live = dir.path().join(format!("eval.json.{}.xYz789.tmp", std::process::id()));
        let other = dir.path().join("train.json.999999999.aBc123.tmp");
        for path in [&dead, &live, &other] {
            write(path, "partial")?;
        }
        write_file_atomic(&target, "{}")?;
        assert!(!dead.exists(), "a dead writer's temporary is removed");
        assert!(live.exists(), "a live writer's temporary is kept");
        assert!(other.exists(), "another file's temporary is not this write's business");
        let mode = fs::metadata(&target).map_err(io(&target))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask(), "mode {mode:o}");
        Ok(())
    }

    #[test]
    fn checked_files_round_trip_and_refuse_any_flipped_bit() -> Result<()> {
        let dir = temp_dir()?;
        let path = dir.path().join("w.safetensors");
        write_checked_safetensors(&named(), &path)?;
        let read = read_checked_safetensors(&path)?;
        assert_eq!(read.len(), 2, "the checksum entry is not handed out");
        assert_eq!(Vec::<f32>::try_from(read["b.weight"].view([-1]))?, [1.0, -2.5, 3.25]);
        assert_eq!(i64::try_from(&read["a.step"])?, 7);

        let bytes = fs::read(&path).map_err(io(&path))?;
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()) as usize;
        let mut refused = 0;
        // Every bit of the data section: each flip is caught (or breaks the file).
        for byte in 8 + header..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                let flipped = dir.path().join("flipped.safetensors");
                write(&flipped, &damaged)?;
                match read_checked_safetensors(&flipped) {
                    Err(fusion_nn::Error::Damaged { path, reason }) => {
                        assert_eq!(path, flipped);
                        assert!(!reason.is_empty());
                        refused += 1;
                    }
                    other => panic!("byte {byte} bit {bit}: {other:?}"),
                }
            }
        }
        assert_eq!(refused, (bytes.len() - 8 - header) * 8);
        Ok(())
    }

    #[test]
    fn files_without_a_checksum_are_read_as_they_are() -> Result<()> {
        let dir = temp_dir()?;
        let path = dir.path().join("plain.safetensors");
        Tensor::write_safetensors(&named(), &path)?;
        let read = read_checked_safetensors(&path)?;
        assert_eq!(read["b.weight"].kind(), Kind::Float);
        assert!(matches!(
            read_checked_safetensors(dir.path()),
            Err(fusion_nn::Error::Damaged { reason, .. }) if reason.contains("regular file")
        ));
        Ok(())
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() -> Result<()> {
        let dir = temp_dir()?;
        let path = dir.path().join("state.json");
        write_file_atomic(&path, "old")?;
        let failed = write_atomic(&path, |tmp| {
            write(tmp, "half")?;
            Err(Error::Config("disk full".into()))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(&path).unwrap_or_default(), "old");
        let names: Vec<String> = fs::read_dir(dir.path())
            .map_err(io(dir.path()))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, ["state.json"]);
        Ok(())
    }

    #[test]
    fn run_locks_nest_within_a_process() -> Result<()> {
        let dir = temp_dir()?;
        let outer = RunLock::acquire(dir.path())?;
        let inner = RunLock::acquire(dir.path())?;
        drop(outer);
        // Still held by `inner`: another open file description cannot take it.
        let other = File::open(dir.path().join(".lock")).map_err(io(dir.path()))?;
        assert!(matches!(other.try_lock(), Err(fs::TryLockError::WouldBlock)));
        drop(inner);
        assert!(other.try_lock().is_ok(), "released with the last guard");
        Ok(())
    }
}
