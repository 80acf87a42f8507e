//! Mutated manifests never crash validation: a fixed-seed mutation run over the bundled
//! examples (lines dropped, duplicated, swapped, re-indented, truncated, values replaced by
//! hostile ones), each loaded and compiled exactly as `triggerd validate` does. Any panic
//! fails the test with the mutant that caused it. This is the in-suite smoke check; it
//! needs no nightly toolchain, so it runs on every CI run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use triggerd::manifest::load_text;
use triggerd::plan::build_plan;
use triggerd::script::{Limits, ScriptHost};

/// Mutants per run: enough to cover every operator on every example many times, few
/// enough to take seconds. `TRIGGERD_MUTANTS` and `TRIGGERD_MUTATION_SEED` run more, or
/// others (see the README).
const MUTANTS: usize = 1000;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Values a hostile author might put anywhere.
const HOSTILE: &[&str] = &[
    "99999999999999999999h",
    "8760000000h",
    "1e300",
    "-1",
    "NaN",
    "0",
    "\"\"",
    "null",
    "[]",
    "{}",
    "/:id",
    "/x/{a}",
    "/x/*rest",
    "\"((((((((((((((((((((((((((((((((((((a\"",
    "\"a && a && a && a && a || (a\"",
    "\"sleep(15); true\"",
    "18446744073709551616",
    "\"\\u0000\"",
    "&anchor x",
    "*anchor",
    "!!binary AAAA",
    "\"${{}}\"",
];

fn examples() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .expect("manifests/examples")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".yaml") && !name.ends_with(".test.yaml")
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read example");
            (p, text)
        })
        .collect();
    out.sort();
    out
}

fn mutate(text: &str, rng: &mut StdRng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..rng.random_range(1..4) {
        if lines.is_empty() {
            break;
        }
        let i = rng.random_range(0..lines.len());
        match rng.random_range(0..7) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let line = lines[i].clone();
                lines.insert(i, line);
            }
            2 => {
                let j = rng.random_range(0..lines.len());
                lines.swap(i, j);
            }
            3 => {
                let line = &mut lines[i];
                if rng.random_bool(0.5) {
                    line.insert_str(0, "  ");
                } else if let Some(rest) = line.strip_prefix("  ") {
                    *line = rest.to_owned();
                }
            }
            4 => lines.truncate(i),
            _ => {
                // Replace the value after the first `: ` (or the list item) with a hostile one.
                let hostile = HOSTILE[rng.random_range(0..HOSTILE.len())];
                let line = &mut lines[i];
                if let Some(at) = line.find(": ") {
                    line.truncate(at + 2);
                    line.push_str(hostile);
                } else if let Some(at) = line.find("- ") {
                    line.truncate(at + 2);
                    line.push_str(hostile);
                }
            }
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn validation_survives_mutated_manifests() {
    let examples = examples();
    assert!(!examples.is_empty(), "no examples found");
    let lib = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")];
    let host = ScriptHost::new(Limits::default(), lib.clone());
    let mutants = setting("TRIGGERD_MUTANTS", MUTANTS as u64) as usize;
    let mut rng = StdRng::seed_from_u64(setting("TRIGGERD_MUTATION_SEED", 16));
    let mut crashes = Vec::new();
    let mut valid = 0;
    for n in 0..mutants {
        let (path, text) = &examples[n % examples.len()];
        let mutant = mutate(text, &mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let (mut docs, mut errors) = (Vec::new(), Vec::new());
            load_text(path, &mutant, &mut docs, &mut errors);
            errors.is_empty() && build_plan(&docs, &host, &lib).is_ok()
        }));
        match outcome {
            Ok(true) => valid += 1,
            Ok(false) => {}
            Err(_) => crashes.push(format!("mutant {n} of {}:\n{mutant}", path.display())),
        }
    }
    assert!(
        crashes.is_empty(),
        "{} of {mutants} mutants crashed validation; the first:\n{}",
        crashes.len(),
        crashes[0]
    );
    // The run means something only if mutants reach compilation, not just the YAML parser.
    assert!(
        valid > 0,
        "no mutant validated: the mutations are too coarse"
    );
    eprintln!("{mutants} mutants, {valid} validated, none crashed");
}
