//! Frame sampling, pixel values and sound tracks against the ffmpeg CLI's own output
//! (fixtures/video, made by fixtures/make_video_fixtures.sh), and bad input.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fusion_video::{Error, Fit, FrameSize, Sampling, read_frames, read_sound_track};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/video")
        .join(name)
}

fn rounded(timestamps: &[f64]) -> Vec<f64> {
    timestamps.iter().map(|t| (t * 1000.0).round() / 1000.0).collect()
}

#[test]
fn each_sampling_mode_gives_the_expected_frames_and_times() {
    let clip = fixture("testsrc_h264_aac.mp4"); // 1 s, 10 fps
    let all = read_frames(&clip, Sampling::All, None).unwrap();
    assert_eq!(
        rounded(&all.timestamps),
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    );
    assert_eq!((all.width, all.height, all.rgb.len()), (64, 48, 10 * 64 * 48 * 3));
    assert_eq!(all.corrupt_packets, 0);

    let five = read_frames(&clip, Sampling::Fps(5.0), None).unwrap();
    assert_eq!(rounded(&five.timestamps), [0.0, 0.2, 0.4, 0.6, 0.8]);
    let every_frame = read_frames(&clip, Sampling::Fps(25.0), None).unwrap();
    assert_eq!(every_frame.len(), 10, "a rate above the clip's keeps every frame once");

    // Centres of 4 segments: 0.125, 0.375, 0.625, 0.875 → the first frame at or after each.
    let uniform = read_frames(&clip, Sampling::Uniform(4), None).unwrap();
    assert_eq!(rounded(&uniform.timestamps), [0.2, 0.4, 0.7, 0.9]);
    let window = read_frames(
        &clip,
        Sampling::Window {
            start: 0.2,
            end: 0.6,
            count: 2,
        },
        None,
    )
    .unwrap();
    assert_eq!(rounded(&window.timestamps), [0.3, 0.5]);
    // The same frames as in the full decode.
    let frame = |f: &fusion_video::Frames, i: usize| f.rgb[i * 64 * 48 * 3..(i + 1) * 64 * 48 * 3].to_vec();
    assert_eq!(frame(&window, 0), frame(&all, 3));
    assert_eq!(frame(&uniform, 2), frame(&all, 7));
}

#[test]
fn sparse_sampling_seeks_instead_of_decoding_everything() {
    let clip = fixture("testsrc_10s_gop10.mp4"); // 100 frames, a keyframe every second
    let all = read_frames(&clip, Sampling::All, None).unwrap();
    assert_eq!(all.len(), 100);
    let sparse = read_frames(&clip, Sampling::Uniform(3), None).unwrap();
    assert_eq!(rounded(&sparse.timestamps), [1.7, 5.0, 8.4]);
    assert!(
        sparse.decoded_frames <= 3 * 10,
        "decoded {} frames for 3",
        sparse.decoded_frames
    );
    for (k, t) in sparse.timestamps.iter().enumerate() {
        let i = (t * 10.0).round() as usize;
        let size = 64 * 48 * 3;
        assert_eq!(
            sparse.rgb[k * size..(k + 1) * size],
            all.rgb[i * size..(i + 1) * size],
            "frame at {t}"
        );
    }
}

#[test]
fn pixels_match_the_ffmpeg_cli() {
    let frames = read_frames(fixture("testsrc_h264_aac.mp4"), Sampling::All, None).unwrap();
    let reference = std::fs::read(fixture("testsrc_h264_aac.frame5.rgb24")).unwrap();
    let size = 64 * 48 * 3;
    let ours = &frames.rgb[5 * size..6 * size];
    let worst = ours.iter().zip(&reference).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    let identical = ours.iter().zip(&reference).filter(|(a, b)| a == b).count();
    eprintln!("frame 5: worst {worst} levels, {identical} of {size} values identical");
    assert!(worst <= 2, "worst difference {worst}");
}

#[test]
fn fits_pad_crop_and_stretch() {
    let clip = fixture("testsrc_h264_aac.mp4");
    let padded = read_frames(
        &clip,
        Sampling::Uniform(1),
        Some(FrameSize {
            width: 64,
            height: 64,
            fit: Fit::Pad,
        }),
    )
    .unwrap();
    // 64×48 fits 64×64 unscaled: 8 black rows above and below.
    let row = |y: usize| &padded.rgb[y * 64 * 3..(y + 1) * 64 * 3];
    assert!(
        row(0)
            .iter()
            .chain(row(7))
            .chain(row(56))
            .chain(row(63))
            .all(|&v| v == 0)
    );
    assert!(row(8).iter().any(|&v| v > 0) && row(55).iter().any(|&v| v > 0));
    let cropped = read_frames(
        &clip,
        Sampling::Uniform(1),
        Some(FrameSize {
            width: 32,
            height: 32,
            fit: Fit::Crop,
        }),
    )
    .unwrap();
    assert_eq!(
        (cropped.width, cropped.height, cropped.rgb.len()),
        (32, 32, 32 * 32 * 3)
    );
    assert!(cropped.rgb.chunks(3).all(|p| p.iter().any(|&v| v > 0)) || cropped.rgb.iter().any(|&v| v > 0));
    let stretched = read_frames(
        &clip,
        Sampling::All,
        Some(FrameSize {
            width: 16,
            height: 16,
            fit: Fit::Stretch,
        }),
    )
    .unwrap();
    assert_eq!(stretched.rgb.len(), 10 * 16 * 16 * 3);
    let chw = stretched.to_chw([0.5; 3], [0.5; 3]);
    assert_eq!(chw.len(), 10 * 3 * 16 * 16);
    assert!(chw.iter().all(|v| (-1.0..=1.0).contains(v)));
}

#[test]
fn sound_track_matches_the_ffmpeg_cli() {
    let track = read_sound_track(fixture("testsrc_h264_aac.mp4"), 16000)
        .unwrap()
        .unwrap();
    let bytes = std::fs::read(fixture("testsrc_h264_aac.audio16k.f32le")).unwrap();
    let reference: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(track.samples.len(), reference.len(), "sample count");
    let worst = track
        .samples
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("sound track: {} samples, worst difference {worst:.2e}", reference.len());
    assert!(worst < 1e-4, "{worst}");
}

#[test]
fn silent_audio_only_and_other_codecs() {
    assert_eq!(
        read_sound_track(fixture("testsrc_vp9_silent.webm"), 16000).unwrap(),
        None,
        "no sound is a missing modality"
    );
    let opus = read_sound_track(fixture("testsrc_vp9_opus.webm"), 16000)
        .unwrap()
        .unwrap();
    assert!((15000..17000).contains(&opus.samples.len()), "{}", opus.samples.len());
    let vp9 = read_frames(fixture("testsrc_vp9_opus.webm"), Sampling::All, None).unwrap();
    assert_eq!(vp9.len(), 10);
    let only_sound = fixture("sine_only.ogg");
    assert!(
        matches!(read_frames(&only_sound, Sampling::All, None), Err(Error::NoVideoStream { path }) if path == only_sound)
    );
    let sound = read_sound_track(&only_sound, 8000).unwrap().unwrap();
    assert!((7500..8500).contains(&sound.samples.len()));
    // lavfi's sine has amplitude 1/8: RMS 0.125 / √2 ≈ 0.088 (Opus keeps it within a few %).
    let rms = (sound.samples.iter().map(|s| s * s).sum::<f32>() / sound.samples.len() as f32).sqrt();
    assert!((rms - 0.0884).abs() < 0.005, "{rms}");
}

#[test]
fn truncated_and_garbage_files_end_with_an_error_or_fewer_frames() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["testsrc_h264_aac.mp4", "testsrc_vp9_opus.webm", "testsrc_10s_gop10.mp4"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let truncated = dir.path().join(format!("truncated_{name}"));
        std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
        match read_frames(&truncated, Sampling::All, None) {
            Ok(frames) => assert!(frames.len() < read_frames(fixture(name), Sampling::All, None).unwrap().len()),
            Err(error) => assert!(error.to_string().contains("truncated_"), "{error}"),
        }
        let garbage = dir.path().join(format!("garbage_{name}"));
        let mut noise = bytes.clone();
        for (i, b) in noise.iter_mut().enumerate().skip(600) {
            *b = b.wrapping_mul(31).wrapping_add(i as u8);
        }
        std::fs::write(&garbage, noise).unwrap();
        // Must end (no endless loop); either an error naming the file or what could be read.
        if let Err(error) = read_frames(&garbage, Sampling::All, None) {
            assert!(error.to_string().contains("garbage_"), "{error}");
        }
        let _ = read_sound_track(&garbage, 16000);
    }
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(read_frames(&empty, Sampling::All, None), Err(Error::Ffmpeg { path, .. }) if path == empty));
    assert!(matches!(
        read_frames(fixture("testsrc_h264_aac.mp4"), Sampling::Fps(0.0), None),
        Err(Error::InvalidSetting(_))
    ));
}

#[test]
fn uniform_targets_past_the_last_frame_reuse_it() {
    // Two video frames (0.007 s, 0.207 s) in a 0.61 s file (the sound track is longer):
    // the second target, 0.45 s, is past the last frame. FFmpeg empties the frame it is
    // given at the end of the stream; handing that to swscale aborted the process.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/demo/video/train_00000.webm");
    let size = FrameSize {
        width: 8,
        height: 8,
        fit: Fit::Stretch,
    };
    let frames = read_frames(&path, Sampling::Uniform(2), Some(size)).unwrap();
    assert_eq!(rounded(&frames.timestamps), [0.2, 0.2]);
    assert_eq!(frames.rgb.len(), 2 * 8 * 8 * 3);
    assert_eq!(frames.rgb[..192], frames.rgb[192..], "the last frame, twice");
}

/// A 60-byte YUV4MPEG2 file whose header claims 16000×16000 frames: refused from the header,
/// before the decoder allocates a frame (it took gigabytes, more per thread); the same
/// header at 64×48 is read.
#[test]
fn a_huge_frame_size_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, side: (u32, u32)| {
        let path = dir.path().join(name);
        let mut bytes = format!("YUV4MPEG2 W{} H{} F10:1 Ip A1:1 C420jpeg\n", side.0, side.1).into_bytes();
        bytes.extend(b"FRAME\n");
        bytes.extend(vec![128u8; (side.0 * side.1 * 3 / 2).min(64 * 48 * 3 / 2) as usize]);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let huge = write("huge.y4m", (16000, 16000));
    match read_frames(&huge, Sampling::Uniform(1), None) {
        Err(Error::TooLarge { path, reason }) => {
            assert_eq!(path, huge);
            assert!(reason.contains("16000×16000"), "{reason}");
        }
        other => panic!("{:?}", other.map(|f| f.timestamps.len())),
    }
    let small = write("small.y4m", (64, 48));
    assert_eq!(
        read_frames(&small, Sampling::Uniform(1), None)
            .unwrap()
            .timestamps
            .len(),
        1
    );
}

/// Peak resident memory of this process, in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "run alone in a child by `a_huge_h264_stream_is_refused_from_its_header`"]
fn refuse_in_child() {
    let path = std::env::var("FUSION_VIDEO_REFUSE").unwrap_or_default();
    let before = peak_rss_kib();
    let refused = read_frames(&path, Sampling::Uniform(1), None).err();
    let probed = fusion_video::probe(&path).err();
    println!(
        "grew {} KiB; {}; {}",
        peak_rss_kib().saturating_sub(before),
        refused.map(|e| e.to_string()).unwrap_or_default(),
        probed.map(|e| e.to_string()).unwrap_or_default()
    );
}

/// A 48 KB H.264 file of one black 16000×16000 frame is refused from its container's
/// header, by `read_frames` and `probe` alike, before FFmpeg's stream probe decodes that
/// frame (600 MB of frame buffers per file, more with frame threads; six such files being
/// refused at once took 3.4–3.9 GB). Measured in a child process of its own, as growth of
/// its peak resident memory.
#[test]
fn a_huge_h264_stream_is_refused_from_its_header() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "refuse_in_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("FUSION_VIDEO_REFUSE", fixture("black_16000x16000.mp4"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    // libtest prints the test's name before what it printed.
    let line = printed.split_once("grew ").map_or("", |(_, rest)| rest);
    let grew: u64 = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(grew < 64 << 10, "refusing took {grew} KiB: {printed}");
    assert_eq!(line.matches("16000×16000 frames").count(), 2, "{line}");
}

/// A file named like a video that holds a playlist (HLS, concat) naming a video outside
/// the folder must not be read through it: only single-file containers are demuxed, and
/// nothing opens a second file. A FIFO named `.mp4` is refused, not waited on.
#[test]
fn playlists_and_fifos_named_like_videos_open_no_other_file() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.mp4");
    std::fs::copy(fixture("testsrc_h264_aac.mp4"), &secret).unwrap();
    // The file itself reads (the attack below would work with FFmpeg's defaults).
    assert!(!read_frames(&secret, Sampling::Uniform(2), None).unwrap().is_empty());
    let folder = tempfile::tempdir().unwrap();
    let playlists = [
        (
            "hls.mp4",
            format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{}\n#EXT-X-ENDLIST\n",
                secret.display()
            ),
        ),
        (
            "concat.mp4",
            format!("ffconcat version 1.0\nfile '{}'\n", secret.display()),
        ),
    ];
    for (name, text) in playlists {
        let clip = folder.path().join(name);
        std::fs::write(&clip, text).unwrap();
        let read = read_frames(&clip, Sampling::Uniform(2), None);
        assert!(
            matches!(&read, Err(Error::Ffmpeg { path, .. }) if *path == clip),
            "{name}: {:?}",
            read.map(|f| f.len())
        );
        assert!(fusion_video::probe(&clip).is_err(), "{name}");
        assert!(read_sound_track(&clip, 16000).is_err(), "{name}");
    }
    let fifo = folder.path().join("fifo.mp4");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    match read_frames(&fifo, Sampling::Uniform(1), None) {
        Err(Error::Unreadable { path, reason }) => {
            assert_eq!(path, fifo);
            assert!(reason.contains("not a regular file"), "{reason}");
        }
        other => panic!("{:?}", other.map(|f| f.len())),
    }
}
