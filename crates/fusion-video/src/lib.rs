//! # fusion-video
//!
//! Turns video files into model inputs with the system's FFmpeg libraries (through
//! `ffmpeg-next`), without libtorch: open any container FFmpeg supports, read its metadata,
//! sample frames (all, at a rate, uniformly, in a window; sparse sampling seeks), convert
//! them to RGB at a size (stretch, pad or crop), and decode the sound track to mono f32 at
//! a rate (a silent clip gives `None`). With the `torch` feature: a per-frame encoder with
//! temporal pooling.
//!
//! ```no_run
//! use fusion_video::{Fit, FrameSize, Sampling, probe, read_frames, read_sound_track};
//!
//! let info = probe("clip.mp4")?;
//! println!("{}x{} at {:.2} fps, sound: {}", info.width, info.height, info.fps, info.has_audio());
//! let size = FrameSize { width: 224, height: 224, fit: Fit::Crop };
//! let frames = read_frames("clip.mp4", Sampling::Uniform(16), Some(size))?;
//! let sound = read_sound_track("clip.mp4", 16000)?; // None without a sound track
//! # Ok::<(), fusion_video::Error>(())
//! ```

mod decode;
#[cfg(feature = "torch")]
mod encoder;
mod error;
mod input;
mod probe;

pub use decode::{
    Fit, FrameSize, Frames, MAX_FRAME_PIXELS, Sampling, SoundTrack, VideoLimits, read_frames, read_frames_within,
    read_sound_track, read_sound_track_within,
};
#[cfg(feature = "torch")]
pub use encoder::{TemporalPooling, VideoEncoder};
pub use error::{Error, Result};
pub use input::ALLOWED_DEMUXERS;
pub use probe::{VideoInfo, probe};
