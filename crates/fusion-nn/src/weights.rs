//! Weights files: safetensors with a CRC-32 entry, checked when read.

use std::{collections::HashMap, fs, path::Path};

use tch::{Device, Tensor};

use crate::{Error, Result};

/// Key of the checksum entry in the safetensors files fusion writes.
pub const CHECKSUM_KEY: &str = "__checksum__.crc32";

/// CRC-32 of every entry's name, dtype, shape and bytes, in name order (the checksum entry
/// itself left out): what fusion's safetensors files carry.
pub fn checksum(named: &[(String, Tensor)]) -> Result<i64> {
    let mut sorted: Vec<&(String, Tensor)> = named.iter().filter(|(n, _)| n != CHECKSUM_KEY).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = crc32fast::Hasher::new();
    for (name, tensor) in sorted {
        let values = tensor.to_device(Device::Cpu).contiguous();
        let mut bytes = vec![0u8; values.numel() * values.kind().elt_size_in_bytes()];
        values.f_copy_data_u8(&mut bytes, values.numel())?;
        hasher.update(name.as_bytes());
        hasher.update(format!("{:?}{:?}", values.kind(), values.size()).as_bytes());
        hasher.update(&bytes);
    }
    Ok(i64::from(hasher.finalize()))
}

/// Reads a safetensors file; when it carries a checksum entry (every file fusion
/// writes), a mismatch is an [`Error::Damaged`] naming the file, never garbage weights.
/// The entry itself is not returned. Files without one (converted pretrained weights,
/// checkpoints of older versions) are read as they are.
pub fn read_checked_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let damaged = |reason: String| Error::Damaged {
        path: path.into(),
        reason,
    };
    let metadata = fs::metadata(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(damaged("not a regular file".into()));
    }
    let mut saved: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(|e| damaged(e.to_string()))?
        .into_iter()
        .collect();
    if let Some(stored) = saved.remove(CHECKSUM_KEY) {
        let stored = i64::try_from(&stored).map_err(|e| damaged(format!("checksum entry: {e}")))?;
        let named: Vec<(String, Tensor)> = saved.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        let actual = checksum(&named)?;
        if stored != actual {
            return Err(damaged(format!(
                "damaged: checksum {actual:08x} does not match the stored {stored:08x}"
            )));
        }
    }
    Ok(saved)
}
