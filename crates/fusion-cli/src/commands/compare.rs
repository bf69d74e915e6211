//! `fusion compare`: every fusion method of a configuration and each modality alone.

use std::path::Path;

use anyhow::Result;
use fusion_run::{CompareConfig, CompareRow, Loaded, Run, score_name};
use tch::Device;

use super::{capitalised, plot_confusion, plot_path, plot_training};
use crate::{
    plots, report,
    ui::{Shown, Ui},
};

/// `fusion compare` (see [`fusion_run::compare`]): every row's curves, confusion and
/// report, then one table, one plot and the comparison's report.
/// Returns the rows and the data loaded for them.
pub fn compare(config_path: &Path, out: &Path, ui: Ui, device: Device) -> Result<(Vec<CompareRow>, Loaded)> {
    let config = CompareConfig::load(config_path)?;
    let shown = Shown::new(Ui { epochs: false, ..ui });
    let compared = fusion_run::compare(&config, out, device, &shown)?;
    for (run, fitted) in &compared.runs {
        plot_training(run, &fitted.summary, &run.config()?)?;
        if let Some(eval) = &fitted.eval {
            plot_confusion(run, eval)?;
        }
        report::write(run)?;
    }
    let rows = compared.rows;
    let compare = Run::new(out);
    let split = rows.first().map_or("test", |r| r.split.as_str());
    let score = score_name(compared.config.task);
    plots::bars(
        &plot_path(&compare, "compare")?,
        &format!("{} on {split} by row", capitalised(score)),
        score,
        &rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.accuracy).collect::<Vec<_>>(),
    )?;
    let table = report::compare_table(&rows, compared.config.task);
    report::write_compare(&compare, &compared.config, &rows, &compared.loaded)?;
    ui.say(format!("\n{table}"));
    ui.say(format!("report: {}", compare.file("report.md").display()));
    ui.result(&rows)?;
    Ok((rows, compared.loaded))
}
