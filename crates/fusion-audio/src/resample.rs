//! Sample-rate conversion with rubato's synchronous FFT resampler (windowed-sinc filter,
//! applied in the frequency domain), for whole clips.

use rubato::{Fft, FixedSync, Resampler, audioadapter_buffers::direct::InterleavedSlice};

use crate::{Error, Result};

/// Resamples a mono clip from `from` Hz to `to` Hz. The output has `ceil(len · to / from)`
/// samples, aligned with the input (the resampler's delay is removed), as librosa's.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    if from == 0 || to == 0 {
        return Err(Error::InvalidSetting(format!(
            "cannot resample from {from} Hz to {to} Hz"
        )));
    }
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let input: Vec<f64> = samples.iter().map(|&s| f64::from(s)).collect();
    let mut resampler = Fft::<f64>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| Error::InvalidSetting(format!("resampler {from} → {to} Hz: {e}")))?;
    let adapter = InterleavedSlice::new(&input[..], 1, input.len())
        .map_err(|e| Error::InvalidSetting(format!("resampler input: {e}")))?;
    let output = resampler
        .process_all(&adapter, input.len(), None)
        .map_err(|e| Error::InvalidSetting(format!("resampling {from} → {to} Hz: {e}")))?;
    let expected = (samples.len() as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize;
    let mut out: Vec<f32> = output.take_data().into_iter().map(|v| v as f32).collect();
    out.resize(expected, 0.0);
    Ok(out)
}
