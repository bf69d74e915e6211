//! # fusion-video
//!
//! Turns video files into model inputs with the system's FFmpeg libraries (through
//! `ffmpeg-next`): open any container FFmpeg supports and read its metadata.
//! Needs no libtorch.
//!
//! ```no_run
//! let info = fusion_video::probe("clip.mp4")?;
//! println!("{}x{} at {:.2} fps, sound: {}", info.width, info.height, info.fps, info.has_audio());
//! # Ok::<(), fusion_video::Error>(())
//! ```

mod decode;
mod error;
mod probe;

pub use decode::{Fit, FrameSize, Frames, Sampling, SoundTrack, read_frames, read_sound_track};
pub use error::{Error, Result};
pub use probe::{VideoInfo, probe};
