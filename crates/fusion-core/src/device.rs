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
    /// The device named by the environment variable `name` (written as `--device` takes it),
    /// the CPU when it is unset: how device-aware tests learn where to run
    /// (`FUSION_TEST_DEVICE`). An unknown or unavailable device is an error naming it.
    pub fn from_env(name: &str) -> Result<tch::Device> {
        Self::from_setting(name, std::env::var(name).ok())
    }

    /// [`Self::from_env`] of a value already read.
    fn from_setting(name: &str, value: Option<String>) -> Result<tch::Device> {
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

/// Number of CUDA devices libtorch sees (0 on a CPU-only machine or build).
pub fn cuda_device_count() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
