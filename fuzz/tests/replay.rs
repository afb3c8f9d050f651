//! Every seed and every input that once crashed a target, through that target; then random
//! inputs through all of them (the fuzzer proper runs in `scripts/fuzz.sh`).

use std::path::{Path, PathBuf};

use proptest::prelude::*;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("dir entry").path()).collect(),
        Err(_) => Vec::new(),
    };
    v.retain(|p| p.is_file());
    v.sort();
    v
}

#[test]
fn every_seed_and_every_past_crash_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in halyard_fuzz::TARGETS {
        let seeds = files(&root.join("corpus").join(name));
        assert!(!seeds.is_empty(), "target {name} has no seed corpus");
        for f in seeds
            .iter()
            .chain(&files(&root.join("regressions").join(name)))
        {
            let data = std::fs::read(f).expect("read input");
            let run = std::panic::catch_unwind(|| target(&data));
            assert!(run.is_ok(), "target {name} fails on {}", f.display());
        }
    }
}

#[test]
fn no_stray_corpus_directories() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["corpus", "regressions"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("directory") {
            let name = entry.expect("entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                halyard_fuzz::target(&name).is_some(),
                "{dir}/{name} is no target's"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn random_inputs(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        for (_, target) in halyard_fuzz::TARGETS {
            target(&data);
        }
    }
}
