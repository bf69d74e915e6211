use std::path::Path;

use image::DynamicImage;

use crate::Result;

/// Channel layout a model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// One luminance channel.
    Grey,
    /// Red, green, blue.
    Rgb,
}

/// A channels-first `f32` image, `shape = [C, H, W]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ChwImage {
    /// `[channels, height, width]`.
    pub shape: [usize; 3],
    /// Pixel values, channel planes one after another.
    pub data: Vec<f32>,
}

/// Decodes an image file (EXIF orientation applied, [`crate::DEFAULT_PIXEL_BUDGET`]
/// enforced), converts it to `channels` and normalises it with `(x / 255 - mean[c]) / std[c]`
/// per channel, at its own size.
pub fn load_normalized(path: impl AsRef<Path>, channels: Channels, mean: &[f32], std: &[f32]) -> Result<ChwImage> {
    let path = path.as_ref();
    let decoded = crate::decode(path, crate::DEFAULT_PIXEL_BUDGET)?;
    normalize(&decoded, channels, mean, std)
}

/// Converts a decoded image to normalised CHW `f32` (see [`load_normalized`]).
pub fn normalize(image: &DynamicImage, channels: Channels, mean: &[f32], std: &[f32]) -> Result<ChwImage> {
    let pipeline = crate::Pipeline {
        channels,
        resize: crate::Resize::None,
        filter: crate::Filter::Bilinear,
        crop: crate::Crop::None,
        flip_probability: 0.0,
        mean: mean.to_vec(),
        std: std.to_vec(),
        pixel_budget: crate::DEFAULT_PIXEL_BUDGET,
    };
    pipeline.apply(image, 0)
}

#[cfg(test)]
mod tests {
    use image::{Rgb, RgbImage};

    use super::*;
    use crate::Error;

    #[test]
    fn rgb_png_round_trips_to_normalised_chw() -> Result<()> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("two_pixels.png");
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, Rgb([255, 0, 51]));
        img.put_pixel(1, 0, Rgb([0, 255, 102]));
        img.save(&path).expect("write png");

        let chw = load_normalized(&path, Channels::Rgb, &[0.5, 0.5, 0.0], &[0.5, 0.5, 1.0])?;
        assert_eq!(chw.shape, [3, 1, 2]);
        // Plane R: [1, -1]; plane G: [-1, 1]; plane B: [0.2, 0.4].
        let expected = [1.0, -1.0, -1.0, 1.0, 0.2, 0.4];
        for (got, want) in chw.data.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{:?}", chw.data);
        }
        Ok(())
    }

    #[test]
    fn corrupt_file_and_bad_normalisation_are_typed_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("corrupt.png");
        std::fs::write(&path, b"\x89PNG\r\n\x1a\nnot really").expect("write");
        assert!(matches!(load_normalized(&path, Channels::Rgb, &[0.0; 3], &[1.0; 3]),
            Err(Error::Decode { path: p, .. }) if p == path));

        let img = DynamicImage::new_luma8(2, 2);
        assert!(matches!(
            normalize(&img, Channels::Grey, &[0.0, 0.0], &[1.0]),
            Err(Error::Normalization {
                channels: 1,
                means: 2,
                stds: 1
            })
        ));
    }
}
