//! The fuzz targets' bodies (`triggerd::testing::fuzz`) over their seed corpus and a fixed-
//! seed set of byte-level mutations of it: the in-suite smoke check of the cargo-fuzz setup
//! in `agent/fuzz`, which needs no libFuzzer. A panic fails with the target and input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use triggerd::testing::fuzz;

/// Mutations per seed file.
const MUTATIONS: usize = 40;

fn files(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && keep(p))
        .collect();
    out.sort();
    out
}

/// The seeds of `target`: `agent/fuzz/seeds/<target>/`, and for `manifest` the examples.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = if target == "manifest" {
        files(&root.join("../manifests/examples"), |p| {
            p.extension().is_some_and(|e| e == "yaml")
        })
    } else {
        files(&root.join("fuzz/seeds").join(target), |_| true)
    };
    assert!(!paths.is_empty(), "no seeds for {target}");
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("read seed"))
        .collect()
}

/// Flips, inserts, deletes, duplicates or truncates bytes, as libFuzzer's simplest mutators.
fn mutate(seed: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..rng.random_range(1..6) {
        let len = data.len();
        match rng.random_range(0..5) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..=len);
                let b = *b"()[]{}|&!.\"\\:\n -#*$1e9"
                    .get(rng.random_range(0..23))
                    .unwrap_or(&b'x');
                data.insert(i, b);
            }
            2 if len > 0 => {
                data.remove(rng.random_range(0..len));
            }
            3 if len > 0 => {
                let from = rng.random_range(0..len);
                let to = rng.random_range(from..len.min(from + 64) + 1);
                let piece = data[from..to].to_vec();
                let at = rng.random_range(0..=data.len());
                data.splice(at..at, piece);
            }
            _ if len > 0 => data.truncate(rng.random_range(0..len)),
            _ => {}
        }
    }
    data
}

#[test]
fn every_fuzz_target_survives_its_seeds_and_their_mutations() {
    let mut rng = StdRng::seed_from_u64(0x7269_6767);
    let mut ran = 0;
    for target in fuzz::TARGETS {
        for seed in seeds(target) {
            let inputs = std::iter::once(seed.clone())
                .chain((0..MUTATIONS).map(|_| mutate(&seed, &mut rng)));
            for input in inputs {
                let outcome = catch_unwind(AssertUnwindSafe(|| fuzz::run(target, &input)));
                match outcome {
                    Ok(true) => ran += 1,
                    Ok(false) => panic!("no fuzz target {target}"),
                    Err(_) => panic!(
                        "fuzz target {target} panicked on:\n{}",
                        String::from_utf8_lossy(&input)
                    ),
                }
            }
        }
    }
    assert!(ran > 1000, "only {ran} inputs ran");
}
