//! # fusion-text
//!
//! Turns text into model inputs with any HuggingFace `tokenizer.json`: token ids, an
//! attention mask and type ids, padded to the longest sequence of the batch (no libtorch
//! needed). With the `torch` feature: a BERT-family encoder loading HuggingFace
//! `config.json` + `model.safetensors` (all-MiniLM-L6-v2 reproduces sentence-transformers),
//! with mean, CLS or max pooling, usable frozen or fine-tuned inside a fusion-core model,
//! or trained from scratch.
//!
//! ```no_run
//! use fusion_text::TextTokenizer;
//!
//! let tokenizer = TextTokenizer::from_file("all-MiniLM-L6-v2/tokenizer.json", 256)?;
//! let batch = tokenizer.encode_batch(&["a cat", "a dog on a mat"])?;
//! assert_eq!(batch.ids.len(), batch.batch_size * batch.seq_len);
//! # Ok::<(), fusion_text::Error>(())
//! ```
//!
//! With `--features torch`:
//!
//! ```no_run
//! # #[cfg(feature = "torch")] {
//! use fusion_text::SentenceEncoder;
//!
//! let model = SentenceEncoder::from_dir("all-MiniLM-L6-v2".as_ref(), tch::Device::Cpu)?;
//! let embeddings = model.encode(&["a cat", "a dog on a mat"], 32)?;
//! assert_eq!(embeddings.size(), [2, 384]);
//! # }
//! # Ok::<(), fusion_text::Error>(())
//! ```

#[cfg(feature = "torch")]
mod bert;
mod error;
#[cfg(feature = "torch")]
mod sentence;
mod tokenize;

#[cfg(feature = "torch")]
pub use bert::{Bert, BertConfig, HiddenAct};
pub use error::{Error, Result};
#[cfg(feature = "torch")]
pub use sentence::{Pooling, SentenceEncoder, TextEncoder};
pub use tokenize::{TextTokenizer, TokenBatch, read_text};
