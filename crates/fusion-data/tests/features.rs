//! Feature extraction and the content-addressed cache: values, bad records, reuse across
//! runs and renamed files, sharded extraction.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fusion_data::{FeatureCache, FeatureConfig, FeatureSpec, Manifest, Shard, extract};

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
            config: FeatureConfig::LogMel {
                sample_rate: 8000,
                n_mels: 8,
                frames: 5,
                n_fft: 256,
                hop_length: 128,
            },
        },
        FeatureSpec {
            name: "text".into(),
            config: FeatureConfig::HashedWords { dim: 1024 },
        },
        FeatureSpec {
            name: "video".into(),
            config: FeatureConfig::VideoFrames { frames: 2, size: 4 },
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
    let manifest = Manifest::load(manifest(dir.path())).unwrap();
    let extraction = extract(&manifest, &specs(), None, None, &|_| {}).unwrap();
    let ids: Vec<&str> = extraction.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["all", "image_only", "audio_only"]);
    let problems: Vec<(&str, &str)> = extraction
        .problems
        .iter()
        .map(|p| (p.id.as_str(), p.modality.as_deref().unwrap_or("record")))
        .collect();
    assert_eq!(
        problems,
        [
            ("corrupt", "image"),
            ("missing", "image"),
            ("empty_text", "text"),
            ("nothing", "record")
        ]
    );
    assert!(
        extraction.problems[3]
            .reason
            .contains("none of the configured modalities")
    );
    assert!(extraction.problems[1].path.as_ref().unwrap().ends_with("gone.png"));
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
    let manifest = Manifest::load(manifest(dir.path())).unwrap();
    let cache = FeatureCache::new(dir.path().join("cache"));
    let fresh = extract(&manifest, &specs(), None, None, &|_| {}).unwrap();
    // Two shards fill the cache between them (as two processes or machines would): records
    // 0, 2, 4 then 1, 3, 5. The square image of record 1 was stored by the first shard.
    let shard = |index| {
        let part = Shard { index, count: 2 };
        let extraction = extract(&manifest, &specs(), Some(&cache), Some(part), &|_| {}).unwrap();
        (extraction.cached, extraction.computed)
    };
    assert_eq!(shard(0), (0, 5));
    assert_eq!(shard(1), (1, 0));
    let done = std::sync::atomic::AtomicUsize::new(0);
    let cached = extract(&manifest, &specs(), Some(&cache), None, &|n| {
        done.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!((cached.cached, cached.computed), (6, 0));
    assert_eq!(done.into_inner(), manifest.records.len());
    assert_eq!(cached.features, fresh.features, "cached values are the computed ones");

    // Content-addressed: a renamed copy hits, an edited file misses.
    std::fs::rename(dir.path().join("square.png"), dir.path().join("renamed.png")).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("manifest.csv"))
        .unwrap()
        .replace("square.png", "renamed.png");
    std::fs::write(dir.path().join("manifest.csv"), csv).unwrap();
    let renamed = Manifest::load(dir.path().join("manifest.csv")).unwrap();
    let again = extract(&renamed, &specs(), Some(&cache), None, &|_| {}).unwrap();
    assert_eq!((again.cached, again.computed), (6, 0));
    image::GrayImage::from_raw(2, 2, vec![9, 9, 9, 9])
        .unwrap()
        .save(dir.path().join("renamed.png"))
        .unwrap();
    let edited = extract(&renamed, &specs(), Some(&cache), None, &|_| {}).unwrap();
    assert_eq!((edited.cached, edited.computed), (4, 2));

    // Another configuration has its own folder.
    let other = [FeatureSpec {
        name: "image".into(),
        config: FeatureConfig::Pixels { size: 3, grey: true },
    }];
    let resized = extract(&renamed, &other, Some(&cache), None, &|_| {}).unwrap();
    assert_eq!(resized.cached, 0);

    // A damaged shard is an error naming it, not silently wrong features.
    let folder = cache.folder(&specs()[0].config);
    let shard = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    std::fs::write(&shard, b"garbage").unwrap();
    let error = extract(&renamed, &specs(), Some(&cache), None, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(error.contains(&shard.display().to_string()), "{error}");
}

#[test]
fn a_cache_that_cannot_be_written_costs_speed_not_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::load(manifest(dir.path())).unwrap();
    // The cache root is a file: nothing can be stored under it.
    std::fs::write(dir.path().join("blocked"), b"").unwrap();
    let cache = FeatureCache::new(dir.path().join("blocked"));
    let extraction = extract(&manifest, &specs(), Some(&cache), None, &|_| {}).unwrap();
    assert_eq!(extraction.records.len(), 3);
    assert_eq!(
        extraction.cache_errors.len(),
        specs().len(),
        "{:?}",
        extraction.cache_errors
    );
    assert!(extraction.cache_errors[0].contains("blocked"));
}
