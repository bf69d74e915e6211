//! The image pipeline: decode (EXIF orientation applied, a pixel budget enforced),
//! convert channels, resize with antialiasing as PIL/torchvision do, crop, flip, normalise
//! to channels-first `f32`; batches in parallel.

use std::path::{Path, PathBuf};

use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use rayon::prelude::*;

use crate::{Channels, ChwImage, Error, Result};

/// Resampling filter; the convolution kernels widen when shrinking (antialiasing), as in
/// PIL and torchvision's `Resize(antialias=True)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Nearest neighbour (no antialiasing).
    Nearest,
    /// Triangle kernel (PIL `BILINEAR`).
    Bilinear,
    /// Keys cubic with a = −0.5 (PIL `BICUBIC`).
    Bicubic,
}

/// Output size of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// Keep the decoded size.
    None,
    /// Shorter side to this length, the other scaled and truncated, as torchvision's
    /// `Resize(int)`.
    ShorterSide(u32),
    /// Exactly this size (aspect ratio not kept).
    Exact {
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
    },
}

/// Crop after resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crop {
    /// No crop.
    None,
    /// Centred, offsets rounded as torchvision's `CenterCrop`.
    Center {
        /// Crop width.
        width: u32,
        /// Crop height.
        height: u32,
    },
    /// At a random position (seeded per image, see [`Pipeline::load_seeded`]).
    Random {
        /// Crop width.
        width: u32,
        /// Crop height.
        height: u32,
    },
}

/// Decoded images larger than this many pixels are refused unless the pipeline says
/// otherwise (a decompression bomb decodes a few kilobytes into gigabytes).
pub const DEFAULT_PIXEL_BUDGET: u64 = 64 * 1024 * 1024;

/// Every step from a file to a normalised `[C, H, W]` array.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Output channels.
    pub channels: Channels,
    /// Resize step.
    pub resize: Resize,
    /// Resampling filter.
    pub filter: Filter,
    /// Crop step.
    pub crop: Crop,
    /// Probability of a horizontal flip (random, seeded).
    pub flip_probability: f64,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by.
    pub std: Vec<f32>,
    /// Largest decoded image accepted, in pixels.
    pub pixel_budget: u64,
}

impl Pipeline {
    /// ImageNet-style evaluation: shorter side to `resize`, centre crop `crop`, bilinear,
    /// RGB, ImageNet mean and std.
    pub fn imagenet(resize: u32, crop: u32) -> Self {
        Self {
            channels: Channels::Rgb,
            resize: Resize::ShorterSide(resize),
            filter: Filter::Bilinear,
            crop: Crop::Center {
                width: crop,
                height: crop,
            },
            flip_probability: 0.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            pixel_budget: DEFAULT_PIXEL_BUDGET,
        }
    }

    /// Decodes and transforms one image; random steps (random crop, flip) use `seed`.
    pub fn load_seeded(&self, path: impl AsRef<Path>, seed: u64) -> Result<ChwImage> {
        let path = path.as_ref();
        let decoded = decode(path, self.pixel_budget)?;
        self.apply(&decoded, seed).map_err(|e| e.for_file(path))
    }

    /// Decodes and transforms one image (random steps seeded with 0).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<ChwImage> {
        self.load_seeded(path, 0)
    }

    /// Decodes and transforms many images in parallel; each keeps its own result, so a
    /// bad file does not stop the others. Random steps use `seed + index`.
    pub fn load_batch<P: AsRef<Path> + Sync>(&self, paths: &[P], seed: u64) -> Vec<Result<ChwImage>> {
        paths
            .par_iter()
            .enumerate()
            .map(|(i, p)| self.load_seeded(p, seed.wrapping_add(i as u64)))
            .collect()
    }

    /// Transforms a decoded image.
    pub fn apply(&self, image: &DynamicImage, seed: u64) -> Result<ChwImage> {
        let count = match self.channels {
            Channels::Grey => 1,
            Channels::Rgb => 3,
        };
        if self.mean.len() != count || self.std.len() != count {
            return Err(Error::Normalization {
                channels: count,
                means: self.mean.len(),
                stds: self.std.len(),
            });
        }
        if let Some((c, s)) = self
            .std
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s != 0.0))
        {
            return Err(Error::InvalidSetting(format!("std[{c}] = {s} cannot divide")));
        }
        let (width, height, pixels) = match self.channels {
            Channels::Grey => (image.width(), image.height(), to_grey(image)),
            Channels::Rgb => {
                let rgb = image.to_rgb8();
                (rgb.width(), rgb.height(), rgb.into_raw())
            }
        };
        let (out_w, out_h) = match self.resize {
            Resize::None => (width, height),
            Resize::Exact { width, height } => (width, height),
            Resize::ShorterSide(short) => {
                let (long_in, short_in) = (u64::from(width.max(height)), u64::from(width.min(height)));
                let long = (u64::from(short) * long_in / short_in.max(1)) as u32;
                if width <= height { (short, long) } else { (long, short) }
            }
        };
        if out_w == 0 || out_h == 0 {
            return Err(Error::InvalidSetting(format!("resize to {out_w}×{out_h} pixels")));
        }
        let pixels = if (out_w, out_h) == (width, height) {
            pixels
        } else {
            resize(pixels, width, height, out_w, out_h, count, self.filter)?
        };
        let mut rng = SplitMix64(seed);
        let (left, top, crop_w, crop_h) = match self.crop {
            Crop::None => (0, 0, out_w, out_h),
            Crop::Center { width, height } | Crop::Random { width, height } => {
                if width > out_w || height > out_h || width == 0 || height == 0 {
                    return Err(Error::InvalidSetting(format!(
                        "crop {width}×{height} does not fit the {out_w}×{out_h} resized image"
                    )));
                }
                if matches!(self.crop, Crop::Center { .. }) {
                    // torchvision: int(round((H - h) / 2)).
                    let offset = |outer: u32, inner: u32| (f64::from(outer - inner) / 2.0).round_ties_even() as u32;
                    (offset(out_w, width), offset(out_h, height), width, height)
                } else {
                    let left = (rng.next_u64() % u64::from(out_w - width + 1)) as u32;
                    let top = (rng.next_u64() % u64::from(out_h - height + 1)) as u32;
                    (left, top, width, height)
                }
            }
        };
        let flip = self.flip_probability > 0.0 && (rng.next_u64() as f64 / u64::MAX as f64) < self.flip_probability;
        let plane = crop_w as usize * crop_h as usize;
        let mut data = vec![0f32; plane * count];
        let scale: Vec<f32> = self.std.iter().map(|s| 1.0 / (255.0 * s)).collect();
        let shift: Vec<f32> = self.mean.iter().zip(&self.std).map(|(m, s)| m / s).collect();
        for y in 0..crop_h as usize {
            let row = (top as usize + y) * out_w as usize;
            for x in 0..crop_w as usize {
                let source_x = left as usize + if flip { crop_w as usize - 1 - x } else { x };
                let source = (row + source_x) * count;
                for c in 0..count {
                    data[c * plane + y * crop_w as usize + x] = f32::from(pixels[source + c]) * scale[c] - shift[c];
                }
            }
        }
        Ok(ChwImage {
            shape: [count, crop_h as usize, crop_w as usize],
            data,
        })
    }
}

/// Decodes `path` with EXIF orientation applied, refusing images over `pixel_budget`
/// pixels before their pixels are allocated.
pub fn decode(path: &Path, pixel_budget: u64) -> Result<Decoded> {
    let io = |e: std::io::Error| Error::Decode {
        path: path.to_path_buf(),
        source: image::ImageError::IoError(e),
    };
    let reader = ImageReader::open(path).map_err(io)?.with_guessed_format().map_err(io)?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        check_jpeg_complete(&std::fs::read(path).map_err(io)?, path)?;
    }
    decode_from(reader, path, pixel_budget)
}

/// Refuses a JPEG cut short: its last start-of-scan (`FF DA`) must be followed by an
/// end-of-image marker (`FF D9`). Inside entropy-coded data a `FF` byte is always followed
/// by `00` or a restart marker, so these two byte pairs are markers; an EXIF thumbnail's
/// own scan and end marker come before the main scan.
fn check_jpeg_complete(bytes: &[u8], path: &Path) -> Result<()> {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(scan), Some(end)) if end > scan => Ok(()),
        // No scan at all: the decoder reports that itself.
        (None, _) => Ok(()),
        _ => Err(Error::Truncated {
            path: path.to_path_buf(),
        }),
    }
}

/// [`decode`] for a file already in memory; `path` names it in errors.
pub fn decode_bytes(bytes: &[u8], path: &Path, pixel_budget: u64) -> Result<Decoded> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Decode {
            path: path.to_path_buf(),
            source: image::ImageError::IoError(e),
        })?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        check_jpeg_complete(bytes, path)?;
    }
    decode_from(reader, path, pixel_budget)
}

/// What an image's header says, read without decoding its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Whether it is stored as luminance (with or without alpha).
    pub grey: bool,
}

/// Reads `path`'s header: size and colour type, no pixel decoded.
pub fn header(path: &Path) -> Result<Header> {
    let error = |source: image::ImageError| Error::Decode {
        path: path.to_path_buf(),
        source,
    };
    let reader = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| error(image::ImageError::IoError(e)))?;
    let decoder = reader.into_decoder().map_err(error)?;
    let (width, height) = decoder.dimensions();
    let grey = matches!(
        decoder.color_type(),
        image::ColorType::L8 | image::ColorType::La8 | image::ColorType::L16 | image::ColorType::La16
    );
    Ok(Header { width, height, grey })
}

/// A decoded image and its share of the process's decode budget (see
/// [`crate::set_decode_budget`]), given back when this is dropped: keep it while the pixels
/// are in use.
#[derive(Debug)]
pub struct Decoded {
    /// The image, EXIF orientation applied.
    pub image: DynamicImage,
    _share: crate::budget::BudgetShare,
}

impl std::ops::Deref for Decoded {
    type Target = DynamicImage;
    fn deref(&self) -> &DynamicImage {
        &self.image
    }
}

fn decode_from<R: std::io::BufRead + std::io::Seek>(
    mut reader: ImageReader<R>,
    path: &Path,
    pixel_budget: u64,
) -> Result<Decoded> {
    let decode_error = |source: image::ImageError| Error::Decode {
        path: path.to_path_buf(),
        source,
    };
    let mut limits = Limits::default();
    // Room for the decoded pixels at 16 bits × 4 channels, plus the decoder's own buffers.
    limits.max_alloc = Some(pixel_budget.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > pixel_budget {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            budget: pixel_budget,
        });
    }
    let orientation = decoder.orientation().map_err(decode_error)?;
    // Rotating may copy the pixels once more.
    let bytes = decoder
        .total_bytes()
        .saturating_mul(if orientation == image::metadata::Orientation::NoTransforms {
            1
        } else {
            2
        });
    let share = crate::budget::BudgetShare::reserve(bytes).map_err(|budget| Error::Transform {
        path: path.to_path_buf(),
        reason: format!(
            "decoding needs {bytes} bytes, over the whole decode budget of {budget} (FUSION_DECODE_BUDGET_MB)"
        ),
    })?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    Ok(Decoded { image, _share: share })
}

/// Luma as PIL's `convert("L")` (ITU-R 601-2: 0.299 R + 0.587 G + 0.114 B, fixed point).
fn to_grey(image: &DynamicImage) -> Vec<u8> {
    match image {
        DynamicImage::ImageLuma8(grey) => grey.as_raw().clone(),
        _ => image
            .to_rgb8()
            .pixels()
            .map(|p| {
                let [r, g, b] = p.0.map(u32::from);
                ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
            })
            .collect(),
    }
}

fn resize(
    pixels: Vec<u8>,
    width: u32,
    height: u32,
    out_w: u32,
    out_h: u32,
    count: usize,
    filter: Filter,
) -> Result<Vec<u8>> {
    let pixel_type = if count == 1 { PixelType::U8 } else { PixelType::U8x3 };
    let algorithm = match filter {
        Filter::Nearest => ResizeAlg::Nearest,
        Filter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        Filter::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
    };
    let options = ResizeOptions::new().resize_alg(algorithm);
    let mut resizer = Resizer::new();
    let mut pass = |pixels: Vec<u8>, from: (u32, u32), to: (u32, u32)| -> Result<Vec<u8>> {
        if from == to {
            return Ok(pixels);
        }
        let source = Image::from_vec_u8(from.0, from.1, pixels, pixel_type)
            .map_err(|e| Error::InvalidSetting(format!("resize source: {e}")))?;
        let mut target = Image::new(to.0, to.1, pixel_type);
        resizer
            .resize(&source, &mut target, &options)
            .map_err(|e| Error::InvalidSetting(format!("resize {width}×{height} → {out_w}×{out_h}: {e}")))?;
        Ok(target.into_vec())
    };
    // Horizontal pass, then vertical, each rounded and clipped to u8 as PIL does: a
    // single two-dimensional pass differs from PIL by up to ~13 levels where bicubic
    // overshoots at sharp edges.
    let wide = pass(pixels, (width, height), (out_w, height))?;
    pass(wide, (out_w, height), (out_w, out_h))
}

/// Small, well-mixed seeded generator (SplitMix64, Steele et al. 2014) for the random
/// steps here and for other seeded choices (dataset builders).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1)` from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

impl Error {
    /// Names the file in errors raised after decoding.
    fn for_file(self, path: &Path) -> Self {
        match self {
            Self::InvalidSetting(reason) => Self::Transform {
                path: PathBuf::from(path),
                reason,
            },
            other => other,
        }
    }
}
