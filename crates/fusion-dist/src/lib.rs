//! # fusion-dist
//!
//! Data-parallel training for [`fusion_core`] on PyTorch's own collective engine: c10d, the
//! library under `torch.distributed` and DistributedDataParallel, with its Gloo backend
//! (TCP, CPU tensors; CUDA tensors go through host memory). It is already inside the
//! libtorch this workspace links; a small C++ shim compiled against libtorch's headers
//! reaches it, so there is nothing to install and nothing hand-written on the wire.
//!
//! Why Gloo through c10d rather than MPI or NCCL: it needs no extra system package or
//! launcher (MPI needs OpenMPI and `mpirun`), it runs on CPU (NCCL needs GPUs, so CI could
//! never test it), and its rendezvous (rank 0 serves a TCP store at `--master`) is the one
//! PyTorch users already know from `torchrun`.
//!
//! ```no_run
//! use fusion_dist::{GlooGroup, Master};
//! # fn main() -> fusion_core::Result<()> {
//! let master: Master = "10.0.0.1:29500".parse()?;
//! // Every rank holds the same secret (here from FUSION_DIST_SECRET) and proves it on joining.
//! let secret = fusion_dist::SharedSecret::from_env()?;
//! let group = GlooGroup::join(&master, 1, 2, std::time::Duration::from_secs(600), secret.as_ref())?;
//! // fusion_core::Learner::new(&model, &vs, &config)
//! //     .with_strategy(fusion_core::Strategy::DataParallel(&group))
//! //     .fit(&train, val, &run, &mut |_| {})?;
//! # Ok(()) }
//! ```
//!
//! Trust: the rendezvous and Gloo's connections are plain TCP. Rank 0 listens on the
//! `--master` address alone; with a [`SharedSecret`] every rank proves, before the group
//! exchanges anything else, that it holds the secret (HMAC-SHA256 over nonces every rank
//! contributes, so an old proof cannot be replayed), and a group with a rank that cannot
//! is refused on every rank. A process that reaches the port can still stop a group from
//! forming, and nothing is encrypted: across networks you do not trust, run the ranks
//! inside a VPN or an SSH tunnel.
// The shim is C++ behind a C interface: calling it is unsafe by nature.
#![allow(unsafe_code)]

use std::{
    ffi::{CStr, CString, c_char, c_int, c_long, c_void},
    fmt,
    str::FromStr,
    time::Duration,
};

use fusion_core::{Error, ProcessGroup, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tch::{Kind, Tensor};

unsafe extern "C" {
    fn fusion_c10d_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: c_long,
        listen_fd: c_int,
        listen_local: c_int,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn fusion_c10d_drop(group: *mut c_void);
    fn fusion_c10d_all_reduce_sum(group: *mut c_void, tensor: *mut c_void) -> *mut c_char;
    fn fusion_c10d_broadcast(group: *mut c_void, tensor: *mut c_void, root: c_int) -> *mut c_char;
    fn fusion_c10d_barrier(group: *mut c_void) -> *mut c_char;
    fn fusion_c10d_free_error(message: *mut c_char);
}

/// Where rank 0 serves the rendezvous: `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    /// Host name or address every rank can reach.
    pub host: String,
    /// TCP port (rank 0 listens on it).
    pub port: u16,
}

impl FromStr for Master {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |reason: &str| Error::Config(format!("--master `{text}`: {reason} (expected HOST:PORT)"));
        let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number in 1..65535"))?;
        if port == 0 {
            return Err(bad("port 0 cannot be reached"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl Master {
    /// Whether the host is this machine's loopback (`localhost`, `127.x.y.z`, `::1`): the
    /// whole group then talks over the loopback interface alone.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The environment variable [`SharedSecret::from_env`] reads.
pub const SECRET_ENV: &str = "FUSION_DIST_SECRET";

/// Shortest secret accepted, in bytes.
const MIN_SECRET_BYTES: usize = 16;
/// Longest secret read, in bytes (a secret file is never a large file).
const MAX_SECRET_BYTES: usize = 4096;

/// A secret the ranks of a group share: each must prove it holds it before the group
/// forms. Never printed.
#[derive(Clone)]
pub struct SharedSecret(Vec<u8>);

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

impl SharedSecret {
    /// A secret from its bytes: at least 16 and at most 4096 (`what` names the source).
    pub fn new(bytes: &[u8], what: &str) -> Result<Self> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(Error::Config(format!(
                "{what}: a shared secret has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, this one {}",
                bytes.len()
            )));
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The secret in [`SECRET_ENV`], if it is set.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var_os(SECRET_ENV) {
            None => Ok(None),
            Some(value) => {
                use std::os::unix::ffi::OsStrExt;
                Self::new(value.as_bytes(), SECRET_ENV).map(Some)
            }
        }
    }

    /// The secret in a file that only its owner can read (a trailing line break is not
    /// part of it): a file others can read is refused, as `ssh` refuses such a key.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        use std::{io::Read, os::unix::fs::PermissionsExt};
        let io = |source| Error::Io {
            path: path.into(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let metadata = file.metadata().map_err(io)?;
        let what = format!("secret file {}", path.display());
        if !metadata.is_file() {
            return Err(Error::Config(format!("{what}: not a regular file")));
        }
        if metadata.permissions().mode() & 0o077 != 0 {
            return Err(Error::Config(format!(
                "{what}: readable by others (mode {:o}); `chmod 600` it",
                metadata.permissions().mode() & 0o777
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_SECRET_BYTES as u64 + 2)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        Self::new(text, &what)
    }

    /// A fresh random secret (32 bytes from the system's generator, as hex text, so it
    /// can travel in [`SECRET_ENV`]).
    pub fn generate() -> Result<Self> {
        let bytes = random_bytes::<32>()?;
        Ok(Self(hex(&bytes).into_bytes()))
    }

    /// The secret's bytes (to hand to ranks this process starts, in [`SECRET_ENV`]).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// HMAC-SHA256 of `message` under the secret.
    fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from the system's random generator.
fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::Io {
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(bytes)
}

/// 32 bytes as four i64 (how they travel in a collective) and back.
fn to_words(bytes: &[u8; 32]) -> [i64; 4] {
    std::array::from_fn(|i| i64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap_or_default()))
}

fn from_words(words: &[i64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// One process's membership of a c10d Gloo process group.
pub struct GlooGroup {
    raw: *mut c_void,
    rank: usize,
    world: usize,
}

impl fmt::Debug for GlooGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlooGroup")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .finish()
    }
}

/// Turns the shim's error message (if any) into an [`Error`], freeing it.
fn checked(message: *mut c_char, what: &str) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string malloc'd by the shim, freed once here.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    unsafe { fusion_c10d_free_error(message) };
    // c10 appends a C++ backtrace after the first line: the first line is the reason.
    let reason = text.lines().next().unwrap_or("").trim();
    Err(Error::Collective(format!("{what}: {reason}")))
}

impl GlooGroup {
    /// Joins the group of `world` processes as `rank`: rank 0 serves the rendezvous store
    /// on `master` (bound to that address alone: `127.0.0.1` is reachable from this
    /// machine only) and every rank connects to it. With a `secret`, every rank then proves
    /// it holds the same one before anything else is exchanged; a rank that cannot, or a
    /// group where some ranks have a secret and others none, is an error on every rank.
    /// Returns once all `world` have joined, or fails after `timeout` (which also bounds
    /// every later collective).
    pub fn join(
        master: &Master,
        rank: usize,
        world: usize,
        timeout: Duration,
        secret: Option<&SharedSecret>,
    ) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(Error::Config(format!(
                "rank {rank} of a world of {world}: ranks run 0..world-1 and the world has at least one process"
            )));
        }
        let as_int = |value: usize, name: &str| {
            c_int::try_from(value).map_err(|_| Error::Config(format!("{name} {value} is too large")))
        };
        let host = CString::new(master.host.as_str())
            .map_err(|_| Error::Config(format!("--master host `{}` holds a NUL byte", master.host)))?;
        let timeout_ms = c_long::try_from(timeout.as_millis()).unwrap_or(c_long::MAX);
        // Rank 0 listens on the master address only (c10d alone would listen on every
        // interface); the store takes the socket over.
        let listen_fd = if rank == 0 {
            use std::os::fd::IntoRawFd;
            let listener = std::net::TcpListener::bind((master.host.as_str(), master.port))
                .map_err(|e| Error::Collective(format!("rank 0 cannot listen on {master}: {e}")))?;
            listener.into_raw_fd()
        } else {
            -1
        };
        let mut raw = std::ptr::null_mut();
        // SAFETY: `host` outlives the call; `raw` is written only on success; the shim owns
        // `listen_fd` from here on (the store closes it).
        let message = unsafe {
            fusion_c10d_new(
                host.as_ptr(),
                c_int::from(master.port),
                as_int(rank, "rank")?,
                as_int(world, "world size")?,
                timeout_ms,
                listen_fd,
                c_int::from(master.is_loopback()),
                &mut raw,
            )
        };
        let joining = format!("rank {rank} of {world} joining at {master}");
        checked(message, &joining)?;
        let group = Self { raw, rank, world };
        group
            .prove(secret)
            .map_err(|e| Error::Collective(format!("{joining}: {e}")))?;
        Ok(group)
    }

    /// Every rank contributes a fresh nonce (and says whether it holds a secret); with a
    /// secret, every rank then sends its HMAC of (rank, world, all nonces) and checks
    /// everyone else's. The nonces make each proof good for this group alone.
    fn prove(&self, secret: Option<&SharedSecret>) -> Result<()> {
        let nonce = to_words(&random_bytes::<32>()?);
        let mut contributions = Vec::with_capacity(self.world);
        for root in 0..self.world {
            let mut words = match root == self.rank {
                true => Tensor::from_slice(&[[i64::from(secret.is_some())].as_slice(), &nonce].concat()),
                false => Tensor::zeros([5], (Kind::Int64, tch::Device::Cpu)),
            };
            self.broadcast(&mut words, root)?;
            contributions.push(Vec::<i64>::try_from(&words)?);
        }
        let holding: Vec<usize> = (0..self.world).filter(|&r| contributions[r][0] == 1).collect();
        let Some(secret) = secret else {
            return match holding.first() {
                None => Ok(()),
                Some(r) => Err(Error::Collective(format!(
                    "rank {r} holds a shared secret and this rank none: give every rank the same one"
                ))),
            };
        };
        if let Some(r) = (0..self.world).find(|r| !holding.contains(r)) {
            return Err(Error::Collective(format!(
                "rank {r} holds no shared secret and this rank one: give every rank the same one"
            )));
        }
        let mut transcript = format!("fusion-dist v1 world {}", self.world).into_bytes();
        for words in &contributions {
            transcript.extend(from_words(&words[1..]));
        }
        let proof_of = |rank: usize| {
            let mut message = transcript.clone();
            message.extend((rank as u64).to_le_bytes());
            secret.sign(&message)
        };
        let mut refused = Vec::new();
        for root in 0..self.world {
            let mut words = match root == self.rank {
                true => Tensor::from_slice(&to_words(&proof_of(root))),
                false => Tensor::zeros([4], (Kind::Int64, tch::Device::Cpu)),
            };
            self.broadcast(&mut words, root)?;
            let received = from_words(&Vec::<i64>::try_from(&words)?);
            // Compared in constant time.
            let difference = proof_of(root).iter().zip(&received).fold(0u8, |d, (a, b)| d | (a ^ b));
            if difference != 0 || received.len() != 32 {
                refused.push(root);
            }
        }
        match refused.is_empty() {
            true => Ok(()),
            false => Err(Error::Collective(format!(
                "rank(s) {refused:?} did not prove the shared secret: this group is refused (is every rank given the same {SECRET_ENV} or secret file?)"
            ))),
        }
    }
}

/// Gloo reduces CPU and CUDA tensors in their own memory: they must be dense.
fn dense(tensor: &Tensor, what: &str) -> Result<()> {
    if tensor.is_contiguous() {
        Ok(())
    } else {
        Err(Error::Collective(format!("{what}: the tensor is not contiguous")))
    }
}

impl ProcessGroup for GlooGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, tensor: &mut Tensor) -> Result<()> {
        dense(tensor, "all-reduce")?;
        // SAFETY: the shim reads the at::Tensor handle behind tch's pointer and writes into
        // its storage in place; `tensor` is borrowed mutably for the whole call.
        let message = unsafe { fusion_c10d_all_reduce_sum(self.raw, tensor.as_mut_ptr().cast()) };
        checked(message, "all-reduce")
    }

    fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        dense(tensor, "broadcast")?;
        let root = c_int::try_from(root).map_err(|_| Error::Config(format!("broadcast root {root} is too large")))?;
        // SAFETY: as in `all_reduce_sum`.
        let message = unsafe { fusion_c10d_broadcast(self.raw, tensor.as_mut_ptr().cast(), root) };
        checked(message, "broadcast")
    }

    fn barrier(&self) -> Result<()> {
        // SAFETY: `self.raw` is a live group made by `fusion_c10d_new`.
        checked(unsafe { fusion_c10d_barrier(self.raw) }, "barrier")
    }
}

impl Drop for GlooGroup {
    fn drop(&mut self) {
        // SAFETY: made by `fusion_c10d_new`, dropped once.
        unsafe { fusion_c10d_drop(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_addresses_parse_and_bad_ones_name_the_reason() {
        let master: Master = "10.0.0.1:29500".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            master,
            Master {
                host: "10.0.0.1".into(),
                port: 29500
            }
        );
        assert_eq!(master.to_string(), "10.0.0.1:29500");
        let v6: Master = "[::1]:8000".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v6.host, "::1");
        for (text, reason) in [
            ("localhost", "no port"),
            (":29500", "no host"),
            ("host:http", "not a number"),
            ("host:70000", "not a number"),
            ("host:0", "port 0"),
        ] {
            let error = text.parse::<Master>().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(reason) && error.contains(text), "{text}: {error}");
        }
    }

    #[test]
    fn a_rank_outside_the_world_is_refused_before_any_connection() {
        let master: Master = "127.0.0.1:1".parse().unwrap_or_else(|e| panic!("{e}"));
        for (rank, world) in [(2, 2), (0, 0)] {
            let error = GlooGroup::join(&master, rank, world, Duration::from_secs(1), None).err();
            assert!(matches!(error, Some(Error::Config(_))), "{rank}/{world}: {error:?}");
        }
    }

    #[test]
    fn a_world_of_one_reduces_and_broadcasts_to_itself() {
        let port = free_port();
        let master = Master {
            host: "127.0.0.1".into(),
            port,
        };
        let group = GlooGroup::join(&master, 0, 1, Duration::from_secs(30), None).unwrap_or_else(|e| panic!("{e}"));
        let mut values = Tensor::from_slice(&[1.5f32, -2.0, 3.0]);
        group.all_reduce_sum(&mut values).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Vec::<f32>::try_from(&values).unwrap_or_default(), [1.5, -2.0, 3.0]);
        let strided = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]).tr();
        let mut strided = strided.shallow_clone();
        assert!(matches!(group.all_reduce_sum(&mut strided), Err(Error::Collective(_))));
        group.barrier().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Sockets listening on `port`, as `/proc/net/tcp{,6}` lists them (local address in
    /// hex, as the kernel writes it).
    fn listening_on(port: u16) -> Vec<String> {
        let mut found = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                    continue;
                };
                let Some((address, hex_port)) = local.rsplit_once(':') else {
                    continue;
                };
                if *state == "0A" && u16::from_str_radix(hex_port, 16) == Ok(port) {
                    found.push(address.to_string());
                }
            }
        }
        found
    }

    /// The rendezvous of a group at 127.0.0.1 listens on 127.0.0.1 alone, not on every
    /// interface (c10d's own bind is the wildcard address).
    #[test]
    fn the_rendezvous_listens_on_the_master_address_only() {
        let port = free_port();
        let master = Master {
            host: "127.0.0.1".into(),
            port,
        };
        assert!(master.is_loopback());
        let group = GlooGroup::join(&master, 0, 1, Duration::from_secs(30), None).unwrap_or_else(|e| panic!("{e}"));
        // 127.0.0.1 as /proc/net/tcp writes it (little-endian hex).
        assert_eq!(listening_on(port), ["0100007F"]);
        drop(group);
        let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap_or_else(|e| panic!("{e}"));
        let busy = Master {
            host: "127.0.0.1".into(),
            port: taken.local_addr().map(|a| a.port()).unwrap_or(1),
        };
        let error = GlooGroup::join(&busy, 0, 1, Duration::from_secs(5), None)
            .err()
            .map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("cannot listen on 127.0.0.1:")),
            "{error:?}"
        );
    }

    /// Secrets too short, and files others can read, are refused (joining with a secret:
    /// `tests/data_parallel.rs`, whose ranks are processes).
    #[test]
    fn secrets_too_short_or_readable_by_others_are_refused() {
        assert!(SharedSecret::new(b"short", "test").is_err());
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("secret");
        std::fs::write(&file, "a secret of enough bytes\n").unwrap_or_else(|e| panic!("{e}"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap_or_else(|e| panic!("{e}"));
        let error = SharedSecret::from_file(&file)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("readable by others"), "{error}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap_or_else(|e| panic!("{e}"));
        let read = SharedSecret::from_file(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.expose(), b"a secret of enough bytes");
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(29500)
    }
}
