//! Mixed-precision training: the forward pass under autocast (matrix products in float16 or
//! bfloat16, reductions and losses in float32, as `torch.autocast`), and for float16 a
//! dynamic loss scale (as `torch.amp.GradScaler`) so that small gradients do not flush to
//! zero. bfloat16 has float32's range and needs no scale.

use std::ffi::c_int;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

// The C++ shim (csrc/shim.cpp): tch enables autocast in float16 on CUDA only.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn fusion_autocast_enter(device_type: c_int, dtype: c_int) -> c_int;
    fn fusion_autocast_exit(device_type: c_int) -> c_int;
    fn fusion_autocast_set_enabled(device_type: c_int, enabled: c_int) -> c_int;
}

/// Precision of the training forward pass ([`crate::TrainConfig::precision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// float32 throughout.
    #[default]
    Fp32,
    /// Autocast to bfloat16 (GPUs from Ampere on, and CPUs).
    Bf16,
    /// Autocast to float16 with a dynamic loss scale.
    Fp16,
}

impl Precision {
    pub(crate) fn is_fp32(&self) -> bool {
        *self == Self::Fp32
    }
}

/// Autocast on a device while it lives.
#[derive(Debug)]
pub struct Autocast {
    device_type: c_int,
}

impl Autocast {
    /// Starts autocast on `device` in `precision`; `None` for float32.
    pub fn enter(precision: Precision, device: Device) -> Result<Option<Self>> {
        let dtype = match precision {
            Precision::Fp32 => return Ok(None),
            Precision::Fp16 => 0,
            Precision::Bf16 => 1,
        };
        let device_type = c_int::from(device.is_cuda());
        // SAFETY: the shim catches every C++ exception and only sets thread-local state.
        #[allow(unsafe_code)]
        let status = unsafe { fusion_autocast_enter(device_type, dtype) };
        match status {
            0 => {
                AUTOCAST_ON.with(|on| on.set(on.get() + 1));
                Ok(Some(Self { device_type }))
            }
            _ => Err(Error::Config(format!(
                "autocast to {precision:?} on {device:?} is not available"
            ))),
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        AUTOCAST_ON.with(|on| on.set(on.get().saturating_sub(1)));
        // SAFETY: as in `enter`.
        #[allow(unsafe_code)]
        let _ = unsafe { fusion_autocast_exit(self.device_type) };
    }
}

thread_local! {
    /// Autocast scopes open on this thread ([`Autocast`]; libtorch's own flag reads as on
    /// before any scope has turned it on).
    static AUTOCAST_ON: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f` with autocast off on `device`, and on again afterwards when a scope had it on
/// (a panic in `f` included): for the few computations that must stay in float32 under
/// mixed precision.
pub(crate) fn full_precision<T>(device: Device, f: impl FnOnce() -> T) -> T {
    struct Restore(c_int);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: as in `Autocast::enter`.
            #[allow(unsafe_code)]
            let _ = unsafe { fusion_autocast_set_enabled(self.0, 1) };
        }
    }
    if AUTOCAST_ON.with(std::cell::Cell::get) == 0 {
        return f();
    }
    let device_type = c_int::from(device.is_cuda());
    // SAFETY: as in `Autocast::enter`.
    #[allow(unsafe_code)]
    let _ = unsafe { fusion_autocast_set_enabled(device_type, 0) };
    let _restore = Restore(device_type);
    f()
}

/// The loss scale of float16 training: the loss is multiplied by it before the backward
/// pass and the gradients divided by it after; a step whose gradients overflow is skipped
/// and the scale halved, and after [`LossScaler::GROWTH_INTERVAL`] steps without overflow
/// it doubles (torch.amp.GradScaler's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaler {
    /// The current scale.
    pub scale: f64,
    /// Steps since the last overflow or growth.
    pub good_steps: u32,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: Self::INITIAL,
            good_steps: 0,
        }
    }
}

impl LossScaler {
    /// Starting scale.
    pub const INITIAL: f64 = 65536.0;
    /// Steps without overflow before the scale doubles.
    pub const GROWTH_INTERVAL: u32 = 2000;

    /// Divides `grads` by the scale; returns whether they are all finite (the step may be
    /// taken), and updates the scale. Reads one number back from the device.
    pub fn unscale(&mut self, grads: &[Tensor]) -> Result<bool> {
        let mut total = Tensor::zeros([], (Kind::Double, grads.first().map_or(Device::Cpu, Tensor::device)));
        tch::no_grad(|| {
            for grad in grads {
                let mut grad = grad.shallow_clone();
                let _ = grad.g_div_scalar_(self.scale);
                total += grad.abs().sum(Kind::Double);
            }
        });
        let finite = f64::try_from(&total)?.is_finite();
        if finite {
            self.good_steps += 1;
            if self.good_steps >= Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
        }
        Ok(finite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_halves_the_scale_and_skips_and_good_steps_grow_it() -> Result<()> {
        let mut scaler = LossScaler::default();
        let grads = [Tensor::from_slice(&[65536.0f32, -131072.0])];
        assert!(scaler.unscale(&grads)?);
        assert_eq!(Vec::<f32>::try_from(&grads[0])?, [1.0, -2.0], "divided by the scale");
        let overflow = [Tensor::from_slice(&[1.0f32, f32::INFINITY])];
        assert!(!scaler.unscale(&overflow)?);
        assert_eq!(
            scaler,
            LossScaler {
                scale: 32768.0,
                good_steps: 0
            }
        );
        scaler.good_steps = LossScaler::GROWTH_INTERVAL - 1;
        assert!(scaler.unscale(&[Tensor::from_slice(&[1.0f32])])?);
        assert_eq!(
            scaler,
            LossScaler {
                scale: 65536.0,
                good_steps: 0
            }
        );
        Ok(())
    }

    #[test]
    fn autocast_runs_matrix_products_in_the_chosen_precision_while_it_lives() -> Result<()> {
        let a = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let b = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
        assert!(Autocast::enter(Precision::Fp32, Device::Cpu)?.is_none());
        {
            let _guard = Autocast::enter(Precision::Bf16, Device::Cpu)?;
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
        }
        assert_eq!(a.matmul(&b).kind(), Kind::Float, "float32 again once the guard is gone");
        Ok(())
    }

    #[test]
    fn full_precision_turns_autocast_off_inside_and_leaves_it_as_it_was() -> Result<()> {
        let a = tch::Tensor::ones([2, 2], (tch::Kind::Float, Device::Cpu));
        let kind = || a.matmul(&a).kind();
        assert_eq!(full_precision(Device::Cpu, kind), tch::Kind::Float);
        assert_eq!(kind(), tch::Kind::Float, "off stays off");
        let scope = Autocast::enter(Precision::Bf16, Device::Cpu)?;
        assert_eq!(kind(), tch::Kind::BFloat16);
        assert_eq!(full_precision(Device::Cpu, kind), tch::Kind::Float);
        assert_eq!(kind(), tch::Kind::BFloat16, "on again after");
        drop(scope);
        assert_eq!(kind(), tch::Kind::Float);
        Ok(())
    }
}
