use std::path::Path;

use hound::{SampleFormat, WavReader};

use crate::{Error, Result};

/// Mono audio in `[-1, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MonoClip {
    /// Samples per second.
    pub sample_rate: u32,
    /// The signal, channels averaged.
    pub samples: Vec<f32>,
}

/// Reads a WAV file and averages its channels into one.
pub fn read_wav_mono(path: impl AsRef<Path>) -> Result<MonoClip> {
    let path = path.as_ref();
    let wav_error = |source: hound::Error| Error::Wav {
        path: path.to_path_buf(),
        source,
    };
    let unusable = |reason: &str| Error::Unusable {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut reader = WavReader::open(path).map_err(wav_error)?;
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(unusable("0 channels"));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<std::result::Result<_, _>>()
            .map_err(wav_error)?,
        SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<std::result::Result<_, _>>()
                .map_err(wav_error)?
        }
    };
    if interleaved.is_empty() {
        return Err(unusable("no samples"));
    }
    let channels = usize::from(spec.channels);
    let samples = interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect();
    Ok(MonoClip {
        sample_rate: spec.sample_rate,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use hound::{WavSpec, WavWriter};

    use super::*;

    fn write_wav(path: &Path, channels: u16, bits: u16, values: &[i32]) {
        let spec = WavSpec {
            channels,
            sample_rate: 8000,
            bits_per_sample: bits,
            sample_format: SampleFormat::Int,
        };
        let mut writer = WavWriter::create(path, spec).expect("create wav");
        for &v in values {
            writer.write_sample(v).expect("write sample");
        }
        writer.finalize().expect("finalize wav");
    }

    #[test]
    fn stereo_16_bit_is_scaled_and_averaged() -> Result<()> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("stereo.wav");
        write_wav(&path, 2, 16, &[16384, 0, -32768, -32768, 8192, 24576]);
        let clip = read_wav_mono(&path)?;
        assert_eq!(clip.sample_rate, 8000);
        assert_eq!(clip.samples, [0.25, -1.0, 0.5]);
        Ok(())
    }

    #[test]
    fn truncated_empty_and_garbage_files_are_typed_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.wav");
        write_wav(&empty, 1, 16, &[]);
        assert!(matches!(read_wav_mono(&empty), Err(Error::Unusable { path, .. }) if path == empty));

        let garbage = dir.path().join("garbage.wav");
        std::fs::write(&garbage, b"RIFF\x10\0\0\0WAVEjunk").expect("write");
        assert!(matches!(read_wav_mono(&garbage), Err(Error::Wav { path, .. }) if path == garbage));

        let truncated = dir.path().join("truncated.wav");
        write_wav(&truncated, 1, 16, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let bytes = std::fs::read(&truncated).expect("read");
        std::fs::write(&truncated, &bytes[..bytes.len() - 5]).expect("truncate");
        let message = read_wav_mono(&truncated)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("truncated.wav"), "{message}");
    }
}
