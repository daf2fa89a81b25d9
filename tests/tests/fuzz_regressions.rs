//! Replays every fuzz target's seeds (`fuzz/seeds/TARGET/`) and every input fuzzing ever found
//! (`fuzz/regressions/TARGET/`, minimised crashes, hangs and memory blow-ups) through the same
//! bodies the fuzzer runs (`harmaug_tests::fuzz`), on stable Rust: a fixed crash stays fixed.

use std::path::Path;

use harmaug_tests::fuzz::TARGETS;

/// The files under `fuzz/<kind>/<target>/`, sorted (none when the folder does not exist).
fn inputs(kind: &str, target: &str) -> Vec<std::path::PathBuf> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_target_has_seeds_and_survives_them() {
    for (target, body) in TARGETS {
        let seeds = inputs("seeds", target);
        assert!(
            !seeds.is_empty(),
            "fuzz/seeds/{target} is empty: run python3 fuzz/make_seeds.py"
        );
        for seed in seeds {
            eprintln!("{target}: {}", seed.display());
            body(&std::fs::read(&seed).unwrap());
        }
    }
}

#[test]
fn inputs_fuzzing_found_stay_fixed() {
    for (target, body) in TARGETS {
        for input in inputs("regressions", target) {
            eprintln!("{target}: {}", input.display());
            body(&std::fs::read(&input).unwrap());
        }
    }
}
