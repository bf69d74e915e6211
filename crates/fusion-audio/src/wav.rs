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

/// Audio in `[-1, 1]` with its channels kept, interleaved.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// Samples per second.
    pub sample_rate: u32,
    /// Channel count (at least 1).
    pub channels: u16,
    /// `frames · channels` samples, frame by frame.
    pub interleaved: Vec<f32>,
}

impl Clip {
    /// Number of frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.interleaved.len() / usize::from(self.channels.max(1))
    }

    /// One channel's samples; `None` past the last channel.
    pub fn channel(&self, index: u16) -> Option<Vec<f32>> {
        (index < self.channels).then(|| {
            self.interleaved
                .iter()
                .skip(usize::from(index))
                .step_by(usize::from(self.channels))
                .copied()
                .collect()
        })
    }

    /// The channels averaged into one.
    pub fn to_mono(&self) -> MonoClip {
        let channels = usize::from(self.channels.max(1));
        let samples = self
            .interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() / channels as f32)
            .collect();
        MonoClip {
            sample_rate: self.sample_rate,
            samples,
        }
    }
}

/// Sample rates accepted from a header: anything outside is a damaged or hostile file (a
/// rate of 1 Hz or 4 GHz would make resampling allocate gigabytes).
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 1_000..=768_000;

/// Longest clip read by default, in seconds.
pub const DEFAULT_MAX_SECONDS: f64 = 3600.0;

/// Reads a WAV file (8/16/24/32-bit integer or 32-bit float PCM, any channel count),
/// keeping its channels. The header's sample rate must be in [`SAMPLE_RATES`] and its
/// duration at most `max_seconds`, both checked before any sample is read.
pub fn read_wav(path: impl AsRef<Path>, max_seconds: f64) -> Result<Clip> {
    let path = path.as_ref();
    let reader = WavReader::open(path).map_err(|source| Error::Wav {
        path: path.to_path_buf(),
        source,
    })?;
    read_samples(reader, path, max_seconds)
}

/// [`read_wav`] for a file already in memory; `path` names it in errors.
pub fn read_wav_bytes(bytes: &[u8], path: impl AsRef<Path>, max_seconds: f64) -> Result<Clip> {
    let path = path.as_ref();
    let reader = WavReader::new(std::io::Cursor::new(bytes)).map_err(|source| Error::Wav {
        path: path.to_path_buf(),
        source,
    })?;
    read_samples(reader, path, max_seconds)
}

fn read_samples<R: std::io::Read>(mut reader: WavReader<R>, path: &Path, max_seconds: f64) -> Result<Clip> {
    let wav_error = |source: hound::Error| Error::Wav {
        path: path.to_path_buf(),
        source,
    };
    let unusable = |reason: String| Error::Unusable {
        path: path.to_path_buf(),
        reason,
    };
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(unusable("0 channels".into()));
    }
    if !SAMPLE_RATES.contains(&spec.sample_rate) {
        return Err(unusable(format!(
            "a sample rate of {} Hz (accepted: {} to {} Hz)",
            spec.sample_rate,
            SAMPLE_RATES.start(),
            SAMPLE_RATES.end()
        )));
    }
    let seconds = f64::from(reader.duration()) / f64::from(spec.sample_rate);
    if seconds > max_seconds {
        return Err(unusable(format!(
            "{seconds:.1} s long, over the limit of {max_seconds} s"
        )));
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (SampleFormat::Float, 32) => reader
            .samples::<f32>()
            .collect::<std::result::Result<_, _>>()
            .map_err(wav_error)?,
        (SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<std::result::Result<_, _>>()
                .map_err(wav_error)?
        }
        (format, bits) => return Err(unusable(format!("unsupported sample format: {bits}-bit {format:?}"))),
    };
    if interleaved.is_empty() {
        return Err(unusable("no samples".into()));
    }
    Ok(Clip {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        interleaved,
    })
}

/// Reads a WAV file of at most [`DEFAULT_MAX_SECONDS`] and averages its channels into one.
pub fn read_wav_mono(path: impl AsRef<Path>) -> Result<MonoClip> {
    Ok(read_wav(path, DEFAULT_MAX_SECONDS)?.to_mono())
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
    fn every_bit_depth_and_float_scale_to_unit_range_and_channels_are_kept() -> Result<()> {
        let dir = tempfile::tempdir().expect("temp dir");
        for (bits, full_scale) in [(8u16, 128i32), (24, 1 << 23), (32, i32::MAX)] {
            let path = dir.path().join(format!("int{bits}.wav"));
            write_wav(&path, 1, bits, &[full_scale / 2, -full_scale]);
            let clip = read_wav_mono(&path)?;
            assert!(
                (clip.samples[0] - 0.5).abs() < 1e-6 && clip.samples[1] == -1.0,
                "{bits}-bit: {:?}",
                clip.samples
            );
        }
        let path = dir.path().join("float.wav");
        let spec = WavSpec {
            channels: 3,
            sample_rate: 16000,
            bits_per_sample: 32,
            sample_format: SampleFormat::Float,
        };
        let mut writer = WavWriter::create(&path, spec).expect("create wav");
        for v in [0.1f32, 0.2, 0.3, -0.5, 0.0, 0.5] {
            writer.write_sample(v).expect("write sample");
        }
        writer.finalize().expect("finalize wav");
        let clip = read_wav(&path, DEFAULT_MAX_SECONDS)?;
        assert_eq!((clip.channels, clip.frames(), clip.sample_rate), (3, 2, 16000));
        assert_eq!(clip.channel(1), Some(vec![0.2, 0.0]));
        assert_eq!(clip.channel(3), None);
        assert!((clip.to_mono().samples[0] - 0.2).abs() < 1e-7);
        Ok(())
    }

    /// A 44-byte WAV header with the given format tag, channels and bits, then `data`.
    fn raw_wav(format_tag: u16, channels: u16, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut bytes = b"RIFF".to_vec();
        bytes.extend((36 + data.len() as u32).to_le_bytes());
        bytes.extend(b"WAVEfmt ");
        bytes.extend(16u32.to_le_bytes());
        bytes.extend(format_tag.to_le_bytes());
        bytes.extend(channels.to_le_bytes());
        bytes.extend(8000u32.to_le_bytes());
        let block = channels.max(1) * bits.div_ceil(8);
        bytes.extend((8000 * u32::from(block)).to_le_bytes());
        bytes.extend(block.to_le_bytes());
        bytes.extend(bits.to_le_bytes());
        bytes.extend(b"data");
        bytes.extend((data.len() as u32).to_le_bytes());
        bytes.extend(data);
        bytes
    }

    /// [`raw_wav`] with another sample rate and a data chunk that claims `claimed` bytes.
    fn lying_wav(rate: u32, claimed: u32, data: &[u8]) -> Vec<u8> {
        let mut bytes = raw_wav(1, 1, 16, data);
        bytes[24..28].copy_from_slice(&rate.to_le_bytes());
        bytes[28..32].copy_from_slice(&rate.wrapping_mul(2).to_le_bytes());
        bytes[40..44].copy_from_slice(&claimed.to_le_bytes());
        bytes
    }

    #[test]
    fn absurd_rates_and_durations_are_refused_from_the_header() {
        let data = [0u8; 8192];
        let cases = [
            (lying_wav(3_000_000, 8192, &data), "3000000 Hz"),
            // Byte rate and sample rate disagree (the product overflows): hound refuses it.
            (lying_wav(4_294_967_291, 8192, &data), "x.wav"),
            (lying_wav(1, 8192, &data), "a sample rate of 1 Hz"),
            (lying_wav(999, 8192, &data), "999 Hz"),
            // 4 GB of samples claimed at 8 kHz: 74 hours, refused before reading any.
            (lying_wav(8000, u32::MAX - 1, &data), "over the limit of 3600 s"),
        ];
        for (bytes, expected) in cases {
            let error = read_wav_bytes(&bytes, "x.wav", DEFAULT_MAX_SECONDS)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.contains("x.wav") && error.contains(expected),
                "{expected}: {error}"
            );
        }
        // 0.512 s at 8 kHz: within 1 s, over 0.5 s.
        let clip = lying_wav(8000, 8192, &data);
        assert!(read_wav_bytes(&clip, "x.wav", 1.0).is_ok());
        assert!(read_wav_bytes(&clip, "x.wav", 0.5).is_err());
        assert!(read_wav_bytes(&lying_wav(768_000, 8192, &data), "x.wav", 1.0).is_ok());
    }

    #[test]
    fn zero_channels_and_unsupported_formats_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cases = [
            ("zero_channels.wav", raw_wav(1, 0, 16, &[0; 8])),
            ("alaw.wav", raw_wav(6, 1, 8, &[0; 8])),
            ("float64.wav", raw_wav(3, 1, 64, &[0; 16])),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            let error = read_wav(&path, DEFAULT_MAX_SECONDS)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(name), "{name}: {error}");
        }
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
