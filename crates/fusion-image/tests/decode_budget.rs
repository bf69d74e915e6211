//! The decode budget bounds the pixels held at once across threads (its own test binary:
//! the budget is process-wide).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

#[test]
fn parallel_decodes_hold_at_most_the_budget_and_larger_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let side = 600u32;
    let one = u64::from(side * side * 3);
    let paths: Vec<_> = (0..8u8)
        .map(|i| {
            let path = dir.path().join(format!("{i}.png"));
            image::RgbImage::from_pixel(side, side, image::Rgb([i, 2 * i, 3 * i]))
                .save(&path)
                .unwrap();
            path
        })
        .collect();
    // Room for two decoded images at a time, not three.
    fusion_image::set_decode_budget(2 * one + one / 2);
    let threads: Vec<_> = paths
        .iter()
        .cloned()
        .map(|path| {
            std::thread::spawn(move || {
                let decoded = fusion_image::decode(&path, u64::MAX).unwrap();
                // Hold the pixels a while, as preprocessing does.
                std::thread::sleep(Duration::from_millis(30));
                decoded.width()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), side);
    }
    let (budget, peak) = fusion_image::decode_budget_usage();
    assert_eq!(budget, 2 * one + one / 2);
    assert!(peak <= budget && peak >= one, "peak {peak} of {budget}");

    // A thread holding one image cannot wait for room only it could free: refused at once.
    fusion_image::set_decode_budget(one + one / 2);
    let held = fusion_image::decode(&paths[0], u64::MAX).unwrap();
    let error = fusion_image::decode(&paths[1], u64::MAX).unwrap_err().to_string();
    assert!(error.contains("1.png") && error.contains("decode budget"), "{error}");
    drop(held);
    assert!(fusion_image::decode(&paths[1], u64::MAX).is_ok());

    fusion_image::set_decode_budget(one - 1);
    let error = fusion_image::decode(&paths[0], u64::MAX).unwrap_err().to_string();
    assert!(error.contains("0.png") && error.contains("decode budget"), "{error}");
}
