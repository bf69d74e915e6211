//! `ensemble.json`: the file that makes a folder an ensemble of trained runs (greedy
//! selection of weights over the members' validation predictions), and its checks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Run};

/// The file that makes a folder an ensemble.
pub const ENSEMBLE_FILE: &str = "ensemble.json";

/// Largest `ensemble.json` read, in bytes.
const MAX_ENSEMBLE_BYTES: u64 = 16 << 20;

/// One member of an ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The member's run folder (absolute).
    pub run: PathBuf,
    /// Its weight in the average of probabilities.
    pub weight: f64,
    /// Its own log loss on the selection records.
    pub loss: f64,
}

/// `ensemble.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleFile {
    /// Members and weights (weights sum to 1; a member never picked has weight 0).
    pub members: Vec<Member>,
    /// The classes, shared by every member, in the probabilities' order.
    pub classes: Vec<String>,
    /// Split the weights were selected on.
    pub selected_on: String,
    /// Records of that split every member could predict.
    pub records: usize,
    /// Selection rounds.
    pub rounds: usize,
    /// The ensemble's log loss on those records after each round.
    pub losses: Vec<f64>,
}

/// Whether `folder` holds an ensemble rather than a trained run.
pub fn is_ensemble(folder: &Path) -> bool {
    folder.join(ENSEMBLE_FILE).is_file()
}

impl EnsembleFile {
    /// Parses and checks an `ensemble.json` (`path` names it): at least one member, weights
    /// finite, non-negative and summing to 1, losses finite and non-negative, classes
    /// present and distinct.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Config(format!("{}: {reason}", path.display()));
        let file: Self = serde_json::from_slice(bytes).map_err(|e| bad(format!("damaged: {e}")))?;
        if file.members.is_empty() {
            return Err(bad("no member".into()));
        }
        let weights: Vec<f64> = file.members.iter().map(|m| m.weight).collect();
        let total: f64 = weights.iter().sum();
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || !(total > 0.0 && (total - 1.0).abs() < 1e-6) {
            return Err(bad(format!(
                "member weights {weights:?} must be finite, non-negative and sum to 1"
            )));
        }
        let losses = file.members.iter().map(|m| m.loss).chain(file.losses.iter().copied());
        if let Some(loss) = losses.into_iter().find(|l| !(l.is_finite() && *l >= 0.0)) {
            return Err(bad(format!("log loss {loss} is not a finite non-negative number")));
        }
        crate::run::check_classes(&file.classes).map_err(bad)?;
        Ok(file)
    }

    /// Reads `folder`'s `ensemble.json` and checks it against its members: each member's
    /// classes are the file's, in its order (an edited file otherwise blends
    /// probabilities of other classes into nonsense that still exits 0).
    pub fn read(folder: &Path) -> Result<Self> {
        let path = folder.join(ENSEMBLE_FILE);
        let bytes = fusion_data::read_bounded(&path, MAX_ENSEMBLE_BYTES).map_err(|reason| Error::Io {
            path: path.clone(),
            source: std::io::Error::other(reason),
        })?;
        let file = Self::parse(&bytes, &path)?;
        for member in &file.members {
            let classes = Run::new(&member.run).classes()?;
            if classes != file.classes {
                return Err(Error::Config(format!(
                    "{}: the classes {:?} are not those of member {} ({classes:?}); rebuild the ensemble with `fusion ensemble`",
                    path.display(),
                    file.classes,
                    member.run.display()
                )));
            }
        }
        Ok(file)
    }
}

/// The runs of `folders` as members of an ensemble to be written in `out`, checked:
/// distinct, trained classification runs with one class list, none of them `out`, and no
/// trained run in `out` (an ensemble file there would turn it into an ensemble).
pub(crate) fn check_members(folders: &[PathBuf], out: &Path) -> Result<Vec<Run>> {
    let absolute = |folder: &Path| {
        std::path::absolute(folder).map_err(|source| Error::Io {
            path: folder.to_path_buf(),
            source,
        })
    };
    if folders.is_empty() {
        return Err(Error::Config("an ensemble needs at least one run".into()));
    }
    let mut runs: Vec<Run> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut classes: Option<Vec<String>> = None;
    for folder in folders {
        let root = absolute(folder)?;
        if !seen.insert(root.clone()) {
            return Err(Error::Config(format!("{} is listed twice", folder.display())));
        }
        if is_ensemble(&root) {
            return Err(Error::Config(format!(
                "{} is an ensemble; list its members instead",
                folder.display()
            )));
        }
        let run = Run::new(&root);
        let task = run.config()?.task;
        if task != fusion_core::Task::Classification {
            // Greedy selection minimises the log loss of class probabilities.
            return Err(Error::Config(format!(
                "{} is a {} run: ensembles combine classification runs",
                folder.display(),
                task.name()
            )));
        }
        let own = run.classes()?;
        match &classes {
            None => classes = Some(own),
            Some(first) if *first != own => {
                return Err(Error::Config(format!(
                    "{} has the classes {own:?}, {} has {first:?}: members must share their classes",
                    folder.display(),
                    runs[0].root().display()
                )));
            }
            Some(_) => {}
        }
        runs.push(run);
    }
    let target = absolute(out)?;
    if runs.iter().any(|r| r.root() == target) || target.join("run.json").exists() {
        return Err(Error::Config(format!(
            "{} holds a trained run: give the ensemble a folder of its own",
            out.display()
        )));
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> EnsembleFile {
        EnsembleFile {
            members: vec![
                Member {
                    run: "/runs/a".into(),
                    weight: 0.75,
                    loss: 0.4,
                },
                Member {
                    run: "/runs/b".into(),
                    weight: 0.25,
                    loss: 0.5,
                },
            ],
            classes: vec!["cat".into(), "dog".into()],
            selected_on: "val".into(),
            records: 10,
            rounds: 4,
            losses: vec![0.4, 0.38],
        }
    }

    #[test]
    fn edited_ensemble_files_are_refused_naming_the_reason() {
        let path = Path::new("/e/ensemble.json");
        let parse = |f: &EnsembleFile| {
            let bytes = serde_json::to_vec(f).unwrap_or_default();
            EnsembleFile::parse(&bytes, path).map_err(|e| e.to_string())
        };
        assert_eq!(parse(&file()), Ok(file()));
        type Edit = fn(&mut EnsembleFile);
        let edits: [(&str, Edit); 6] = [
            ("sum to 1", |f| f.members[0].weight = 0.5),
            ("non-negative", |f| {
                f.members[0].weight = 1.25;
                f.members[1].weight = -0.25;
            }),
            ("no member", |f| f.members.clear()),
            ("log loss -1", |f| f.losses[0] = -1.0),
            ("`cat` twice", |f| f.classes[1] = "cat".into()),
            ("no class", |f| f.classes.clear()),
        ];
        for (reason, edit) in edits {
            let mut edited = file();
            edit(&mut edited);
            let error = parse(&edited).err().unwrap_or_default();
            assert!(
                error.contains(reason) && error.contains("ensemble.json"),
                "{reason}: {error}"
            );
        }
        let error = EnsembleFile::parse(b"{\"members\": []", path)
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("damaged")));
    }
}
