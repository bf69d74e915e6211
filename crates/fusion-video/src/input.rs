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
    open_bounded(io, name, options, path)
}

/// `avformat_open_input`, then — before `avformat_find_stream_info`, which decodes a first
/// frame to learn a stream's pixel format — a check of every video stream's frame size from
/// the container's header, and the probing decoders bounded by `max_pixels` (for streams
/// whose header does not say) on one thread each. FFmpeg's own open, through
/// `input_from_stream`, let the probe of a 16000² H.264 file take 600 MB before any size
/// could be checked.
fn open_bounded(
    mut io: format::context::StreamIo,
    name: Option<&str>,
    options: Dictionary,
    path: &Path,
) -> Result<format::context::Input> {
    use ffmpeg_next::ffi;
    let ffmpeg = |code: i32| Error::Ffmpeg {
        path: path.to_path_buf(),
        source: ffmpeg_next::Error::from(code),
    };
    let name = name.and_then(|n| std::ffi::CString::new(n).ok());
    let name_ptr = name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr());
    #[allow(unsafe_code)]
    // SAFETY: the context is allocated here and either closed on every error path or
    // handed, with the I/O context it reads through, to `Input`, which frees both; the
    // dictionaries are owned here and freed after the call that reads them.
    unsafe {
        let mut context = ffi::avformat_alloc_context();
        if context.is_null() {
            return Err(ffmpeg(ffi::AVERROR(libc::ENOMEM)));
        }
        (*context).pb = io.as_mut_ptr();
        (*context).flags |= ffi::AVFMT_FLAG_CUSTOM_IO;
        let mut options = options.disown();
        let opened = ffi::avformat_open_input(&mut context, name_ptr, std::ptr::null(), &mut options);
        ffi::av_dict_free(&mut options);
        if opened < 0 {
            // avformat_open_input frees the context when it fails.
            return Err(ffmpeg(opened));
        }
        let streams = (*context).nb_streams as usize;
        let mut too_large = None;
        for s in 0..streams {
            let parameters = (**(*context).streams.add(s)).codecpar;
            let (width, height) = (
                u64::try_from((*parameters).width).unwrap_or(0),
                u64::try_from((*parameters).height).unwrap_or(0),
            );
            if (*parameters).codec_type == ffi::AVMediaType::AVMEDIA_TYPE_VIDEO
                && width * height > crate::MAX_FRAME_PIXELS
            {
                too_large = Some((width, height));
            }
        }
        if let Some((width, height)) = too_large {
            ffi::avformat_close_input(&mut context);
            return Err(Error::TooLarge {
                path: path.to_path_buf(),
                reason: format!(
                    "{width}×{height} frames ({} pixels), over the limit of {}",
                    width * height,
                    crate::MAX_FRAME_PIXELS
                ),
            });
        }
        let mut probing: Vec<*mut ffi::AVDictionary> = vec![std::ptr::null_mut(); streams];
        for dictionary in &mut probing {
            let max_pixels = std::ffi::CString::new(crate::MAX_FRAME_PIXELS.to_string()).unwrap_or_default();
            ffi::av_dict_set(dictionary, c"max_pixels".as_ptr(), max_pixels.as_ptr(), 0);
            // What FFmpeg picks itself when given no options (H.264 keeps its parameter
            // sets out of the extradata under frame threading).
            ffi::av_dict_set(dictionary, c"threads".as_ptr(), c"1".as_ptr(), 0);
        }
        let probed = ffi::avformat_find_stream_info(context, probing.as_mut_ptr());
        for dictionary in &mut probing {
            ffi::av_dict_free(dictionary);
        }
        if probed < 0 {
            ffi::avformat_close_input(&mut context);
            return Err(ffmpeg(probed));
        }
        Ok(format::context::Input::wrap_with_custom_io(context, io))
    }
}

/// A demuxer over `path` (a regular file), which holds its own handle on the file.
pub(crate) fn open(path: &Path) -> Result<format::context::Input> {
    demuxer(&open_regular(path)?, path)
}
