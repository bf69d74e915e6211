use std::{
    io::{Read, Seek, SeekFrom},
    path::Path,
};

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

/// Most channels read by default.
pub const DEFAULT_MAX_CHANNELS: u16 = 64;

/// What a WAV file may hold, checked from its header before any sample is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WavLimits {
    /// Longest clip, in seconds.
    pub max_seconds: f64,
    /// Most channels.
    pub max_channels: u16,
}

impl Default for WavLimits {
    fn default() -> Self {
        Self {
            max_seconds: DEFAULT_MAX_SECONDS,
            max_channels: DEFAULT_MAX_CHANNELS,
        }
    }
}

/// Largest `fmt ` chunk read (the extensible format needs 40 bytes).
const MAX_FMT_BYTES: u32 = 1 << 16;

/// Reads a WAV file (8/16/24/32-bit integer or 32/64-bit float PCM, plain or
/// `WAVE_FORMAT_EXTENSIBLE`, any chunk layout with RIFF's pad bytes), keeping its channels.
/// Sample rate ([`SAMPLE_RATES`]), channel count and duration are checked against `limits`
/// from the header, before any sample is read; samples must be finite.
pub fn read_wav(path: impl AsRef<Path>, limits: &WavLimits) -> Result<Clip> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::Wav {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    read_riff(std::io::BufReader::new(file), path, limits)
}

/// [`read_wav`] for a file already in memory; `path` names it in errors.
pub fn read_wav_bytes(bytes: &[u8], path: impl AsRef<Path>, limits: &WavLimits) -> Result<Clip> {
    read_riff(std::io::Cursor::new(bytes), path.as_ref(), limits)
}

/// How samples are stored, from the `fmt ` chunk.
#[derive(Debug, Clone, Copy)]
struct Format {
    float: bool,
    channels: u16,
    sample_rate: u32,
    /// Bytes per sample of one channel (the container: 12-bit audio sits in 2 bytes).
    width: usize,
}

fn read_riff<R: Read + Seek>(mut reader: R, path: &Path, limits: &WavLimits) -> Result<Clip> {
    let malformed = |reason: String| Error::Wav {
        path: path.to_path_buf(),
        reason,
    };
    let unusable = |reason: String| Error::Unusable {
        path: path.to_path_buf(),
        reason,
    };
    let io = |e: std::io::Error| malformed(e.to_string());
    let file_len = reader.seek(SeekFrom::End(0)).map_err(io)?;
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut riff = [0u8; 12];
    reader
        .read_exact(&mut riff)
        .map_err(|_| malformed("shorter than a RIFF header".into()))?;
    if &riff[..4] != b"RIFF" || &riff[8..] != b"WAVE" {
        return Err(malformed("not a RIFF/WAVE file".into()));
    }
    let mut format = None;
    loop {
        let mut header = [0u8; 8];
        if reader.read_exact(&mut header).is_err() {
            return Err(malformed("no `data` chunk".into()));
        }
        let id = [header[0], header[1], header[2], header[3]];
        let declared = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = reader.stream_position().map_err(io)?;
        let present = file_len.saturating_sub(start);
        match &id {
            b"fmt " => {
                if declared > MAX_FMT_BYTES || u64::from(declared) > present {
                    return Err(malformed(format!("a `fmt ` chunk of {declared} bytes")));
                }
                let mut body = vec![0u8; declared as usize];
                reader.read_exact(&mut body).map_err(io)?;
                format = Some(parse_format(&body).map_err(unusable)?);
            }
            b"data" => {
                let format = format.ok_or_else(|| malformed("`data` before `fmt `".into()))?;
                check_format(&format, limits).map_err(unusable)?;
                // Streaming writers leave the size at 0 or 0xFFFFFFFF: the data runs to the end.
                let bytes = match declared {
                    0 | u32::MAX => present,
                    n => u64::from(n),
                };
                return read_samples(&mut reader, format, bytes, present, limits).map_err(|e| match e {
                    SampleError::Malformed(reason) => malformed(reason),
                    SampleError::Unusable(reason) => unusable(reason),
                });
            }
            _ => {
                // Chunks are padded to an even size (an odd LIST chunk is followed by a 0).
                let skip = u64::from(declared) + u64::from(declared & 1);
                reader.seek(SeekFrom::Current(skip as i64)).map_err(io)?;
            }
        }
    }
}

fn parse_format(body: &[u8]) -> std::result::Result<Format, String> {
    if body.len() < 16 {
        return Err(format!("a `fmt ` chunk of {} bytes (at least 16)", body.len()));
    }
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let sample_rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
    let block_align = usize::from(u16_at(12));
    let bits = u16_at(14);
    if tag == 0xFFFE {
        // WAVE_FORMAT_EXTENSIBLE: the real format is the sub-format GUID's first two bytes.
        if body.len() < 40 {
            return Err("an extensible `fmt ` chunk shorter than 40 bytes".into());
        }
        tag = u16_at(24);
    }
    if channels == 0 {
        return Err("0 channels".into());
    }
    let float = match tag {
        1 => false,
        3 => true,
        other => return Err(format!("unsupported sample format: format tag {other} ({bits}-bit)")),
    };
    if block_align == 0 || block_align % usize::from(channels) != 0 {
        return Err(format!("a block of {block_align} bytes for {channels} channels"));
    }
    let width = block_align / usize::from(channels);
    let fits = match float {
        false => (1..=4).contains(&width) && (1..=width * 8).contains(&usize::from(bits)),
        true => (width == 4 || width == 8) && usize::from(bits) == width * 8,
    };
    if !fits {
        let kind = if float { "float" } else { "integer" };
        return Err(format!(
            "unsupported sample format: {bits}-bit {kind} in {width}-byte samples"
        ));
    }
    Ok(Format {
        float,
        channels,
        sample_rate,
        width,
    })
}

fn check_format(format: &Format, limits: &WavLimits) -> std::result::Result<(), String> {
    if !SAMPLE_RATES.contains(&format.sample_rate) {
        return Err(format!(
            "a sample rate of {} Hz (accepted: {} to {} Hz)",
            format.sample_rate,
            SAMPLE_RATES.start(),
            SAMPLE_RATES.end()
        ));
    }
    if format.channels > limits.max_channels {
        return Err(format!(
            "{} channels, over the limit of {}",
            format.channels, limits.max_channels
        ));
    }
    Ok(())
}

enum SampleError {
    Malformed(String),
    Unusable(String),
}

/// Reads `bytes` of samples (a partial last frame is left out) of the `present` left in the
/// file, checking the duration the header claims first.
fn read_samples<R: Read>(
    reader: &mut R,
    format: Format,
    bytes: u64,
    present: u64,
    limits: &WavLimits,
) -> std::result::Result<Clip, SampleError> {
    let frame = (format.width * usize::from(format.channels)) as u64;
    let frames = bytes / frame;
    let seconds = frames as f64 / f64::from(format.sample_rate);
    if seconds > limits.max_seconds {
        return Err(SampleError::Unusable(format!(
            "{seconds:.1} s long, over the limit of {} s",
            limits.max_seconds
        )));
    }
    if frames == 0 {
        return Err(SampleError::Unusable("no samples".into()));
    }
    if bytes > present {
        return Err(SampleError::Malformed(format!(
            "truncated: the `data` chunk declares {bytes} bytes, {present} are present"
        )));
    }
    let mut raw = vec![0u8; (frames * frame) as usize];
    reader
        .read_exact(&mut raw)
        .map_err(|e| SampleError::Malformed(e.to_string()))?;
    let width = format.width;
    let scale = 1.0 / (1u64 << (width * 8 - 1)) as f64;
    let interleaved: Vec<f32> = raw
        .chunks_exact(width)
        .map(|b| match (format.float, width) {
            (true, 4) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            (true, _) => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
            // 8-bit WAV is unsigned, centred on 128.
            (false, 1) => (f64::from(b[0]) - 128.0) as f32 / 128.0,
            (false, _) => {
                // Little-endian, sign-extended from the top byte.
                let mut value = i32::from(b[width - 1] as i8);
                for &byte in b[..width - 1].iter().rev() {
                    value = (value << 8) | i32::from(byte);
                }
                (f64::from(value) * scale) as f32
            }
        })
        .collect();
    if let Some(at) = interleaved.iter().position(|v| !v.is_finite()) {
        return Err(SampleError::Unusable(format!(
            "sample {at} is {}: not audio",
            interleaved[at]
        )));
    }
    Ok(Clip {
        sample_rate: format.sample_rate,
        channels: format.channels,
        interleaved,
    })
}

/// Reads a WAV file of at most [`DEFAULT_MAX_SECONDS`] and averages its channels into one.
pub fn read_wav_mono(path: impl AsRef<Path>) -> Result<MonoClip> {
    Ok(read_wav(path, &WavLimits::default())?.to_mono())
}

#[cfg(test)]
mod tests {
    use hound::{SampleFormat, WavSpec, WavWriter};

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
        let clip = read_wav(&path, &WavLimits::default())?;
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
            (lying_wav(4_294_967_291, 8192, &data), "4294967291 Hz"),
            (lying_wav(1, 8192, &data), "a sample rate of 1 Hz"),
            (lying_wav(999, 8192, &data), "999 Hz"),
            // 4 GB of samples claimed at 8 kHz: 74 hours, refused before reading any.
            (lying_wav(8000, u32::MAX - 1, &data), "over the limit of 3600 s"),
        ];
        for (bytes, expected) in cases {
            let error = read_wav_bytes(&bytes, "x.wav", &WavLimits::default())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.contains("x.wav") && error.contains(expected),
                "{expected}: {error}"
            );
        }
        // 0.512 s at 8 kHz: within 1 s, over 0.5 s.
        let seconds = |max_seconds| WavLimits {
            max_seconds,
            ..WavLimits::default()
        };
        let clip = lying_wav(8000, 8192, &data);
        assert!(read_wav_bytes(&clip, "x.wav", &seconds(1.0)).is_ok());
        assert!(read_wav_bytes(&clip, "x.wav", &seconds(0.5)).is_err());
        assert!(read_wav_bytes(&lying_wav(768_000, 8192, &data), "x.wav", &seconds(1.0)).is_ok());
    }

    #[test]
    fn zero_channels_and_unsupported_formats_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cases = [
            ("zero_channels.wav", raw_wav(1, 0, 16, &[0; 8])),
            ("alaw.wav", raw_wav(6, 1, 8, &[0; 8])),
            ("float16.wav", raw_wav(3, 1, 16, &[0; 16])),
            ("int40.wav", raw_wav(1, 1, 40, &[0; 10])),
            ("many_channels.wav", raw_wav(1, 65, 16, &[0; 130])),
            ("nan.wav", raw_wav(3, 1, 32, &[0, 0, 0, 0, 0, 0, 0xC0, 0x7F])),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            let error = read_wav(&path, &WavLimits::default())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(name), "{name}: {error}");
        }
        let many = raw_wav(1, 65, 16, &[0; 130]);
        let limits = WavLimits {
            max_channels: 65,
            ..WavLimits::default()
        };
        assert_eq!(
            read_wav_bytes(&many, "m.wav", &limits).map(|c| c.channels).ok(),
            Some(65)
        );
        let nan = read_wav_bytes(&raw_wav(3, 1, 32, &[0, 0, 0, 0, 0, 0, 0xC0, 0x7F]), "n.wav", &limits);
        assert!(nan.is_err_and(|e| e.to_string().contains("sample 1 is NaN")));
    }

    /// What other readers (libsndfile, Python's `wave`, ffmpeg) take: 64-bit float, the
    /// extensible header, odd-sized chunks with their pad byte, a streaming writer's size.
    #[test]
    fn float64_extensible_and_padded_chunks_are_read() -> Result<()> {
        let limits = WavLimits::default();
        let mut doubles = Vec::new();
        for v in [0.25f64, -1.0, 0.125] {
            doubles.extend(v.to_le_bytes());
        }
        let clip = read_wav_bytes(&raw_wav(3, 1, 64, &doubles), "f64.wav", &limits)?;
        assert_eq!(clip.interleaved, [0.25, -1.0, 0.125]);

        // An odd 3-byte LIST chunk, its pad byte, then the data chunk.
        let plain = raw_wav(1, 1, 16, &[0x00, 0x40, 0x00, 0xC0]);
        let mut padded = plain[..36].to_vec();
        padded.extend(b"LIST\x03\0\0\0abc\0");
        padded.extend(&plain[36..]);
        let clip = read_wav_bytes(&padded, "padded.wav", &limits)?;
        assert_eq!(clip.interleaved, [0.5, -0.5]);

        // WAVE_FORMAT_EXTENSIBLE: 24-bit integer PCM, stereo, sub-format GUID 1.
        let mut extensible = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        extensible.extend(40u32.to_le_bytes());
        extensible.extend(0xFFFEu16.to_le_bytes());
        extensible.extend(2u16.to_le_bytes());
        extensible.extend(48_000u32.to_le_bytes());
        extensible.extend((48_000u32 * 6).to_le_bytes());
        extensible.extend(6u16.to_le_bytes());
        extensible.extend(24u16.to_le_bytes());
        extensible.extend(22u16.to_le_bytes());
        extensible.extend(24u16.to_le_bytes());
        extensible.extend(3u32.to_le_bytes());
        extensible.extend(1u16.to_le_bytes());
        extensible.extend([0u8; 14]);
        extensible.extend(b"data");
        // A streaming writer's unknown size: the samples run to the end of the file.
        extensible.extend(u32::MAX.to_le_bytes());
        extensible.extend([0x00, 0x00, 0x40, 0x00, 0x00, 0xE0]);
        let clip = read_wav_bytes(&extensible, "ext.wav", &limits)?;
        assert_eq!((clip.channels, clip.sample_rate), (2, 48_000));
        assert_eq!(clip.interleaved, [0.5, -0.25]);
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
