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
