//! The fuzz targets' harness (`fuzz/harness.rs`) over the committed seed corpora (each a
//! valid input: accepted, which also checks that `fuzz/make_seeds.py` writes checksums
//! as this code computes them) and over every input that once made a target fail
//! (`fuzz/regressions/NAME/`: each must now be refused or read, without a panic).
#![allow(clippy::unwrap_used, dead_code, missing_docs)]

#[path = "../../../fuzz/harness.rs"]
mod harness;

use std::path::Path;

fn files(folder: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(folder)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn seeds_are_accepted_and_past_failures_are_handled() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut seeds = 0;
    for (name, target) in harness::TARGETS {
        let corpus = files(&fuzz.join("corpus").join(name));
        assert!(!corpus.is_empty(), "{name} has no seeds");
        for seed in corpus {
            assert!(
                target(&std::fs::read(&seed).unwrap()),
                "{name}: seed {} refused",
                seed.display()
            );
            seeds += 1;
        }
        for input in files(&fuzz.join("regressions").join(name)) {
            target(&std::fs::read(&input).unwrap());
        }
    }
    assert!(seeds >= harness::TARGETS.len());
    // The scratch files live in memory (/dev/shm).
    std::fs::remove_dir_all(harness::scratch()).unwrap();
}
