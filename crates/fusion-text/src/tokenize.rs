use std::path::Path;

use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::{Error, Result};

/// A HuggingFace tokenizer set up for dynamic batches: truncation at `max_len` and padding
/// to the longest sequence in each batch (not to a fixed length stored in the file).
/// Large batches are encoded in parallel.
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("max_len", &self.max_len)
            .finish()
    }
}

/// Reads a UTF-8 text file; invalid UTF-8 is an error naming the file, not a lossy read.
pub fn read_text(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::Text {
        path: path.into(),
        reason: e.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|e| Error::Text {
        path: path.into(),
        reason: format!("not UTF-8 (invalid byte at offset {})", e.utf8_error().valid_up_to()),
    })
}

/// Token ids, attention mask and type ids of a batch, row-major `[batch_size, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Number of texts.
    pub batch_size: usize,
    /// Length of every row after padding.
    pub seq_len: usize,
    /// Token ids.
    pub ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Segment (token type) ids.
    pub type_ids: Vec<i64>,
}

impl TextTokenizer {
    /// Loads a `tokenizer.json`, truncating to `max_len` tokens.
    pub fn from_file(path: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let path = path.as_ref();
        let fail = |reason: String| Error::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        if max_len == 0 {
            return Err(Error::InvalidSetting("max_len must be at least 1".into()));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| fail(e.to_string()))?;
        // tokenizers subtracts the special tokens from the limit unchecked (and panics).
        let special = inner
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
        if max_len <= special {
            return Err(Error::InvalidSetting(format!(
                "max_len {max_len} leaves no room beside the {special} special tokens of {}",
                path.display()
            )));
        }
        let pad_id = inner.get_padding().map_or(0, |p| p.pad_id);
        let pad_token = inner
            .get_padding()
            .map_or_else(|| "[PAD]".to_string(), |p| p.pad_token.clone());
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..PaddingParams::default()
        }));
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..TruncationParams::default()
            }))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self { inner, max_len })
    }

    /// Number of ids the tokenizer can produce (added tokens included).
    pub fn vocabulary_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Longest encoding in tokens (special tokens included).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Encodes the contents of UTF-8 text files, like [`TextTokenizer::encode_batch`].
    pub fn encode_files<P: AsRef<Path>>(&self, paths: &[P]) -> Result<TokenBatch> {
        let texts = paths.iter().map(read_text).collect::<Result<Vec<_>>>()?;
        self.encode_batch(&texts)
    }

    /// Encodes texts (with special tokens), padded to the longest one of the batch.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<TokenBatch> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::Encode(e.to_string()))?;
        let seq_len = encodings.first().map_or(0, |e| e.len());
        let widen = |values: &[u32]| values.iter().map(|&v| i64::from(v)).collect::<Vec<_>>();
        let mut batch = TokenBatch {
            batch_size: encodings.len(),
            seq_len,
            ids: Vec::with_capacity(encodings.len() * seq_len),
            attention_mask: Vec::with_capacity(encodings.len() * seq_len),
            type_ids: Vec::with_capacity(encodings.len() * seq_len),
        };
        for encoding in &encodings {
            batch.ids.extend(widen(encoding.get_ids()));
            batch.attention_mask.extend(widen(encoding.get_attention_mask()));
            batch.type_ids.extend(widen(encoding.get_type_ids()));
        }
        Ok(batch)
    }
}

#[cfg(feature = "torch")]
impl TokenBatch {
    /// `(ids, attention_mask, type_ids)` as int64 tensors `[batch_size, seq_len]`.
    pub fn to_tensors(&self, device: tch::Device) -> (tch::Tensor, tch::Tensor, tch::Tensor) {
        let shape = [self.batch_size as i64, self.seq_len as i64];
        let tensor = |values: &[i64]| tch::Tensor::from_slice(values).view(shape).to_device(device);
        (tensor(&self.ids), tensor(&self.attention_mask), tensor(&self.type_ids))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A word-level tokenizer with a fixed vocabulary, in tokenizer.json form.
    fn word_level_tokenizer() -> tempfile::NamedTempFile {
        let json = r#"{
          "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
          "normalizer": {"type": "Lowercase"},
          "pre_tokenizer": {"type": "Whitespace"},
          "post_processor": null, "decoder": null,
          "model": {"type": "WordLevel", "unk_token": "[UNK]",
                    "vocab": {"[PAD]": 0, "[UNK]": 1, "a": 2, "cat": 3, "sat": 4, "on": 5, "mat": 6}}
        }"#;
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(json.as_bytes()).expect("write tokenizer");
        file
    }

    #[test]
    fn pads_to_longest_in_batch_and_truncates() -> Result<()> {
        let file = word_level_tokenizer();
        let tokenizer = TextTokenizer::from_file(file.path(), 4)?;
        let batch = tokenizer.encode_batch(&["A cat", "a cat sat on a mat", "dog"])?;
        assert_eq!((batch.batch_size, batch.seq_len), (3, 4));
        assert_eq!(batch.ids, [2, 3, 0, 0, 2, 3, 4, 5, 1, 0, 0, 0]);
        assert_eq!(batch.attention_mask, [1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0]);
        assert_eq!(batch.type_ids, [0; 12]);
        Ok(())
    }

    #[test]
    fn missing_or_malformed_tokenizer_names_the_file() {
        let missing = Path::new("/nonexistent/tokenizer.json");
        let err = TextTokenizer::from_file(missing, 8).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("/nonexistent/tokenizer.json")));

        let mut bad = tempfile::NamedTempFile::new().expect("temp file");
        bad.write_all(b"{ not json").expect("write");
        let err = TextTokenizer::from_file(bad.path(), 8);
        assert!(matches!(err, Err(Error::Tokenizer { path, .. }) if path == bad.path()));
    }
}
