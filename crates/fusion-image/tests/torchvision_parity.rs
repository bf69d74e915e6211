//! The image pipeline against torchvision (fixtures/image/reference, made by
//! fixtures/image/make_torchvision_reference.py), and its limits.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fusion_image::{Channels, Crop, Error, Filter, Pipeline, Resize};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/image")
}

fn pipeline(channels: Channels, spec: &Value) -> Pipeline {
    let size = spec["size"].as_u64().unwrap() as u32;
    let count = if channels == Channels::Grey { 1 } else { 3 };
    Pipeline {
        channels,
        resize: Resize::ShorterSide(size),
        filter: if spec["interpolation"] == "bicubic" {
            Filter::Bicubic
        } else {
            Filter::Bilinear
        },
        crop: spec["crop"].as_u64().map_or(Crop::None, |c| Crop::Center {
            width: c as u32,
            height: c as u32,
        }),
        // Mean 0.5 and std 0.25 so that a one-level difference is exactly 4/255 here.
        mean: vec![0.5; count],
        std: vec![0.25; count],
        ..Pipeline::imagenet(0, 0)
    }
}

#[test]
fn resize_crop_and_normalise_match_torchvision_within_one_level() {
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference/torchvision_reference.json")).unwrap(),
    )
    .unwrap();
    let mut compared = 0;
    let mut worst = 0f32;
    let mut exact = (0usize, 0usize);
    for entry in index["images"].as_array().unwrap() {
        let channels = if entry["channels"] == "grey" {
            Channels::Grey
        } else {
            Channels::Rgb
        };
        // JPEGs: the resize is checked on PIL's decoded pixels (see `jpeg_decoding_is_close_to_pil`).
        let file = match entry["decoded"].as_str() {
            Some(decoded) => fixtures().join("reference").join(decoded),
            None => fixtures().join(entry["file"].as_str().unwrap()),
        };
        for (name, spec) in entry["pipelines"].as_object().unwrap() {
            let ours = pipeline(channels, spec).load(&file).unwrap();
            for (kind, reference) in spec["files"].as_object().unwrap() {
                let reference = image::open(fixtures().join("reference").join(reference.as_str().unwrap())).unwrap();
                let (width, height) = (reference.width() as usize, reference.height() as usize);
                let count = ours.shape[0];
                let pixels = if count == 1 {
                    reference.to_luma8().into_raw()
                } else {
                    reference.to_rgb8().into_raw()
                };
                assert_eq!(ours.shape, [count, height, width], "{file:?} {name}");
                let plane = width * height;
                for (i, &value) in ours.data.iter().enumerate() {
                    let (c, p) = (i / plane, i % plane);
                    // Back to [0, 1]: x = value · std + mean.
                    let ours01 = value * 0.25 + 0.5;
                    let theirs01 = f32::from(pixels[p * count + c]) / 255.0;
                    let diff = (ours01 - theirs01).abs();
                    assert!(
                        diff <= 1.0 / 255.0 + 1e-5,
                        "{file:?} {name} ({kind}) pixel {p} channel {c}: {ours01} vs {theirs01}"
                    );
                    worst = worst.max(diff);
                    exact.0 += usize::from(diff < 1e-5);
                    exact.1 += 1;
                }
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 8 * 4);
    eprintln!(
        "{compared} comparisons: worst {:.2} levels, {:.2} % of values identical",
        worst * 255.0,
        100.0 * exact.0 as f64 / exact.1 as f64
    );
}

/// The image crate's JPEG decoder and PIL's libjpeg-turbo round the IDCT and chroma
/// upsampling differently: a level or two on some pixels, none on average.
#[test]
fn jpeg_decoding_is_close_to_pil() {
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference/torchvision_reference.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for entry in index["images"].as_array().unwrap() {
        let Some(decoded) = entry["decoded"].as_str() else {
            continue;
        };
        let ours = fusion_image::decode(&fixtures().join(entry["file"].as_str().unwrap()), 1 << 30)
            .unwrap()
            .to_rgb8();
        let pil = image::open(fixtures().join("reference").join(decoded))
            .unwrap()
            .to_rgb8();
        assert_eq!(ours.dimensions(), pil.dimensions());
        let diffs: Vec<i32> = ours
            .as_raw()
            .iter()
            .zip(pil.as_raw())
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .collect();
        let worst = diffs.iter().copied().max().unwrap_or(0);
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        eprintln!("{decoded}: worst {worst} levels, mean {mean:.3}");
        assert!(worst <= 8 && mean < 0.5, "{decoded}: worst {worst}, mean {mean}");
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn exif_orientation_is_applied() {
    let rotated = fusion_image::decode(&fixtures().join("bunny_exif_rotated.jpg"), 1 << 30).unwrap();
    // Stored 400×225; EXIF orientation 6 shows it 225×400.
    assert_eq!((rotated.width(), rotated.height()), (225, 400));
}

#[test]
fn images_over_the_pixel_budget_are_refused_before_decoding() {
    let file = fixtures().join("bunny_480x270.jpg");
    let small = Pipeline {
        pixel_budget: 100_000,
        ..Pipeline::imagenet(224, 224)
    };
    let error = small.load(&file).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::TooLarge {
                width: 480,
                height: 270,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("bunny_480x270.jpg"));

    // A PNG header claiming 100000 × 100000 pixels, with no pixel data behind it.
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.png");
    let mut header = Vec::new();
    header.extend([
        0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n', 0, 0, 0, 13, b'I', b'H', b'D', b'R',
    ]);
    header.extend(100_000u32.to_be_bytes());
    header.extend(100_000u32.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]);
    let crc = crc32(&header[12..]);
    header.extend(crc.to_be_bytes());
    for (kind, data) in [
        (&b"IDAT"[..], &[0x78u8, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01][..]),
        (b"IEND", &[]),
    ] {
        header.extend((data.len() as u32).to_be_bytes());
        let start = header.len();
        header.extend(kind);
        header.extend(data);
        let crc = crc32(&header[start..]);
        header.extend(crc.to_be_bytes());
    }
    std::fs::write(&bomb, &header).unwrap();
    let error = Pipeline::imagenet(224, 224).load(&bomb).unwrap_err();
    assert!(
        matches!(&error, Error::TooLarge { path, .. } if *path == bomb),
        "{error}"
    );
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn crops_flips_and_batches() {
    let file = fixtures().join("bunny_97x61.bmp");
    let base = Pipeline {
        resize: Resize::None,
        crop: Crop::None,
        ..Pipeline::imagenet(0, 0)
    };
    let full = base.load(&file).unwrap();
    assert_eq!(full.shape, [3, 61, 97]);
    let flipped = Pipeline {
        flip_probability: 1.0,
        ..base.clone()
    }
    .load(&file)
    .unwrap();
    let (w, plane) = (97, 97 * 61);
    for c in 0..3 {
        for y in [0, 30, 60] {
            assert_eq!(flipped.data[c * plane + y * w], full.data[c * plane + y * w + w - 1]);
        }
    }
    let random = Pipeline {
        crop: Crop::Random { width: 32, height: 16 },
        ..base.clone()
    };
    let a = random.load_seeded(&file, 1).unwrap();
    assert_eq!(a, random.load_seeded(&file, 1).unwrap(), "seeded");
    assert_eq!(a.shape, [3, 16, 32]);
    let too_big = Pipeline {
        crop: Crop::Center { width: 98, height: 10 },
        ..base.clone()
    };
    assert!(matches!(too_big.load(&file), Err(Error::Transform { path, .. }) if path == file));

    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 not a jpeg").unwrap();
    let results = base.load_batch(
        &[file.clone(), corrupt.clone(), fixtures().join("mnist_digit_28x28.png")],
        0,
    );
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(&results[1], Err(Error::Decode { path, .. }) if *path == corrupt));
}

#[test]
fn gif_and_tiff_decode_to_the_same_pixels() {
    let dir = tempfile::tempdir().unwrap();
    // Four flat colours: exact in TIFF and in GIF's palette.
    let colours = [[255u8, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];
    let picture = image::RgbImage::from_fn(8, 6, |x, y| image::Rgb(colours[((x / 4) + 2 * (y / 3)) as usize]));
    let base = Pipeline {
        resize: Resize::None,
        crop: Crop::None,
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
        ..Pipeline::imagenet(0, 0)
    };
    for name in ["picture.gif", "picture.tiff"] {
        let path = dir.path().join(name);
        picture.save(&path).unwrap();
        let loaded = base.load(&path).unwrap();
        assert_eq!(loaded.shape, [3, 6, 8], "{name}");
        for (i, pixel) in picture.pixels().enumerate() {
            for c in 0..3 {
                assert_eq!(
                    loaded.data[c * 48 + i],
                    f32::from(pixel.0[c]) / 255.0,
                    "{name} pixel {i}"
                );
            }
        }
    }
}

/// A JPEG cut to a third decodes, with the image crate alone, to grey rows and no error;
/// here it is refused naming the file, from a path and from bytes alike. The whole file,
/// and one with an EXIF thumbnail (its own scan and end marker first), still decode.
#[test]
fn jpegs_cut_short_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["bunny_480x270.jpg", "bunny_exif_rotated.jpg"] {
        let whole = std::fs::read(fixtures().join(name)).unwrap();
        assert!(fusion_image::decode(&fixtures().join(name), 1 << 26).is_ok(), "{name}");
        let cut = dir.path().join(format!("cut_{name}"));
        std::fs::write(&cut, &whole[..whole.len() / 3]).unwrap();
        for result in [
            fusion_image::decode(&cut, 1 << 26),
            fusion_image::decode_bytes(&whole[..whole.len() / 3], &cut, 1 << 26),
        ] {
            match result {
                Err(Error::Truncated { path }) => assert_eq!(path, cut),
                other => panic!("{name}: {:?}", other.map(|d| d.image.width())),
            }
        }
    }
}
