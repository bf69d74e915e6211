use std::{fmt, str::FromStr};

use crate::{Error, Result};

/// Where a model runs, as a user writes it (`--device cpu|cuda|cuda:N|auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU.
    Cpu,
    /// CUDA device with this index; an error when it is not there.
    Cuda(usize),
    /// The first GPU when one is usable, else the CPU.
    #[default]
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(Self::Auto),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|index| index.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| Error::UnknownDevice(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

impl DeviceChoice {
    /// The device a setting named `name` asks for (unset: the CPU); an unknown or
    /// unavailable device is an error naming the setting.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn from_setting(name: &str, value: Option<String>) -> Result<tch::Device> {
        match value {
            None => Ok(tch::Device::Cpu),
            Some(choice) => choice
                .parse::<Self>()
                .and_then(Self::resolve)
                .map_err(|e| Error::Config(format!("{name}={choice}: {e}"))),
        }
    }

    /// The libtorch device this choice means on this machine.
    pub fn resolve(self) -> Result<tch::Device> {
        match self {
            Self::Cpu => Ok(tch::Device::Cpu),
            Self::Auto => Ok(tch::Device::cuda_if_available()),
            Self::Cuda(index) => {
                let visible = cuda_device_count();
                if index < visible {
                    Ok(tch::Device::Cuda(index))
                } else {
                    Err(Error::CudaUnavailable {
                        requested: self.to_string(),
                        visible,
                    })
                }
            }
        }
    }
}

/// Whether libtorch can use a CUDA GPU from this process.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

/// This process's peak resident memory in bytes (`VmHWM`), where the system reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_bytes("/proc/self/status", "VmHWM")
}

/// A `Key:   N kB` line of a Linux /proc file, in bytes.
pub(crate) fn proc_bytes(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text
        .lines()
        .find(|l| l.strip_prefix(key).is_some_and(|rest| rest.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Number of CUDA devices libtorch sees (0 on a CPU-only machine or build).
pub fn cuda_device_count() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

// The C++ shim (csrc/shim.cpp): c10's allocator interface, which tch does not wrap.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn fusion_cuda_peak_bytes(index: std::ffi::c_int, allocated: *mut i64, reserved: *mut i64) -> std::ffi::c_int;
    fn fusion_cuda_reset_peak(index: std::ffi::c_int) -> std::ffi::c_int;
}

/// The most GPU memory libtorch's caching allocator has held, in bytes, since the process
/// started or [`reset_gpu_peak_memory`] (what `torch.cuda.max_memory_allocated` and
/// `max_memory_reserved` read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GpuMemory {
    /// Peak bytes in live tensors.
    pub peak_allocated: u64,
    /// Peak bytes the allocator reserved from the driver (what the GPU lent this process).
    pub peak_reserved: u64,
}

/// [`GpuMemory`] of a CUDA `device`; `None` on the CPU or where CUDA is not in use.
pub fn gpu_peak_memory(device: tch::Device) -> Option<GpuMemory> {
    let tch::Device::Cuda(index) = device else {
        return None;
    };
    let (mut allocated, mut reserved) = (0i64, 0i64);
    // SAFETY: the shim writes both integers only on success, and catches every C++ exception.
    #[allow(unsafe_code)]
    let status =
        unsafe { fusion_cuda_peak_bytes(std::ffi::c_int::try_from(index).ok()?, &mut allocated, &mut reserved) };
    (status == 0).then(|| GpuMemory {
        peak_allocated: allocated.max(0) as u64,
        peak_reserved: reserved.max(0) as u64,
    })
}

/// Starts [`gpu_peak_memory`] of a CUDA `device` afresh; nothing elsewhere.
pub fn reset_gpu_peak_memory(device: tch::Device) {
    if let tch::Device::Cuda(index) = device
        && let Ok(index) = std::ffi::c_int::try_from(index)
    {
        // SAFETY: the shim catches every C++ exception; a device without CUDA returns -1.
        #[allow(unsafe_code)]
        let _ = unsafe { fusion_cuda_reset_peak(index) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_are_read_by_their_whole_key() {
        assert!(
            peak_rss_bytes().is_some_and(|b| b > 1 << 20),
            "a process holds over a MiB"
        );
        // `VmHW` is a prefix of `VmHWM`, not a key of its own.
        assert_eq!(proc_bytes("/proc/self/status", "VmHW"), None);
        assert_eq!(proc_bytes("/no/such/file", "VmHWM"), None);
    }

    #[test]
    fn gpu_peak_memory_follows_allocations_and_the_cpu_has_none() {
        assert_eq!(gpu_peak_memory(tch::Device::Cpu), None);
        if !cuda_available() {
            // No allocator is registered for a GPU this process cannot use.
            assert_eq!(gpu_peak_memory(tch::Device::Cuda(0)), None);
            return;
        }
        let device = tch::Device::Cuda(0);
        reset_gpu_peak_memory(device);
        let before = gpu_peak_memory(device).map_or(0, |m| m.peak_allocated);
        let big = tch::Tensor::zeros([64 << 20], (tch::Kind::Float, device));
        let during = gpu_peak_memory(device).map_or(0, |m| m.peak_allocated);
        assert!(during >= before + (256 << 20), "{before} then {during}");
        drop(big);
        reset_gpu_peak_memory(device);
        let after = gpu_peak_memory(device).map_or(0, |m| m.peak_allocated);
        assert!(after < during, "the reset keeps {after} of {during}");
    }

    #[test]
    fn parses_every_spelling_and_rejects_others() {
        assert_eq!("cpu".parse::<DeviceChoice>().ok(), Some(DeviceChoice::Cpu));
        assert_eq!(" CUDA ".parse::<DeviceChoice>().ok(), Some(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceChoice>().ok(), Some(DeviceChoice::Cuda(3)));
        assert_eq!("auto".parse::<DeviceChoice>().ok(), Some(DeviceChoice::Auto));
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1"] {
            assert!(matches!(bad.parse::<DeviceChoice>(), Err(Error::UnknownDevice(s)) if s == bad));
        }
    }

    #[test]
    fn cuda_request_beyond_visible_devices_is_an_error() {
        let past_last = DeviceChoice::Cuda(cuda_device_count());
        assert!(matches!(past_last.resolve(), Err(Error::CudaUnavailable { .. })));
        assert_eq!(DeviceChoice::Cpu.resolve().ok(), Some(tch::Device::Cpu));
        let auto = DeviceChoice::Auto.resolve().ok();
        let expected = if cuda_available() {
            tch::Device::Cuda(0)
        } else {
            tch::Device::Cpu
        };
        assert_eq!(auto, Some(expected));
    }

    #[test]
    fn the_device_of_an_environment_variable() {
        let name = "FUSION_TEST_DEVICE";
        let device = |value: Option<&str>| DeviceChoice::from_setting(name, value.map(String::from));
        assert_eq!(device(None).ok(), Some(tch::Device::Cpu), "unset: the CPU");
        assert_eq!(device(Some("cpu")).ok(), Some(tch::Device::Cpu));
        let error = device(Some("tpu")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("FUSION_TEST_DEVICE=tpu"), "{error}");
        let missing = format!("cuda:{}", cuda_device_count());
        assert!(device(Some(&missing)).is_err(), "a GPU that is not there");
    }
}
