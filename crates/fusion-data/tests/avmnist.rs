//! The AV-MNIST builder on a tiny MNIST/FSDD look-alike: sizes, same-digit pairing, no
//! test recording in training, speaker-disjoint option, reproducibility, errors.
#![allow(clippy::unwrap_used)]

use std::{io::Write, path::Path};

use fusion_data::{AvMnistOptions, Error, Manifest, Split, build_avmnist};

fn write_idx(path: &Path, magic: u32, dims: &[u32], data: &[u8]) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(data);
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    encoder.write_all(&bytes).unwrap();
    encoder.finish().unwrap();
}

/// 30 training and 10 test "digits" (image i is filled with value i), and two speakers
/// with recordings 0–6 of every digit.
fn sources(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (mnist, fsdd) = (root.join("mnist"), root.join("fsdd"));
    std::fs::create_dir_all(&mnist).unwrap();
    std::fs::create_dir_all(&fsdd).unwrap();
    for (name, count) in [("train", 30u32), ("t10k", 10)] {
        let images: Vec<u8> = (0..count).flat_map(|i| vec![i as u8; 28 * 28]).collect();
        let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
        write_idx(
            &mnist.join(format!("{name}-images-idx3-ubyte.gz")),
            2051,
            &[count, 28, 28],
            &images,
        );
        write_idx(
            &mnist.join(format!("{name}-labels-idx1-ubyte.gz")),
            2049,
            &[count],
            &labels,
        );
    }
    for digit in 0..10 {
        for speaker in ["alice", "bob"] {
            for index in 0..7 {
                std::fs::write(
                    fsdd.join(format!("{digit}_{speaker}_{index}.wav")),
                    format!("{digit}{speaker}{index}"),
                )
                .unwrap();
            }
        }
    }
    (mnist, fsdd)
}

fn options() -> AvMnistOptions {
    AvMnistOptions {
        seed: 3,
        train: 25,
        val: 5,
        test: 10,
        test_speakers: None,
        pca_energy: None,
        noise_snr_db: None,
    }
}

#[test]
fn pairs_same_digits_keeps_test_recordings_out_of_training_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let (mnist, fsdd) = sources(dir.path());
    let summary = build_avmnist(&mnist, &fsdd, &dir.path().join("a"), &options()).unwrap();
    assert_eq!(summary.counts, [25, 5, 10]);
    let manifest = Manifest::load(&summary.manifest).unwrap();
    assert!(manifest.rejected.is_empty());
    assert_eq!(manifest.records.len(), 40);
    for record in &manifest.records {
        let audio = record.audio.as_ref().unwrap();
        let name = audio.file_stem().unwrap().to_str().unwrap().to_string();
        let parts: Vec<&str> = name.split('_').collect();
        assert_eq!(parts[0], record.label, "{name} paired with a {}", record.label);
        let index: u32 = parts[2].parse().unwrap();
        assert_eq!(
            index < 5,
            record.split == Some(Split::Test),
            "{name} in {:?}",
            record.split
        );
        assert!(audio.exists(), "the recording is copied beside the manifest");
        let picture = image::open(record.image.as_ref().unwrap()).unwrap().to_luma8();
        let value = picture.get_pixel(0, 0).0[0];
        assert_eq!(
            u32::from(value) % 10,
            record.label.parse::<u32>().unwrap(),
            "image and label stay together"
        );
    }
    let again = build_avmnist(&mnist, &fsdd, &dir.path().join("b"), &options()).unwrap();
    assert_eq!(again.manifest_sha256, summary.manifest_sha256);
    let other = build_avmnist(
        &mnist,
        &fsdd,
        &dir.path().join("c"),
        &AvMnistOptions { seed: 4, ..options() },
    )
    .unwrap();
    assert_ne!(other.manifest_sha256, summary.manifest_sha256);
}

#[test]
fn speaker_disjoint_split_holds_out_whole_speakers() {
    let dir = tempfile::tempdir().unwrap();
    let (mnist, fsdd) = sources(dir.path());
    let held_out = AvMnistOptions {
        test_speakers: Some(vec!["bob".into()]),
        ..options()
    };
    let summary = build_avmnist(&mnist, &fsdd, &dir.path().join("out"), &held_out).unwrap();
    for record in Manifest::load(&summary.manifest).unwrap().records {
        let name = record.audio.unwrap().file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(name.contains("_bob_"), record.split == Some(Split::Test), "{name}");
    }
}

#[test]
fn missing_or_malformed_sources_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (mnist, fsdd) = sources(dir.path());
    let too_many = AvMnistOptions { train: 40, ..options() };
    assert!(matches!(
        build_avmnist(&mnist, &fsdd, &dir.path().join("x"), &too_many),
        Err(Error::Dataset { .. })
    ));
    let labels = mnist.join("t10k-labels-idx1-ubyte.gz");
    write_idx(&labels, 2051, &[10], &[0; 10]);
    let error = build_avmnist(&mnist, &fsdd, &dir.path().join("y"), &options()).unwrap_err();
    assert!(
        matches!(&error, Error::Dataset { path, reason } if *path == labels && reason.contains("magic")),
        "{error}"
    );
    std::fs::remove_file(&labels).unwrap();
    let error = build_avmnist(&mnist, &fsdd, &dir.path().join("z"), &options()).unwrap_err();
    assert!(error.to_string().contains("t10k-labels-idx1-ubyte.gz"), "{error}");
}

#[test]
fn pca_degradation_keeps_the_leading_components_and_noise_has_the_asked_snr() {
    let dir = tempfile::tempdir().unwrap();
    let (mnist, fsdd) = sources(dir.path());
    // Left half of image i varies a lot across images, the right half less: the first
    // principal component is mostly the left half.
    let left = |i: u32| ((i * 7) % 30 * 8) as u8;
    let right = |i: u32| (i % 3 * 40) as u8;
    let images: Vec<u8> = (0..30u32)
        .flat_map(|i| (0..28 * 28).map(move |p| if p % 28 < 14 { left(i) } else { right(i) }))
        .collect();
    write_idx(&mnist.join("train-images-idx3-ubyte.gz"), 2051, &[30, 28, 28], &images);
    let halves = |options: &AvMnistOptions, out: &str| -> Vec<(u32, u8, u8)> {
        let summary = build_avmnist(&mnist, &fsdd, &dir.path().join(out), options).unwrap();
        Manifest::load(&summary.manifest)
            .unwrap()
            .records
            .iter()
            .filter(|r| r.split != Some(Split::Test))
            .map(|r| {
                let picture = image::open(r.image.as_ref().unwrap()).unwrap().to_luma8();
                (
                    r.label.parse().unwrap(),
                    picture.get_pixel(3, 3).0[0],
                    picture.get_pixel(20, 3).0[0],
                )
            })
            .collect()
    };
    // Keeping (nearly) all the energy gives the images back; the data has rank 2.
    for (label, l, r) in halves(
        &AvMnistOptions {
            pca_energy: Some(0.999),
            ..options()
        },
        "all",
    ) {
        let originals: Vec<u32> = (0..30).filter(|i| i % 10 == label).collect();
        assert!(
            originals
                .iter()
                .any(|&i| l.abs_diff(left(i)) <= 1 && r.abs_diff(right(i)) <= 1),
            "digit {label}: ({l}, {r}) is not an original"
        );
    }
    // One component: the right half loses most of its variation, the left keeps it.
    let spread = |values: Vec<u8>| f64::from(values.iter().max().unwrap() - values.iter().min().unwrap());
    let one = halves(
        &AvMnistOptions {
            pca_energy: Some(0.3),
            ..options()
        },
        "one",
    );
    assert!(spread(one.iter().map(|h| h.1).collect()) > 150.0);
    assert!(spread(one.iter().map(|h| h.2).collect()) < 40.0, "{one:?}");
    // Every recording a tone of its own frequency, so a pairing can be recognised.
    let read = |path: &Path| -> Vec<f64> {
        hound::WavReader::open(path)
            .unwrap()
            .samples::<i16>()
            .map(|s| f64::from(s.unwrap()) / 32768.0)
            .collect()
    };
    let mut sources: Vec<_> = std::fs::read_dir(&fsdd).unwrap().map(|e| e.unwrap().path()).collect();
    sources.sort();
    for (k, path) in sources.iter().enumerate() {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        for t in 0..800 {
            let value = (t as f32 * (0.05 + 0.01 * k as f32)).sin() * 6000.0;
            writer.write_sample(value as i16).unwrap();
        }
        writer.finalize().unwrap();
    }
    let degraded = AvMnistOptions {
        noise_snr_db: Some((10.0, 10.0)),
        ..options()
    };
    let summary = build_avmnist(&mnist, &fsdd, &dir.path().join("out"), &degraded).unwrap();
    let manifest = Manifest::load(&summary.manifest).unwrap();
    // The clean build with the same seed pairs the same recordings: each noisy file is its
    // clean counterpart plus noise at 10 dB.
    let clean_build = build_avmnist(&mnist, &fsdd, &dir.path().join("clean"), &options()).unwrap();
    let clean_records = Manifest::load(&clean_build.manifest).unwrap().records;
    let mut files = std::collections::BTreeSet::new();
    for (record, clean_record) in manifest.records.iter().zip(&clean_records) {
        let audio = record.audio.as_ref().unwrap();
        assert!(files.insert(audio.clone()), "every sample has its own noisy recording");
        assert_eq!(record.group.as_deref(), Some("snr +10 to +15 dB"));
        let (noisy, clean) = (read(audio), read(clean_record.audio.as_ref().unwrap()));
        let signal = clean.iter().map(|v| v * v).sum::<f64>();
        let noise = noisy.iter().zip(&clean).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
        let snr = 10.0 * (signal / noise).log10();
        assert!((snr - 10.0).abs() < 1.0, "{} at {snr:.2} dB", audio.display());
    }
    let again = build_avmnist(&mnist, &fsdd, &dir.path().join("again"), &degraded).unwrap();
    assert_eq!(again.manifest_sha256, summary.manifest_sha256);
    let bytes = |root: &str| std::fs::read(dir.path().join(root).join("audio/train_00000.wav")).unwrap();
    assert_eq!(bytes("out"), bytes("again"), "noise is seeded");
    for bad in [
        AvMnistOptions {
            pca_energy: Some(1.5),
            ..options()
        },
        AvMnistOptions {
            noise_snr_db: Some((f64::NEG_INFINITY, 5.0)),
            ..options()
        },
        AvMnistOptions {
            noise_snr_db: Some((5.0, 0.0)),
            ..options()
        },
    ] {
        assert!(
            build_avmnist(&mnist, &fsdd, &dir.path().join("bad"), &bad).is_err(),
            "{bad:?}"
        );
    }
}
