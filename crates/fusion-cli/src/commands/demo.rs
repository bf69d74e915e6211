//! `fusion demo`: the main job on the built-in dataset.

use std::path::Path;

use anyhow::Result;
use fusion_data::Split;

use crate::ui::{Shown, Ui};

/// The main job: compare fusion methods on the built-in dataset, then explain and stress
/// the best fused model.
pub fn demo(data: &Path, out: &Path, ui: Ui, device: tch::Device) -> Result<()> {
    let config = data.join("config.json");
    if !config.exists() {
        anyhow::bail!(
            "{} not found: pass --data with the demo dataset folder (fixtures/demo in the repository)",
            config.display()
        );
    }
    let started = std::time::Instant::now();
    // In JSON mode the steps stay silent and one combined value is printed at the end.
    let step = if ui.json {
        Ui {
            quiet: true,
            json: false,
            ..ui
        }
    } else {
        ui
    };
    let (rows, loaded) = super::compare::compare(&config, out, step, device)?;
    let fused = rows
        .iter()
        .filter(|r| !r.name.ends_with(" only"))
        .filter_map(|r| Some((r, r.run.as_ref()?)))
        .max_by(|a, b| a.0.accuracy.total_cmp(&b.0.accuracy));
    if let Some((best, best_run)) = fused {
        step.say(format!(
            "\nbest fusion method: {} ({:.4}); explaining it",
            best.name, best.accuracy
        ));
        // The best run reads the same features as the comparison: no second extraction.
        let run = fusion_run::Run::new(best_run);
        let data = run.split_of(&loaded, Split::Test, device, &Shown::new(step))?;
        super::explain::explain_on(&run, &data, Split::Test, step, device)?;
        super::explain::robustness_on(&run, &data, Split::Test, true, step, device)?;
        step.say(format!("its report: {}", best_run.join("report.md").display()));
    }
    let seconds = started.elapsed().as_secs_f64();
    step.say(format!("demo finished in {seconds:.0} s"));
    let read = |name: &str| -> Option<serde_json::Value> {
        let path = fused?.1.join(name);
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    };
    ui.result(&serde_json::json!({
        "compare": rows,
        "best": fused.map(|(r, _)| &r.name),
        "explain": read("explain.json"),
        "robustness": read("robustness.json"),
        "report": out.join("report.md"),
        "seconds": seconds,
    }))
}
