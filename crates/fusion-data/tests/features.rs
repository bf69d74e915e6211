//! Feature extraction and the content-addressed cache: values, bad records, reuse across
//! runs and renamed files, sharded extraction.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fusion_data::{
    FeatureCache, FeatureConfig, FeatureSpec, ImageNormalization, LogMelConfig, Manifest, PathScope, Shard, extract,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn specs() -> Vec<FeatureSpec> {
    vec![
        FeatureSpec {
            name: "image".into(),
            config: FeatureConfig::Pixels { size: 2, grey: true },
        },
        FeatureSpec {
            name: "audio".into(),
            config: FeatureConfig::LogMel(LogMelConfig {
                sample_rate: 8000,
                n_mels: 8,
                frames: 5,
                n_fft: 256,
                hop_length: 128,
            }),
        },
        FeatureSpec {
            name: "text".into(),
            config: FeatureConfig::HashedWords { dim: 1024 },
        },
        FeatureSpec {
            name: "video".into(),
            config: FeatureConfig::VideoFrames {
                frames: 2,
                size: 4,
                grey: true,
                normalize: ImageNormalization::None,
            },
        },
    ]
}

/// A manifest with complete, partial and bad records; returns its path.
fn manifest(dir: &Path) -> PathBuf {
    let f = |p: &str| fixtures().join(p).display().to_string();
    // A 2×2 grey image with known values.
    image::GrayImage::from_raw(2, 2, vec![0, 51, 102, 255])
        .unwrap()
        .save(dir.join("square.png"))
        .unwrap();
    std::fs::write(dir.join("corrupt.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    let rows = [
        "id,label,split,image,audio,video,text".to_string(),
        format!(
            "all,0,train,square.png,{},{},a red square",
            f("audio/tone_440hz.wav"),
            f("video/testsrc_h264_aac.mp4")
        ),
        "image_only,1,train,square.png,,,".to_string(),
        format!("audio_only,1,test,,{},,", f("audio/chirp_100_3000hz.wav")),
        "corrupt,0,train,corrupt.png,,,words".to_string(),
        "missing,1,val,gone.png,,,".to_string(),
        "empty_text,1,val,,,,  ...  ".to_string(),
        "nothing,0,test,,,,".to_string(),
    ];
    let path = dir.join("manifest.csv");
    std::fs::write(&path, rows.join("\n")).unwrap();
    path
}

#[test]
fn features_have_the_configured_values_and_bad_records_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::load_with(manifest(dir.path()), PathScope::Anywhere).unwrap();
    let extraction = extract(&manifest, &specs(), None, None, &Default::default(), &|_| {}).unwrap();
    let ids: Vec<&str> = extraction.records.iter().map(|r| r.id.as_str()).collect();
    // `corrupt` loses its image, not its text.
    assert_eq!(ids, ["all", "image_only", "audio_only", "corrupt"]);
    let modality = |p: &fusion_data::Problem| (p.id.clone(), p.modality.clone().unwrap_or("record".into()));
    let absent: Vec<_> = extraction.absent.iter().map(modality).collect();
    assert_eq!(absent, [("corrupt".to_string(), "image".to_string())]);
    assert!(extraction.absent[0].path.as_ref().unwrap().ends_with("corrupt.png"));
    let problems: Vec<_> = extraction.problems.iter().map(modality).collect();
    let named = |id: &str, m: &str| (id.to_string(), m.to_string());
    assert_eq!(
        problems,
        [
            named("missing", "image"),
            named("empty_text", "text"),
            named("nothing", "record")
        ]
    );
    assert!(
        extraction.problems[2]
            .reason
            .contains("none of the configured modalities")
    );
    assert!(extraction.problems[0].path.as_ref().unwrap().ends_with("gone.png"));
    let [image, _, text, _] = &extraction.features[..] else {
        panic!()
    };
    assert!(
        image[3].is_none() && text[3].is_some(),
        "corrupt: text kept, image absent"
    );

    // Those who would rather lose the record get it left out, its bad file named.
    let mut strict = extraction.clone();
    strict.skip_records_with_absent_files();
    let ids: Vec<&str> = strict.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["all", "image_only", "audio_only"]);
    assert!(strict.absent.is_empty());
    assert_eq!(strict.problems.len(), 4);
    assert!(strict.features.iter().all(|column| column.len() == 3));
    assert!(strict.keys.iter().all(|column| column.len() == 3));
    let [image, audio, text, video] = &extraction.features[..] else {
        panic!()
    };
    let pixels = image[0].as_ref().unwrap();
    for (got, want) in pixels.iter().zip([0.0, 0.2, 0.4, 1.0]) {
        assert!((got - want).abs() < 1e-6, "pixels / 255 at their own size: {pixels:?}");
    }
    assert_eq!(image[2], None, "audio_only has no image");
    let mel = audio[0].as_ref().unwrap();
    assert_eq!(mel.len(), 8 * 5);
    assert!(mel.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(
        mel.iter().copied().fold(0.0, f32::max),
        1.0,
        "the clip's peak maps to 1"
    );
    assert_ne!(audio[0], audio[2]);
    let words = text[0].as_ref().unwrap();
    assert!((words.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-6);
    assert_eq!(
        words.iter().filter(|v| **v > 0.0).count(),
        5,
        "3 words and 2 bigrams in distinct buckets"
    );
    let frames = video[0].as_ref().unwrap();
    assert_eq!(frames.len(), 2 * 16);
    assert_eq!(extraction.split_indices(fusion_data::Split::Test), [2]);
}

#[test]
fn the_cache_is_reused_across_runs_renames_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::load_with(manifest(dir.path()), PathScope::Anywhere).unwrap();
    let cache = FeatureCache::new(dir.path().join("cache"));
    let fresh = extract(&manifest, &specs(), None, None, &Default::default(), &|_| {}).unwrap();
    // Two shards fill the cache between them (as two processes or machines would): records
    // 0, 2, 4 then 1, 3, 5. The square image of record 1 was stored by the first shard.
    let shard = |index| {
        let part = Shard { index, count: 2 };
        let extraction = extract(
            &manifest,
            &specs(),
            Some(&cache),
            Some(part),
            &Default::default(),
            &|_| {},
        )
        .unwrap();
        (extraction.cached, extraction.computed)
    };
    assert_eq!(shard(0), (0, 5));
    assert_eq!(shard(1), (1, 1), "corrupt's text");
    let done = std::sync::atomic::AtomicUsize::new(0);
    let cached = extract(&manifest, &specs(), Some(&cache), None, &Default::default(), &|n| {
        done.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!((cached.cached, cached.computed), (7, 0));
    assert_eq!(done.into_inner(), manifest.records.len());
    assert_eq!(cached.features, fresh.features, "cached values are the computed ones");

    // Only the vectors asked for are read back (a cache may be shared by several manifests).
    assert!(specs().iter().any(|s| cache.load(&s.config).unwrap().len() > 1));
    for spec in specs() {
        let all = cache.load(&spec.config).unwrap();
        let one: std::collections::HashSet<String> = all.keys().take(1).cloned().collect();
        let wanted = cache.load_wanted(&spec.config, &one).unwrap();
        assert_eq!(wanted.len(), one.len());
        assert!(
            wanted
                .iter()
                .all(|(key, values)| one.contains(key) && all[key] == *values)
        );
        assert!(cache.load_wanted(&spec.config, &Default::default()).unwrap().is_empty());
    }

    // Content-addressed: a renamed copy hits, an edited file misses.
    std::fs::rename(dir.path().join("square.png"), dir.path().join("renamed.png")).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("manifest.csv"))
        .unwrap()
        .replace("square.png", "renamed.png");
    std::fs::write(dir.path().join("manifest.csv"), csv).unwrap();
    let renamed = Manifest::load_with(dir.path().join("manifest.csv"), PathScope::Anywhere).unwrap();
    let again = extract(&renamed, &specs(), Some(&cache), None, &Default::default(), &|_| {}).unwrap();
    assert_eq!((again.cached, again.computed), (7, 0));
    image::GrayImage::from_raw(2, 2, vec![9, 9, 9, 9])
        .unwrap()
        .save(dir.path().join("renamed.png"))
        .unwrap();
    let edited = extract(&renamed, &specs(), Some(&cache), None, &Default::default(), &|_| {}).unwrap();
    assert_eq!((edited.cached, edited.computed), (5, 2));

    // Another configuration has its own folder.
    let other = [FeatureSpec {
        name: "image".into(),
        config: FeatureConfig::Pixels { size: 3, grey: true },
    }];
    let resized = extract(&renamed, &other, Some(&cache), None, &Default::default(), &|_| {}).unwrap();
    assert_eq!(resized.cached, 0);

    // A damaged shard is an error naming it, not silently wrong features.
    let folder = cache.folder(&specs()[0].config);
    let shard = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    std::fs::write(&shard, b"garbage").unwrap();
    let error = extract(&renamed, &specs(), Some(&cache), None, &Default::default(), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(error.contains(&shard.display().to_string()), "{error}");
}

#[test]
fn a_cache_that_cannot_be_written_costs_speed_not_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::load_with(manifest(dir.path()), PathScope::Anywhere).unwrap();
    // The cache root is a file: nothing can be stored under it.
    std::fs::write(dir.path().join("blocked"), b"").unwrap();
    let cache = FeatureCache::new(dir.path().join("blocked"));
    let extraction = extract(&manifest, &specs(), Some(&cache), None, &Default::default(), &|_| {}).unwrap();
    assert_eq!(extraction.records.len(), 4);
    assert_eq!(
        extraction.cache_errors.len(),
        specs().len(),
        "{:?}",
        extraction.cache_errors
    );
    assert!(extraction.cache_errors[0].contains("blocked"));
}

fn tiny_tokenizer() -> PathBuf {
    fixtures().join("text/tiny_tokenizer.json")
}

#[test]
fn shaped_features_keep_their_layout() {
    let dir = tempfile::tempdir().unwrap();
    // A 2×2 RGB image: red, green / blue, white.
    image::RgbImage::from_raw(2, 2, vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])
        .unwrap()
        .save(dir.path().join("rgb.png"))
        .unwrap();
    let bytes = std::fs::read(dir.path().join("rgb.png")).unwrap();
    let image = FeatureConfig::Image {
        size: 2,
        grey: false,
        normalize: ImageNormalization::None,
    };
    assert_eq!(image.shape(), [3, 2, 2]);
    let chw = image.compute(&bytes, &dir.path().join("rgb.png")).unwrap();
    // Channels first: the red plane, then green, then blue.
    assert_eq!(chw, [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
    let imagenet = FeatureConfig::Image {
        size: 2,
        grey: false,
        normalize: ImageNormalization::Imagenet,
    };
    let normalised = imagenet.compute(&bytes, Path::new("rgb.png")).unwrap();
    assert!((normalised[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5, "{normalised:?}");
    assert!((normalised[1] - (0.0 - 0.485) / 0.229).abs() < 1e-5);

    // Log-mel frames first: row t holds the n_mels bands of frame t.
    let wav = fixtures().join("audio/chirp_100_3000hz.wav");
    let mel = LogMelConfig {
        sample_rate: 8000,
        n_mels: 8,
        frames: 6,
        n_fft: 256,
        hop_length: 128,
    };
    let time_first = FeatureConfig::LogMel(mel.clone())
        .compute(&std::fs::read(&wav).unwrap(), &wav)
        .unwrap();
    assert_eq!(FeatureConfig::LogMel(mel.clone()).shape(), [6, 8]);
    // Band statistics over the same six frames, by hand from the picture.
    let stats_config = FeatureConfig::LogMelStats(mel.clone());
    assert_eq!(stats_config.shape(), [32]);
    let stats = stats_config.compute(&std::fs::read(&wav).unwrap(), &wav).unwrap();
    for band in [0, 3, 7] {
        let levels: Vec<f64> = (0..6).map(|t| f64::from(time_first[t * 8 + band])).collect();
        let changes: Vec<f64> = levels.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let std = |v: &[f64]| (v.iter().map(|x| (x - mean(v)).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        let abs: Vec<f64> = changes.iter().map(|c| c.abs()).collect();
        let want = [mean(&levels), std(&levels), mean(&abs), std(&changes)];
        for (k, want) in want.into_iter().enumerate() {
            let got = f64::from(stats[k * 8 + band]);
            assert!((got - want).abs() < 1e-5, "band {band} statistic {k}: {got} vs {want}");
        }
    }
    let clip = fusion_audio::read_wav(&wav, &fusion_audio::WavLimits::default())
        .unwrap()
        .to_mono();
    let samples = fusion_audio::resample(&clip.samples, clip.sample_rate, 8000).unwrap();
    let mut config = fusion_audio::MelConfig::new(8000);
    config.n_fft = 256;
    config.hop_length = 128;
    config.n_mels = 8;
    let db = fusion_audio::DbConfig {
        reference: fusion_audio::DbReference::Max,
        amin: 1e-10,
        top_db: Some(80.0),
    };
    let bands_first = fusion_audio::MelExtractor::new(config)
        .unwrap()
        .log_mel(&samples, &db)
        .unwrap();
    let peak = bands_first.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (t, r) in [(0, 0), (0, 7), (5, 3), (2, 6)] {
        let want = ((bands_first.data[r * bands_first.frames + t] - peak + 80.0) / 80.0).clamp(0.0, 1.0);
        assert!((time_first[t * 8 + r] - want).abs() < 1e-6, "frame {t} band {r}");
    }

    // Video frames [T, C, H, W]: RGB keeps three planes per frame.
    let video = fixtures().join("video/testsrc_h264_aac.mp4");
    let rgb_frames = FeatureConfig::VideoFrames {
        frames: 3,
        size: 8,
        grey: false,
        normalize: ImageNormalization::None,
    };
    assert_eq!(rgb_frames.shape(), [3, 3, 8, 8]);
    let values = rgb_frames.compute(&std::fs::read(&video).unwrap(), &video).unwrap();
    assert_eq!(values.len(), 3 * 3 * 64);
    // ImageNet-normalised frames: each plane shifted and scaled by its channel's constants.
    let imagenet = FeatureConfig::VideoFrames {
        frames: 3,
        size: 8,
        grey: false,
        normalize: ImageNormalization::Imagenet,
    };
    let normalised = imagenet.compute(&[], &video).unwrap();
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    for (i, (plain, scaled)) in values.iter().zip(&normalised).enumerate() {
        let channel = (i / 64) % 3;
        assert!(
            ((plain - mean[channel]) / std[channel] - scaled).abs() < 1e-5,
            "value {i}"
        );
    }
    assert_ne!(imagenet.hash(), rgb_frames.hash());
    let grey_imagenet = FeatureConfig::VideoFrames {
        frames: 3,
        size: 8,
        grey: true,
        normalize: ImageNormalization::Imagenet,
    };
    assert!(matches!(
        grey_imagenet.compute(&[], &video),
        Err(fusion_data::FeatureError::GreyImagenet)
    ));

    // The sound track of a video, time first, like a recording's log-mel.
    let sound = FeatureConfig::SoundTrack(LogMelConfig {
        sample_rate: 16000,
        n_mels: 16,
        frames: 10,
        n_fft: 512,
        hop_length: 256,
    });
    let track = sound.compute(&[], &video).unwrap();
    assert_eq!(track.len(), 160);
    assert!(track.iter().all(|v| (0.0..=1.0).contains(v)));
    let silent = fixtures().join("video/testsrc_vp9_silent.webm");
    assert_eq!(
        sound.compute_prepared(&sound.prepare().unwrap(), &[], &silent).unwrap(),
        None,
        "a clip without sound lacks the modality"
    );
}

#[test]
fn tokens_are_ids_of_varying_length_and_cached_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        r#"{"id": "short", "label": "a", "text": "red"}"#,
        r#"{"id": "long", "label": "b", "text": "a red square, a RED square"}"#,
        r#"{"id": "unknown", "label": "a", "text": "green"}"#,
    ];
    std::fs::write(dir.path().join("m.jsonl"), rows.join("\n")).unwrap();
    let manifest = Manifest::load_with(dir.path().join("m.jsonl"), PathScope::Anywhere).unwrap();
    let config = FeatureConfig::Tokens {
        tokenizer: tiny_tokenizer(),
        max_len: 5,
    };
    assert!(config.variable_length() && config.integer());
    let specs = [FeatureSpec {
        name: "text".into(),
        config: config.clone(),
    }];
    let cache = FeatureCache::new(dir.path().join("cache"));
    let first = extract(&manifest, &specs, Some(&cache), None, &Default::default(), &|_| {}).unwrap();
    let ids: Vec<Vec<f32>> = first.features[0].iter().map(|v| v.clone().unwrap()).collect();
    // Vocabulary: [UNK] 0, [PAD] 1, red 2, square 3, a 4; lower-cased, punctuation split,
    // cut to max_len.
    assert_eq!(ids, [vec![2.0], vec![4.0, 2.0, 3.0, 5.0, 4.0], vec![0.0]]);
    let again = extract(&manifest, &specs, Some(&cache), None, &Default::default(), &|_| {}).unwrap();
    assert_eq!((again.cached, again.computed), (3, 0));
    assert_eq!(again.features, first.features);
    // The tokenizer's content is part of the key: a copy elsewhere hits the same cache.
    let copy = dir.path().join("copy.json");
    std::fs::copy(tiny_tokenizer(), &copy).unwrap();
    let moved = FeatureConfig::Tokens {
        tokenizer: copy,
        max_len: 5,
    };
    assert_eq!(moved.hash(), config.hash());
    let missing = FeatureConfig::Tokens {
        tokenizer: dir.path().join("none.json"),
        max_len: 5,
    };
    let error = missing.validate("modalities[0].features").unwrap_err().to_string();
    assert!(error.contains("modalities[0].features.tokenizer"), "{error}");
}

/// A 16-bit mono WAV header claiming `rate` Hz and `claimed` data bytes, then 4 KB of zeros.
fn lying_wav(rate: u32, claimed: u32) -> Vec<u8> {
    let mut bytes = b"RIFF".to_vec();
    bytes.extend((36 + 4096u32).to_le_bytes());
    bytes.extend(b"WAVEfmt ");
    for (value, width) in [
        (16u32, 4),
        (1, 2),
        (1, 2),
        (rate, 4),
        (rate.wrapping_mul(2), 4),
        (2, 2),
        (16, 2),
    ] {
        bytes.extend(&value.to_le_bytes()[..width]);
    }
    bytes.extend(b"data");
    bytes.extend(claimed.to_le_bytes());
    bytes.extend([0u8; 4096]);
    bytes
}

/// Files that would hang, exhaust memory or take gigabytes to decode: each is one bad
/// record, reported with the file and the reason, found without reading it whole; the good
/// record beside them is extracted. (Before: a FIFO hung, `/dev/zero` was read until
/// memory ran out, a 1 Hz header made the resampler allocate 6.7 GB.)
#[test]
fn special_oversized_and_absurd_files_are_bad_records_not_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.png");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let sparse = dir.path().join("huge.png");
    std::fs::File::create(&sparse).unwrap().set_len(3 << 30).unwrap();
    std::fs::write(dir.path().join("one_hz.wav"), lying_wav(1, 4096)).unwrap();
    std::fs::write(dir.path().join("three_mhz.wav"), lying_wav(3_000_000, 4096)).unwrap();
    std::fs::write(dir.path().join("ten_hours.wav"), lying_wav(8000, 576_000_000)).unwrap();
    let tone = fixtures().join("audio/tone_440hz.wav").display().to_string();
    let rows = [
        "id,label,split,image,audio".to_string(),
        format!("good,0,train,,{tone}"),
        format!("fifo,0,train,{},", fifo.display()),
        "zero,0,train,/dev/zero,".into(),
        format!("folder,0,train,{},", dir.path().display()),
        format!("huge,0,train,{},", sparse.display()),
        "one_hz,0,train,,one_hz.wav".into(),
        "three_mhz,0,train,,three_mhz.wav".into(),
        "ten_hours,0,train,,ten_hours.wav".into(),
    ];
    let path = dir.path().join("manifest.csv");
    std::fs::write(&path, rows.join("\n")).unwrap();
    let manifest = Manifest::load_with(&path, PathScope::Anywhere).unwrap();
    let specs: Vec<FeatureSpec> = specs().into_iter().take(2).collect();
    let extraction = extract(&manifest, &specs, None, None, &Default::default(), &|_| {}).unwrap();
    let ids: Vec<&str> = extraction.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["good"]);
    let reasons: Vec<(&str, &str)> = extraction
        .problems
        .iter()
        .map(|p| (p.id.as_str(), p.reason.as_str()))
        .collect();
    let expected = [
        ("fifo", "not a regular file"),
        ("zero", "not a regular file"),
        ("folder", "not a regular file"),
        ("huge", "3221225472 bytes, over the limit of 1073741824 bytes"),
        ("one_hz", "a sample rate of 1 Hz"),
        ("three_mhz", "3000000 Hz"),
        ("ten_hours", "over the limit of 3600 s"),
    ];
    assert_eq!(reasons.len(), expected.len(), "{reasons:?}");
    for ((id, reason), (want_id, want)) in reasons.iter().zip(expected) {
        assert_eq!(*id, want_id);
        assert!(reason.contains(want), "{id}: {reason}");
    }
    // Validation applies the same checks.
    let report = fusion_data::validate(&manifest, &fusion_data::Limits::default());
    assert_eq!(report.valid, ["good"]);
    assert_eq!(report.problems.len(), expected.len());
}

/// A cache shard that was damaged after it was written, or that holds values no feature
/// has, is an error naming it, never features handed to training.
#[test]
fn damaged_or_absurd_cache_shards_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = FeatureCache::new(dir.path());
    let arrays = std::collections::BTreeMap::from([
        ("a".to_string(), (vec![2], vec![0.5f32, -1.0])),
        ("b".to_string(), (vec![2], vec![3.0f32, 4.0])),
    ]);
    cache.store_named("frozen", &arrays, &serde_json::json!({})).unwrap();
    let any = |_: &[usize]| true;
    let loaded = cache.load_named("frozen", &any, "any").unwrap();
    assert_eq!(loaded["b"].1, [3.0, 4.0]);
    let shard = std::fs::read_dir(cache.named_folder("frozen"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    let good = std::fs::read(&shard).unwrap();
    // Every bit of the values: each flip is caught.
    for byte in good.len() - 16..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[byte] ^= 1 << bit;
            std::fs::write(&shard, &bad).unwrap();
            let error = cache.load_named("frozen", &any, "any").unwrap_err().to_string();
            assert!(
                error.contains(&shard.display().to_string()) && error.contains("checksum"),
                "{error}"
            );
        }
    }
    // A shard without a checksum (as older versions wrote) holding 1e15.
    let data: Vec<u8> = [1e15f32, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data).unwrap();
    std::fs::write(&shard, safetensors::serialize([("a", view)], &None).unwrap()).unwrap();
    let error = cache.load_named("frozen", &any, "any").unwrap_err().to_string();
    assert!(error.contains("is not a feature"), "{error}");
}

/// An extraction that dies part-way (here a panic from the progress callback after the
/// first chunk) keeps every finished chunk in the cache: the next one computes only the rest.
#[test]
fn an_interrupted_extraction_keeps_its_finished_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let total = fusion_data::EXTRACT_CHUNK + 100;
    let lines: Vec<String> = (0..total)
        .map(|i| format!(r#"{{"id": "r{i}", "label": "a", "text": "record number {i}"}}"#))
        .collect();
    let path = dir.path().join("manifest.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let manifest = Manifest::load_with(&path, PathScope::Anywhere).unwrap();
    let specs = [FeatureSpec {
        name: "text".into(),
        config: FeatureConfig::HashedWords { dim: 64 },
    }];
    let cache = FeatureCache::new(dir.path().join("cache"));
    let killed = std::panic::catch_unwind(|| {
        extract(&manifest, &specs, Some(&cache), None, &Default::default(), &|done| {
            assert!(done <= fusion_data::EXTRACT_CHUNK, "killed");
        })
    });
    assert!(killed.is_err());
    let resumed = extract(&manifest, &specs, Some(&cache), None, &Default::default(), &|_| {}).unwrap();
    assert_eq!((resumed.cached, resumed.computed), (fusion_data::EXTRACT_CHUNK, 100));
}

/// Extraction applies the limits it is given (a run configuration's `limits`): a clip
/// longer than the audio limit and an image over the pixel limit lose their modality.
#[test]
fn extraction_applies_the_given_limits() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::load_with(manifest(dir.path()), PathScope::Anywhere).unwrap();
    let limits = fusion_data::Limits {
        audio_seconds: 0.1,
        image_pixels: 3,
        ..Default::default()
    };
    let specs: Vec<FeatureSpec> = specs().into_iter().take(2).collect();
    let extraction = extract(&manifest, &specs, None, None, &limits, &|_| {}).unwrap();
    let reasons: Vec<(&str, &str)> = extraction
        .problems
        .iter()
        .chain(&extraction.absent)
        .map(|p| (p.id.as_str(), p.reason.as_str()))
        .collect();
    for id in ["all", "image_only", "audio_only"] {
        assert!(
            reasons.iter().any(|(i, _)| *i == id),
            "{id} is over a limit: {reasons:?}"
        );
    }
    assert!(
        reasons.iter().any(|(_, r)| r.contains("over the limit of 0.1 s")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|(_, r)| r.contains("square.png")), "{reasons:?}");
    let generous = extract(&manifest, &specs, None, None, &Default::default(), &|_| {}).unwrap();
    assert!(generous.absent.iter().chain(&generous.problems).all(|p| p.id != "all"));
}
