//! Spectral features and resampling against librosa (fixtures/audio/librosa_reference.*,
//! made by fixtures/audio/make_librosa_reference.py).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fusion_audio::{DbConfig, MelConfig, MelExtractor, MelScale, PadMode, read_wav_mono};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/audio")
}

struct Reference {
    index: Value,
    values: Vec<f32>,
}

impl Reference {
    fn load() -> Self {
        let index =
            serde_json::from_str(&std::fs::read_to_string(fixtures().join("librosa_reference.json")).unwrap()).unwrap();
        let bytes = std::fs::read(fixtures().join("librosa_reference.f32")).unwrap();
        let values = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Self { index, values }
    }

    fn array(&self, entry: &Value) -> (Vec<usize>, &[f32]) {
        let shape: Vec<usize> = entry["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let offset = entry["offset"].as_u64().unwrap() as usize;
        (
            shape.clone(),
            &self.values[offset..offset + shape.iter().product::<usize>()],
        )
    }
}

/// The clip's path: committed tones, or FSDD recordings from `cargo xtask data fsdd`.
fn clip_path(clip: &Value) -> Option<PathBuf> {
    let file = clip["file"].as_str().unwrap();
    if clip["source"] == "fixture" {
        return Some(fixtures().join(file));
    }
    let path = std::env::var_os("FUSION_DATA_DIR").map(|d| PathBuf::from(d).join("fsdd/recordings").join(file));
    match path {
        Some(path) if path.exists() => Some(path),
        _ if std::env::var_os("FUSION_REQUIRE_ASSETS").is_some() => panic!("FSDD missing: run `cargo xtask data fsdd`"),
        _ => {
            eprintln!("skipping {file}: FSDD not found (FUSION_DATA_DIR); run `cargo xtask data fsdd`");
            None
        }
    }
}

fn config(sample_rate: u32, c: &Value) -> MelConfig {
    let n_fft = c["n_fft"].as_u64().unwrap() as usize;
    MelConfig {
        n_fft,
        hop_length: c["hop_length"].as_u64().unwrap() as usize,
        n_mels: c["n_mels"].as_u64().unwrap() as usize,
        fmax: c["fmax"].as_f64(),
        scale: if c["htk"].as_bool().unwrap() {
            MelScale::Htk
        } else {
            MelScale::Slaney
        },
        pad_mode: if c["pad_mode"] == "reflect" {
            PadMode::Reflect
        } else {
            PadMode::Constant
        },
        ..MelConfig::new(sample_rate)
    }
}

#[test]
fn log_mel_and_mfcc_match_librosa() {
    let reference = Reference::load();
    let mut checked = 0;
    let (mut worst_db, mut worst_mfcc) = (0f64, 0f64);
    for clip in reference.index["clips"].as_array().unwrap() {
        let Some(path) = clip_path(clip) else { continue };
        let audio = read_wav_mono(&path).unwrap();
        assert_eq!(audio.samples.len() as u64, clip["samples"].as_u64().unwrap());
        for feature in clip["features"].as_array().unwrap() {
            let extractor = MelExtractor::new(config(audio.sample_rate, &feature["config"])).unwrap();
            let log_mel = extractor.log_mel(&audio.samples, &DbConfig::default()).unwrap();
            let (shape, expected) = reference.array(&feature["log_mel"]);
            assert_eq!([log_mel.rows, log_mel.frames], shape[..], "{path:?}");
            for (got, want) in log_mel.data.iter().zip(expected) {
                let diff = f64::from((got - want).abs());
                assert!(
                    diff < 1e-3,
                    "{path:?} {}: log-mel {got} vs {want} dB",
                    feature["config"]
                );
                worst_db = worst_db.max(diff);
            }
            let mfcc = extractor.mfcc(&audio.samples, 20, &DbConfig::default()).unwrap();
            let (shape, expected) = reference.array(&feature["mfcc"]);
            assert_eq!([mfcc.rows, mfcc.frames], shape[..]);
            // MFCC values are sums of dB values (up to ~±1000): relative 1e-4 of the row scale.
            let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
            for (got, want) in mfcc.data.iter().zip(expected) {
                let diff = f64::from((got - want).abs() / scale);
                assert!(diff < 1e-4, "{path:?} {}: MFCC {got} vs {want}", feature["config"]);
                worst_mfcc = worst_mfcc.max(diff);
            }
            checked += 1;
        }
    }
    assert!(checked >= 9, "the committed tones alone give 9 comparisons");
    eprintln!(
        "{checked} comparisons: worst log-mel difference {worst_db:.2e} dB, worst MFCC {worst_mfcc:.2e} (relative)"
    );
}

/// librosa resamples with soxr (its default `soxr_hq`), a different filter from rubato's:
/// both are near-ideal low-pass filters, so they agree closely away from the clip edges
/// (where each pads differently) and in the pass band. The test bounds the error relative
/// to the signal: an SNR of at least 40 dB over the interior, and every interior sample
/// within 2 % of the clip's peak.
#[test]
fn resampling_is_close_to_librosa_soxr() {
    let reference = Reference::load();
    let mut worst_snr = f64::INFINITY;
    for clip in reference.index["clips"].as_array().unwrap() {
        let Some(path) = clip_path(clip) else { continue };
        let audio = read_wav_mono(&path).unwrap();
        let ours = fusion_audio::resample(&audio.samples, audio.sample_rate, 16000).unwrap();
        let (shape, expected) = reference.array(&clip["resampled_16k"]);
        assert_eq!(ours.len(), shape[0], "{path:?}: length");
        let edge = 64;
        let interior = edge..ours.len() - edge;
        let peak = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (mut signal, mut error) = (0f64, 0f64);
        for i in interior {
            let diff = f64::from(ours[i] - expected[i]);
            assert!(
                diff.abs() <= 0.02 * f64::from(peak),
                "{path:?} sample {i}: {} vs {}",
                ours[i],
                expected[i]
            );
            signal += f64::from(expected[i]).powi(2);
            error += diff * diff;
        }
        let snr = 10.0 * (signal / error.max(1e-30)).log10();
        assert!(snr > 40.0, "{path:?}: SNR {snr:.1} dB");
        worst_snr = worst_snr.min(snr);
    }
    eprintln!("resampling 8 → 16 kHz: worst interior SNR against soxr_hq {worst_snr:.1} dB");
}
