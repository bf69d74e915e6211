//! Opening a media file so that FFmpeg reads that one file and nothing else: this crate
//! opens it (a regular file, never a FIFO or device), hands FFmpeg the open file as its
//! only input, and lets only the container demuxers this crate supports probe it. A
//! playlist (HLS, DASH, concat), an image-sequence pattern or a reference movie would make
//! FFmpeg open further files named inside the data; none of those demuxers is allowed.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::Path,
};

use ffmpeg_next::{Dictionary, format};

use crate::{Error, Result, probe::init_ffmpeg};

/// The demuxers allowed to read a file: single-file containers (MP4/QuickTime/3GP,
/// Matroska/WebM, AVI, Ogg, MPEG program and transport streams, FLV, YUV4MPEG2). Playlists
/// and sequences (HLS, DASH, concat, image2) are not among them.
pub const ALLOWED_DEMUXERS: &str = "mov,matroska,avi,ogg,mpeg,mpegts,flv,yuv4mpegpipe";

/// The file, read through positioned reads (`pread`), so that two demuxers over clones
/// of one descriptor keep their own places.
struct MediaFile {
    file: File,
    position: u64,
    len: u64,
}

impl Read for MediaFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let read = self.file.read_at(buf, self.position)?;
        self.position += read as u64;
        Ok(read)
    }
}

impl Seek for MediaFile {
    fn seek(&mut self, target: SeekFrom) -> std::io::Result<u64> {
        let position = match target {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
        };
        self.position = position.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok(self.position)
    }
}

/// Opens `path` for reading as a regular file without blocking (a FIFO swapped in is
/// refused, not waited on).
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |reason: String| Error::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refuse(e.to_string()))?;
    let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file (a folder, FIFO or device)".into()));
    }
    Ok(file)
}

/// A demuxer over `file` (already open; `path` names it in errors and helps FFmpeg guess
/// the container from its extension). Only [`ALLOWED_DEMUXERS`] may claim it, and no
/// protocol may be used to open anything else.
pub(crate) fn demuxer(file: &File, path: &Path) -> Result<format::context::Input> {
    init_ffmpeg();
    let ffmpeg = |source| Error::Ffmpeg {
        path: path.to_path_buf(),
        source,
    };
    let clone = file.try_clone().map_err(|e| Error::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let len = clone.metadata().map(|m| m.len()).unwrap_or(0);
    let io = format::context::StreamIo::from_read_seek(MediaFile {
        file: clone,
        position: 0,
        len,
    })
    .map_err(ffmpeg)?;
    let mut options = Dictionary::new();
    options.set("format_whitelist", ALLOWED_DEMUXERS);
    // No protocol is named "none": a demuxer that tries to open a second file fails.
    options.set("protocol_whitelist", "none");
    let name = path.file_name().and_then(|n| n.to_str());
    format::input_from_stream(io, name, Some(options)).map_err(ffmpeg)
}

/// A demuxer over `path` (a regular file), which holds its own handle on the file.
pub(crate) fn open(path: &Path) -> Result<format::context::Input> {
    demuxer(&open_regular(path)?, path)
}
