//! Frame sampling and sound-track extraction. The decode loop sends packets, receives
//! every frame, drains the decoder at end of file, skips (and counts) packets the decoder
//! rejects, and stops on any error it cannot get past, so bad input never loops forever.

use std::path::{Path, PathBuf};

use ffmpeg_next::{
    ChannelLayout, Packet, Rational, codec, decoder, format, frame, media,
    software::{resampling, scaling},
    util::format::sample::{Sample, Type as SampleType},
};

use crate::{Error, Result, input};

/// Which frames to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every decoded frame.
    All,
    /// Frames at a fixed rate: the first frame at or after each multiple of `1 / fps`.
    Fps(f64),
    /// `count` frames spread uniformly over the clip (at the centres of `count` equal
    /// segments). Seeks to the keyframe before each target instead of decoding everything.
    Uniform(usize),
    /// `count` frames spread uniformly over `[start, end)` seconds, seeking like `Uniform`.
    Window {
        /// Window start in seconds.
        start: f64,
        /// Window end in seconds.
        end: f64,
        /// Frames to take.
        count: usize,
    },
}

/// How frames are fitted to the output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Scale to exactly the output size (aspect ratio not kept).
    Stretch,
    /// Keep the aspect ratio, scale to fit inside, pad with black.
    Pad,
    /// Keep the aspect ratio, scale to cover, crop the centre.
    Crop,
}

/// Output size and fit of decoded frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSize {
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// How the frame is fitted.
    pub fit: Fit,
}

/// Decoded RGB frames, `[T, H, W, 3]` u8, with their times.
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    /// Presentation time of each frame, seconds from the start of the stream.
    pub timestamps: Vec<f64>,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// `T · H · W · 3` bytes.
    pub rgb: Vec<u8>,
    /// Packets the decoder rejected (skipped).
    pub corrupt_packets: usize,
    /// Frames decoded to produce these (more than kept when decoding forward from a
    /// keyframe; fewer than the clip's when sampling sparsely).
    pub decoded_frames: usize,
}

impl Frames {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Whether no frame was kept.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// `[T, 3, H, W]` f32, `(x / 255 − mean[c]) / std[c]`, as fusion-image normalises.
    pub fn to_chw(&self, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
        let plane = self.width as usize * self.height as usize;
        let mut out = vec![0f32; self.rgb.len()];
        for (t, frame) in self.rgb.chunks_exact(plane * 3).enumerate() {
            for (p, pixel) in frame.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[(t * 3 + c) * plane + p] = (f32::from(pixel[c]) / 255.0 - mean[c]) / std[c];
                }
            }
        }
        out
    }
}

/// Largest frame decoded, in pixels (8K UHD is 33 M): the header of a 16000² stream would
/// otherwise have the decoder's frame pool take gigabytes per thread.
pub const MAX_FRAME_PIXELS: u64 = 36 << 20;

/// Limits a file must respect beyond the fixed [`MAX_FRAME_PIXELS`]. fusion-data's
/// `Limits::video` gives validation and extraction the same ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoLimits {
    /// Longest video or sound track, in seconds: by its header, and by what is decoded
    /// of a sound track whose header does not say or lies.
    pub max_seconds: f64,
}

impl Default for VideoLimits {
    fn default() -> Self {
        Self { max_seconds: 3600.0 }
    }
}

impl VideoLimits {
    fn check_duration(&self, seconds: f64, path: &Path, what: &str) -> Result<()> {
        if seconds > self.max_seconds {
            return Err(Error::TooLarge {
                path: path.into(),
                reason: format!("{what} of {seconds:.1} s, over the limit of {} s", self.max_seconds),
            });
        }
        Ok(())
    }
}

/// Seek instead of decoding forward when the next target is this far ahead (seconds).
const SEEK_GAP: f64 = 1.0;
/// Give up after this many consecutive unreadable packets.
const MAX_CONSECUTIVE_ERRORS: usize = 64;

struct VideoReader {
    path: PathBuf,
    /// The open file, for the second demuxer.
    file: std::fs::File,
    input: format::context::Input,
    decoder: decoder::Video,
    stream: usize,
    time_base: Rational,
    start: f64,
    duration: f64,
    corrupt: usize,
    decoded: usize,
    eof: bool,
    /// A second demuxer for finding where seeks land (sparse sampling only).
    probe: Option<format::context::Input>,
    scaler: Option<(scaling::Context, (format::Pixel, u32, u32))>,
}

fn seconds(ts: i64, base: Rational) -> f64 {
    ts as f64 * f64::from(base)
}

impl VideoReader {
    fn open(path: &Path, limits: &VideoLimits) -> Result<Self> {
        let ffmpeg = |source| Error::Ffmpeg {
            path: path.to_path_buf(),
            source,
        };
        let file = input::open_regular(path)?;
        let input = input::demuxer(&file, path)?;
        let stream = input
            .streams()
            .best(media::Type::Video)
            .ok_or_else(|| Error::NoVideoStream { path: path.into() })?;
        let mut context = codec::context::Context::from_parameters(stream.parameters()).map_err(ffmpeg)?;
        context.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            count: 0,
            ..Default::default()
        });
        // Frames larger than the header said (or than it could say) are refused by the
        // decoder before their buffers are allocated.
        #[allow(unsafe_code)]
        // SAFETY: a field of the codec context this function owns, before it is opened.
        unsafe {
            (*context.as_mut_ptr()).max_pixels = MAX_FRAME_PIXELS as i64;
        }
        let decoder = context.decoder().video().map_err(ffmpeg)?;
        let pixels = u64::from(decoder.width()) * u64::from(decoder.height());
        if pixels > MAX_FRAME_PIXELS {
            return Err(Error::TooLarge {
                path: path.into(),
                reason: format!(
                    "{}×{} frames ({pixels} pixels), over the limit of {MAX_FRAME_PIXELS}",
                    decoder.width(),
                    decoder.height()
                ),
            });
        }
        let time_base = stream.time_base();
        let start = if stream.start_time() == ffmpeg_next::ffi::AV_NOPTS_VALUE {
            0.0
        } else {
            seconds(stream.start_time(), time_base)
        };
        let duration = if stream.duration() > 0 {
            seconds(stream.duration(), time_base)
        } else if input.duration() > 0 {
            input.duration() as f64 / f64::from(ffmpeg_next::ffi::AV_TIME_BASE)
        } else {
            0.0
        };
        limits.check_duration(duration, path, "a video")?;
        let index = stream.index();
        Ok(Self {
            path: path.into(),
            file,
            input,
            decoder,
            stream: index,
            time_base,
            start,
            duration,
            corrupt: 0,
            decoded: 0,
            eof: false,
            probe: None,
            scaler: None,
        })
    }

    fn error(&self, source: ffmpeg_next::Error) -> Error {
        Error::Ffmpeg {
            path: self.path.clone(),
            source,
        }
    }

    /// The next decoded frame, or `None` at the end of the stream.
    fn next_frame(&mut self, frame: &mut frame::Video) -> Result<Option<f64>> {
        let mut consecutive_errors = 0;
        loop {
            match self.decoder.receive_frame(frame) {
                Ok(()) => {
                    // A stream may change size after its header.
                    let pixels = u64::from(frame.width()) * u64::from(frame.height());
                    if pixels > MAX_FRAME_PIXELS {
                        return Err(Error::TooLarge {
                            path: self.path.clone(),
                            reason: format!(
                                "a {}×{} frame, over the limit of {MAX_FRAME_PIXELS} pixels",
                                frame.width(),
                                frame.height()
                            ),
                        });
                    }
                    self.decoded += 1;
                    let ts = frame.timestamp().or(frame.pts()).unwrap_or(0);
                    return Ok(Some(seconds(ts, self.time_base) - self.start));
                }
                Err(ffmpeg_next::Error::Eof) => return Ok(None),
                Err(ffmpeg_next::Error::Other { errno }) if errno == ffmpeg_next::util::error::EAGAIN => {}
                Err(ffmpeg_next::Error::InvalidData) => self.corrupt += 1,
                Err(e) => return Err(self.error(e)),
            }
            if self.eof {
                return Ok(None);
            }
            let mut packet = Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) => {
                    consecutive_errors = 0;
                    if packet.stream() == self.stream && self.decoder.send_packet(&packet).is_err() {
                        self.corrupt += 1;
                    }
                }
                Err(ffmpeg_next::Error::Eof) => {
                    // Drain: the decoder still holds frames.
                    self.eof = true;
                    self.decoder.send_eof().map_err(|e| self.error(e))?;
                }
                Err(_) if consecutive_errors < MAX_CONSECUTIVE_ERRORS => {
                    consecutive_errors += 1;
                    self.corrupt += 1;
                }
                Err(e) => return Err(self.error(e)),
            }
        }
    }

    fn seek(&mut self, target: f64) -> Result<()> {
        let ts = ((target + self.start).max(0.0) * f64::from(ffmpeg_next::ffi::AV_TIME_BASE)) as i64;
        self.input.seek(ts, ..ts).map_err(|e| self.error(e))?;
        self.decoder.flush();
        self.eof = false;
        Ok(())
    }

    /// Where a seek to `target` would land (the time of the keyframe before it), found
    /// with a second demuxer so the decoder keeps its place. `None` when unknown.
    fn landing(&mut self, target: f64) -> Result<Option<f64>> {
        if self.probe.is_none() {
            self.probe = Some(input::demuxer(&self.file, &self.path)?);
        }
        let Some(probe) = self.probe.as_mut() else {
            return Ok(None);
        };
        let ts = ((target + self.start).max(0.0) * f64::from(ffmpeg_next::ffi::AV_TIME_BASE)) as i64;
        if probe.seek(ts, ..ts).is_err() {
            return Ok(None);
        }
        let mut packet = Packet::empty();
        for _ in 0..MAX_CONSECUTIVE_ERRORS {
            match packet.read(probe) {
                Ok(()) if packet.stream() == self.stream => {
                    return Ok(packet
                        .pts()
                        .or(packet.dts())
                        .map(|t| seconds(t, self.time_base) - self.start));
                }
                Ok(()) => {}
                Err(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Converts `frame` to RGB24 at `size` and appends it to `out`.
    fn convert(&mut self, frame: &frame::Video, size: FrameSize, out: &mut Vec<u8>) -> Result<()> {
        let (src_w, src_h) = (frame.width(), frame.height());
        // swscale aborts the process on an empty frame; this must be an error instead.
        if frame.format() == format::Pixel::None || src_w == 0 || src_h == 0 {
            return Err(self.error(ffmpeg_next::Error::InvalidData));
        }
        let (inner_w, inner_h) = match size.fit {
            Fit::Stretch => (size.width, size.height),
            Fit::Pad | Fit::Crop => {
                let scale_w = f64::from(size.width) / f64::from(src_w);
                let scale_h = f64::from(size.height) / f64::from(src_h);
                let scale = if size.fit == Fit::Pad {
                    scale_w.min(scale_h)
                } else {
                    scale_w.max(scale_h)
                };
                let w = (f64::from(src_w) * scale).round().max(1.0) as u32;
                let h = (f64::from(src_h) * scale).round().max(1.0) as u32;
                (w, h)
            }
        };
        let key = (frame.format(), src_w, src_h);
        if self.scaler.as_ref().is_none_or(|(_, k)| *k != key) {
            // Bicubic, as the ffmpeg CLI's scale filter.
            let context = scaling::Context::get(
                key.0,
                src_w,
                src_h,
                format::Pixel::RGB24,
                inner_w,
                inner_h,
                scaling::Flags::BICUBIC,
            )
            .map_err(|e| self.error(e))?;
            self.scaler = Some((context, key));
        }
        let mut rgb = frame::Video::empty();
        if let Some((scaler, _)) = self.scaler.as_mut() {
            scaler.run(frame, &mut rgb).map_err(|e| Error::Ffmpeg {
                path: self.path.clone(),
                source: e,
            })?;
        }
        let (stride, data) = (rgb.stride(0), rgb.data(0));
        let (w, h) = (size.width as usize, size.height as usize);
        let (iw, ih) = (inner_w as usize, inner_h as usize);
        let start = out.len();
        out.resize(start + w * h * 3, 0);
        let target = &mut out[start..];
        // Offsets of the inner picture in the output (Pad) or of the output in it (Crop).
        let (dx, dy) = ((w as isize - iw as isize) / 2, (h as isize - ih as isize) / 2);
        for y in 0..h {
            let sy = y as isize - dy;
            if sy < 0 || sy >= ih as isize {
                continue;
            }
            for x in 0..w {
                let sx = x as isize - dx;
                if sx < 0 || sx >= iw as isize {
                    continue;
                }
                let source = sy as usize * stride + sx as usize * 3;
                target[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&data[source..source + 3]);
            }
        }
        Ok(())
    }
}

/// Decodes the frames `sampling` picks from the video stream of `path`, converted to RGB
/// at `size` (or the stream's own size when `None`), within the default [`VideoLimits`].
pub fn read_frames(path: impl AsRef<Path>, sampling: Sampling, size: Option<FrameSize>) -> Result<Frames> {
    read_frames_within(path, sampling, size, &VideoLimits::default())
}

/// [`read_frames`] within `limits`.
pub fn read_frames_within(
    path: impl AsRef<Path>,
    sampling: Sampling,
    size: Option<FrameSize>,
    limits: &VideoLimits,
) -> Result<Frames> {
    let path = path.as_ref();
    let mut reader = VideoReader::open(path, limits)?;
    let size = size.unwrap_or(FrameSize {
        width: reader.decoder.width(),
        height: reader.decoder.height(),
        fit: Fit::Stretch,
    });
    if size.width == 0 || size.height == 0 {
        return Err(Error::InvalidSetting(format!(
            "output size {}×{}",
            size.width, size.height
        )));
    }
    let mut frames = Frames {
        timestamps: Vec::new(),
        width: size.width,
        height: size.height,
        rgb: Vec::new(),
        corrupt_packets: 0,
        decoded_frames: 0,
    };
    let mut frame = frame::Video::empty();
    let mut scratch = frame::Video::empty();
    let targets: Option<Vec<f64>> = match sampling {
        Sampling::All | Sampling::Fps(_) => None,
        Sampling::Uniform(count) => Some(
            (0..count)
                .map(|i| reader.duration * (i as f64 + 0.5) / count as f64)
                .collect(),
        ),
        Sampling::Window { start, end, count } => {
            if !(start >= 0.0 && end > start) {
                return Err(Error::InvalidSetting(format!("window [{start}, {end}) is empty")));
            }
            Some(
                (0..count)
                    .map(|i| start + (end - start) * (i as f64 + 0.5) / count as f64)
                    .collect(),
            )
        }
    };
    match (sampling, targets) {
        (Sampling::Fps(fps), _) if !(fps > 0.0 && fps.is_finite()) => {
            return Err(Error::InvalidSetting(format!("frame rate {fps}")));
        }
        (_, None) => {
            let step = if let Sampling::Fps(fps) = sampling {
                1.0 / fps
            } else {
                0.0
            };
            let mut next = 0.0;
            while let Some(t) = reader.next_frame(&mut frame)? {
                // Half a millisecond of slack for timestamps rounded to the time base.
                if step == 0.0 || t >= next - 5e-4 {
                    reader.convert(&frame, size, &mut frames.rgb)?;
                    frames.timestamps.push(t);
                    while step > 0.0 && next <= t + 5e-4 {
                        next += step;
                    }
                }
            }
        }
        (_, Some(targets)) => {
            let mut position = f64::NEG_INFINITY; // time of the last decoded frame
            let mut held: Option<f64> = None; // a decoded frame not yet used
            for target in targets {
                // Seek only when it lands past what was decoded: with long keyframe
                // intervals, decoding forward is cheaper than starting the GOP again.
                if held.is_none_or(|t| t < target)
                    && target - position > SEEK_GAP
                    && reader.landing(target)?.is_none_or(|landing| landing > position)
                {
                    reader.seek(target)?;
                    held = None;
                }
                // Decode forward to the first frame at or after the target.
                loop {
                    if let Some(t) = held
                        && t >= target - 5e-4
                    {
                        break;
                    }
                    // Decode into a scratch frame: at the end of the stream FFmpeg empties
                    // the frame it was given, and the held one is still needed.
                    match reader.next_frame(&mut scratch)? {
                        Some(t) => {
                            std::mem::swap(&mut frame, &mut scratch);
                            position = t;
                            held = Some(t);
                        }
                        None => break,
                    }
                }
                let Some(t) = held else { break };
                reader.convert(&frame, size, &mut frames.rgb)?;
                frames.timestamps.push(t);
            }
        }
    }
    frames.corrupt_packets = reader.corrupt;
    frames.decoded_frames = reader.decoded;
    Ok(frames)
}

/// A decoded sound track, mono f32.
#[derive(Debug, Clone, PartialEq)]
pub struct SoundTrack {
    /// Samples per second.
    pub sample_rate: u32,
    /// The signal.
    pub samples: Vec<f32>,
    /// Packets the decoder rejected (skipped).
    pub corrupt_packets: usize,
}

/// Decodes the best audio stream of `path` to mono f32 at `sample_rate` with swresample,
/// within the default [`VideoLimits`]. A file without sound gives `Ok(None)`: a missing
/// modality, not an error.
pub fn read_sound_track(path: impl AsRef<Path>, sample_rate: u32) -> Result<Option<SoundTrack>> {
    read_sound_track_within(path, sample_rate, &VideoLimits::default())
}

/// [`read_sound_track`] within `limits`: a track longer than `max_seconds` by its header,
/// or once that much is decoded, is refused.
pub fn read_sound_track_within(
    path: impl AsRef<Path>,
    sample_rate: u32,
    limits: &VideoLimits,
) -> Result<Option<SoundTrack>> {
    let path = path.as_ref();
    let ffmpeg = |source| Error::Ffmpeg {
        path: path.to_path_buf(),
        source,
    };
    if sample_rate == 0 {
        return Err(Error::InvalidSetting("sample rate 0".into()));
    }
    let mut input = input::open(path)?;
    let Some(stream) = input.streams().best(media::Type::Audio) else {
        return Ok(None);
    };
    let index = stream.index();
    if input.duration() > 0 {
        let seconds = input.duration() as f64 / f64::from(ffmpeg_next::ffi::AV_TIME_BASE);
        limits.check_duration(seconds, path, "a file")?;
    }
    let mut decoder = codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().audio())
        .map_err(ffmpeg)?;
    let layout = if decoder.channel_layout().is_empty() {
        ChannelLayout::default(i32::from(decoder.channels()))
    } else {
        decoder.channel_layout()
    };
    let mono = Sample::F32(SampleType::Packed);
    let mut resampler = resampling::Context::get(
        decoder.format(),
        layout,
        decoder.rate(),
        mono,
        ChannelLayout::MONO,
        sample_rate,
    )
    .map_err(ffmpeg)?;
    let mut samples = Vec::new();
    let mut corrupt = 0;
    let mut decoded = frame::Audio::empty();
    let push = |resampled: &frame::Audio, samples: &mut Vec<f32>| {
        if resampled.samples() > 0 {
            samples.extend_from_slice(&resampled.plane::<f32>(0)[..resampled.samples()]);
        }
    };
    let mut drain =
        |decoder: &mut decoder::Audio, resampler: &mut resampling::Context, samples: &mut Vec<f32>| -> Result<()> {
            while decoder.receive_frame(&mut decoded).is_ok() {
                // Decoders may leave the layout unset on frames; the resampler needs it.
                if decoded.channel_layout().is_empty() {
                    decoded.set_channel_layout(layout);
                }
                let mut resampled = frame::Audio::empty();
                resampler.run(&decoded, &mut resampled).map_err(ffmpeg)?;
                push(&resampled, samples);
            }
            Ok(())
        };
    let mut consecutive_errors = 0;
    loop {
        let mut packet = Packet::empty();
        match packet.read(&mut input) {
            Ok(()) => {
                consecutive_errors = 0;
                if packet.stream() == index {
                    if decoder.send_packet(&packet).is_err() {
                        corrupt += 1;
                    }
                    drain(&mut decoder, &mut resampler, &mut samples)?;
                    limits.check_duration(samples.len() as f64 / f64::from(sample_rate), path, "a sound track")?;
                }
            }
            Err(ffmpeg_next::Error::Eof) => break,
            Err(_) if consecutive_errors < MAX_CONSECUTIVE_ERRORS => {
                consecutive_errors += 1;
                corrupt += 1;
            }
            Err(e) => return Err(ffmpeg(e)),
        }
    }
    decoder.send_eof().map_err(ffmpeg)?;
    drain(&mut decoder, &mut resampler, &mut samples)?;
    // What the resampler still holds.
    loop {
        let mut rest = frame::Audio::new(mono, 4096, ChannelLayout::MONO);
        resampler.flush(&mut rest).map_err(ffmpeg)?;
        if rest.samples() == 0 {
            break;
        }
        push(&rest, &mut samples);
    }
    Ok(Some(SoundTrack {
        sample_rate,
        samples,
        corrupt_packets: corrupt,
    }))
}
