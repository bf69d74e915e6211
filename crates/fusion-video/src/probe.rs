use std::{path::Path, sync::Once};

use ffmpeg_next::{codec, media};

use crate::{Error, Result};

/// What a video file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Container duration in seconds (0 when the container does not say).
    pub duration_s: f64,
    /// Average frame rate of the video stream.
    pub fps: f64,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Video codec name as FFmpeg spells it (`h264`, `vp9`…).
    pub video_codec: String,
    /// Audio codec name, `None` for a silent clip.
    pub audio_codec: Option<String>,
    /// Frames in the video stream: the container's count when it has one, else duration ×
    /// frame rate, rounded.
    pub frame_count_estimate: u64,
    /// Every stream, as `kind:codec` (`video:h264`, `audio:aac`, `subtitle:mov_text`…).
    pub streams: Vec<String>,
}

impl VideoInfo {
    /// Whether the file carries a sound track.
    pub fn has_audio(&self) -> bool {
        self.audio_codec.is_some()
    }
}

pub(crate) fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Registration cannot fail on FFmpeg >= 4. FFmpeg's own log stays quiet: every
        // failure reaches the caller as a typed error naming the file, and a batch job over
        // thousands of files should not print demuxer chatter (raise the level with
        // `ffmpeg_next::util::log::set_level` to debug a file).
        let _ = ffmpeg_next::init();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    });
}

/// Opens a media file and reads its streams' metadata.
pub fn probe(path: impl AsRef<Path>) -> Result<VideoInfo> {
    let path = path.as_ref();
    let ffmpeg_error = |source| Error::Ffmpeg {
        path: path.to_path_buf(),
        source,
    };
    let input = crate::input::open(path)?;
    let video = input
        .streams()
        .best(media::Type::Video)
        .ok_or_else(|| Error::NoVideoStream {
            path: path.to_path_buf(),
        })?;
    let decoder = codec::context::Context::from_parameters(video.parameters())
        .and_then(|context| context.decoder().video())
        .map_err(ffmpeg_error)?;
    let rate = video.avg_frame_rate();
    let fps = if rate.denominator() == 0 { 0.0 } else { f64::from(rate) };
    let audio_codec = input
        .streams()
        .best(media::Type::Audio)
        .map(|stream| stream.parameters().id().name().to_string());
    let duration_s = if input.duration() > 0 {
        input.duration() as f64 / f64::from(ffmpeg_next::ffi::AV_TIME_BASE)
    } else {
        0.0
    };
    let frame_count_estimate = if video.frames() > 0 {
        video.frames() as u64
    } else {
        (duration_s * fps).round().max(0.0) as u64
    };
    let streams = input
        .streams()
        .map(|stream| {
            let kind = match stream.parameters().medium() {
                media::Type::Video => "video",
                media::Type::Audio => "audio",
                media::Type::Subtitle => "subtitle",
                media::Type::Data => "data",
                media::Type::Attachment => "attachment",
                media::Type::Unknown => "unknown",
            };
            format!("{kind}:{}", stream.parameters().id().name())
        })
        .collect();
    Ok(VideoInfo {
        frame_count_estimate,
        streams,
        duration_s,
        fps,
        width: decoder.width(),
        height: decoder.height(),
        video_codec: video.parameters().id().name().to_string(),
        audio_codec,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/video")
            .join(name)
    }

    #[test]
    fn probes_h264_aac_testsrc() -> Result<()> {
        let info = probe(fixture("testsrc_h264_aac.mp4"))?;
        assert_eq!((info.width, info.height), (64, 48));
        assert!((info.fps - 10.0).abs() < 1e-9, "fps {}", info.fps);
        assert!((info.duration_s - 1.0).abs() < 0.1, "duration {}", info.duration_s);
        assert_eq!(info.video_codec, "h264");
        assert_eq!(info.audio_codec.as_deref(), Some("aac"));
        assert_eq!(info.frame_count_estimate, 10);
        assert_eq!(info.streams, ["video:h264", "audio:aac"]);
        Ok(())
    }

    #[test]
    fn silent_clip_has_no_audio() -> Result<()> {
        let info = probe(fixture("testsrc_vp9_silent.webm"))?;
        assert_eq!(info.video_codec, "vp9");
        assert!(!info.has_audio());
        assert_eq!(info.streams, ["video:vp9"]);
        assert_eq!(info.frame_count_estimate, 10, "WebM has no frame count: duration × fps");
        Ok(())
    }

    #[test]
    fn garbage_and_missing_files_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let garbage = dir.path().join("garbage.mp4");
        std::fs::write(&garbage, [0u8; 512]).expect("write");
        assert!(matches!(probe(&garbage), Err(Error::Ffmpeg { path, .. }) if path == garbage));
        let missing = dir.path().join("missing.mp4");
        let message = probe(&missing).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("missing.mp4"), "{message}");
    }
}
