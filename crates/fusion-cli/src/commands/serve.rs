//! `fusion serve`: a run or ensemble folder behind HTTP (fusion-serve).

use std::{io::Write, net::SocketAddr, path::Path, path::PathBuf};

use anyhow::{Context, Result, bail};
use fusion_run::{Predictor, Searcher};
use tch::Device;

use crate::ui::Ui;

/// What `fusion serve` was asked for.
pub struct Options {
    pub addr: SocketAddr,
    pub batch: fusion_serve::BatchOptions,
    pub bodies: fusion_serve::Bodies,
    pub token_file: Option<PathBuf>,
    pub files: Option<PathBuf>,
    pub scratch: Option<PathBuf>,
    /// An index of the run's (`fusion embed`) for `POST /v1/search`, and the size above
    /// which its modalities are searched through HNSW graphs.
    pub index: Option<(PathBuf, Option<usize>)>,
}

/// The k at which a served index's HNSW graphs have their recall measured.
const SEARCH_RECALL_K: usize = 10;

/// Reads a bearer token: the file's one line, not empty.
fn read_token(path: &Path) -> Result<String> {
    let text = fusion_data::read_bounded(path, 4096)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = String::from_utf8(text)
        .with_context(|| format!("{}: the token is not UTF-8 text", path.display()))?
        .trim()
        .to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("{}: a token is one word of printable characters", path.display());
    }
    Ok(token)
}

/// Serves `folder` until SIGTERM or Ctrl-C.
pub fn serve(folder: &Path, options: Options, ui: Ui, device: Device) -> Result<()> {
    let token = options.token_file.as_deref().map(read_token).transpose()?;
    let files = options
        .files
        .map(|f| f.canonicalize().with_context(|| format!("--files {}", f.display())))
        .transpose()?;
    if !options.addr.ip().is_loopback() && token.is_none() {
        ui.warn(format!(
            "warning: listening on {} without --token-file: anyone who reaches it can use the model",
            options.addr
        ));
    }
    let predictor = Predictor::load(folder, device)?;
    let search = match &options.index {
        Some((path, approximate_above)) => {
            let mut searcher = Searcher::open(&predictor, path)?;
            if let Some(above) = approximate_above {
                for graph in searcher.approximate_above(*above, None, SEARCH_RECALL_K)? {
                    ui.say(graph.to_string());
                }
            }
            Some(fusion_serve::SearchIndex::new(searcher))
        }
        None => None,
    };
    let serve_options = fusion_serve::ServeOptions {
        addr: options.addr,
        batch: options.batch,
        access: fusion_serve::Access {
            token,
            files,
            scratch: options.scratch,
        },
        bodies: options.bodies,
        search,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(fusion_serve::serve(predictor, serve_options, |addr| {
        ui.say(format!("serving {} at http://{addr}/", folder.display()));
        if ui.json {
            crate::ui::print_line(
                &mut std::io::stdout().lock(),
                &serde_json::json!({"listening": addr.to_string()}),
            );
        }
        let _ = std::io::stdout().flush();
    }))?;
    Ok(())
}
