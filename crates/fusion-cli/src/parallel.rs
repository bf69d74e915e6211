//! `fusion train --world-size N`: data-parallel training, one process per rank, through
//! fusion-dist (PyTorch's c10d with Gloo). With `--rank R --master HOST:PORT` this process
//! is one rank (start one per rank, on one machine or several); without `--rank` it starts
//! N local ranks itself and waits for them.

use std::{
    os::unix::ffi::OsStrExt,
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use fusion_core::DeviceChoice;
use fusion_dist::{GlooGroup, Master, SECRET_ENV, SharedSecret};

/// Data-parallel flags of `fusion train`.
#[derive(Debug, Clone, clap::Args)]
pub struct ParallelArgs {
    /// Processes training together (data parallel; 1: this process alone).
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub world_size: usize,
    /// This process's rank (0..world-size); without it, `--world-size N` starts N local ranks.
    #[arg(long, requires = "master")]
    pub rank: Option<usize>,
    /// Where rank 0 serves the rendezvous: HOST:PORT, reachable by every rank.
    #[arg(long, requires = "rank")]
    pub master: Option<Master>,
    /// Minutes a rank waits for the others: to join, at each step, and while rank 0
    /// extracts the features the others then read from its cache.
    #[arg(long, default_value_t = 30, value_parser = at_least_one)]
    pub group_timeout: usize,
    /// A file (readable by its owner alone) holding a secret every rank must prove it
    /// holds before the group forms; FUSION_DIST_SECRET gives one too. Ranks this
    /// process starts itself share a fresh random one.
    #[arg(long, requires = "rank")]
    pub secret_file: Option<std::path::PathBuf>,
}

fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{text}` is not a whole number of at least 1")),
    }
}

impl ParallelArgs {
    /// This process's group when it is one rank of several.
    pub fn join(&self) -> Result<Option<GlooGroup>> {
        match (&self.rank, &self.master) {
            (Some(rank), Some(master)) => {
                let timeout = Duration::from_secs(60 * self.group_timeout as u64);
                let secret = match &self.secret_file {
                    Some(path) => Some(SharedSecret::from_file(path)?),
                    None => SharedSecret::from_env()?,
                };
                let group = GlooGroup::join(master, *rank, self.world_size, timeout, secret.as_ref())?;
                Ok(Some(group))
            }
            _ => Ok(None),
        }
    }

    /// Whether this process should start the ranks itself.
    pub fn launches(&self) -> bool {
        self.world_size > 1 && self.rank.is_none()
    }
}

/// Starts `world` ranks of this program training `config` into `run` and waits for them.
/// Rank 0 prints as this process would; the others print errors only. When one rank fails
/// the others are stopped.
pub fn launch(
    parallel: &ParallelArgs,
    config: &Path,
    run: &Path,
    epochs: Option<usize>,
    device: DeviceChoice,
    json: bool,
) -> Result<()> {
    let world = parallel.world_size;
    let master = format!("127.0.0.1:{}", free_port()?);
    let exe = std::env::current_exe().context("cannot find this program to start its ranks")?;
    // The cores shared out, as torchrun does: ranks whose thread pools each span every core
    // spin against one another (measured: 18× slower than one process on 2 cores).
    let threads = std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        (cores / world).max(1).to_string()
    });
    // The local ranks prove this to one another: a process that reaches the port
    // cannot join them.
    let secret = SharedSecret::generate()?;
    let mut ranks: Vec<Child> = Vec::with_capacity(world);
    for rank in 0..world {
        let mut command = Command::new(&exe);
        command.env("OMP_NUM_THREADS", &threads);
        command.env(SECRET_ENV, std::ffi::OsStr::from_bytes(secret.expose()));
        command.arg("--device").arg(rank_device(device, rank).to_string());
        if rank > 0 {
            command.arg("--quiet");
        } else if json {
            command.arg("--json");
        }
        command
            .arg("train")
            .arg("--config")
            .arg(config)
            .arg("--run")
            .arg(run)
            .args(["--world-size", &world.to_string(), "--rank", &rank.to_string()])
            .args(["--master", &master])
            .args(["--group-timeout", &parallel.group_timeout.to_string()]);
        if let Some(epochs) = epochs {
            command.args(["--epochs", &epochs.to_string()]);
        }
        end_with_this_process(&mut command);
        match command.spawn() {
            Ok(child) => ranks.push(child),
            Err(e) => {
                stop(&mut ranks);
                bail!("cannot start rank {rank}: {e}");
            }
        }
    }
    // Waits for the first rank to end; a failure stops the rest (they would wait for it
    // until the group's timeout).
    let mut failed = None;
    let mut running = world;
    while running > 0 {
        running = 0;
        for (rank, child) in ranks.iter_mut().enumerate() {
            match child.try_wait() {
                Ok(Some(status)) if !status.success() && failed.is_none() => failed = Some((rank, status)),
                Ok(Some(_)) => {}
                Ok(None) => running += 1,
                Err(e) => {
                    stop(&mut ranks);
                    bail!("rank {rank}: {e}; the ranks were stopped");
                }
            }
        }
        if failed.is_some() {
            stop(&mut ranks);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match failed {
        Some((rank, status)) => bail!("rank {rank} of {world} failed ({status}); the other ranks were stopped"),
        None => Ok(()),
    }
}

/// A local rank's device: rank r on the r-th GPU (modulo their count) when CUDA is asked for.
fn rank_device(device: DeviceChoice, rank: usize) -> DeviceChoice {
    let gpus = fusion_core::cuda_device_count().max(1);
    match device {
        DeviceChoice::Cuda(first) => DeviceChoice::Cuda((first + rank) % gpus),
        DeviceChoice::Auto if fusion_core::cuda_available() => DeviceChoice::Cuda(rank % gpus),
        other => other,
    }
}

/// A rank is sent SIGTERM when this launcher dies however it dies (SIGKILL too), instead
/// of training on alone and holding the run folder's lock.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn end_with_this_process(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec; prctl is a plain system call
    // (async-signal-safe) and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn end_with_this_process(_command: &mut Command) {}

fn stop(ranks: &mut [Child]) {
    for child in ranks.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free local port for the rendezvous")?;
    Ok(listener.local_addr()?.port())
}
