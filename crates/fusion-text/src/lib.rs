//! # fusion-text
//!
//! Turns text into model inputs with any HuggingFace `tokenizer.json`: token ids, an
//! attention mask and type ids, padded to the longest sequence of the batch.
//! Needs no libtorch.
//!
//! ```no_run
//! use fusion_text::TextTokenizer;
//!
//! let tokenizer = TextTokenizer::from_file("all-MiniLM-L6-v2/tokenizer.json", 256)?;
//! let batch = tokenizer.encode_batch(&["a cat", "a dog on a mat"])?;
//! assert_eq!(batch.ids.len(), batch.batch_size * batch.seq_len);
//! # Ok::<(), fusion_text::Error>(())
//! ```

mod error;
mod tokenize;

pub use error::{Error, Result};
pub use tokenize::{TextTokenizer, TokenBatch};
