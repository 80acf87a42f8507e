//! Argo Events' own example manifests (`../shared/argo-examples`, or `ARGO_EXAMPLES_DIR`):
//! every file either loads cleanly with `triggerd validate`, or is rejected with errors that
//! name what is not supported. Anything else — a panic, a generic parse error, a timeout —
//! fails the sweep.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::{run_cli, workspace_root};

fn examples_dir() -> PathBuf {
    std::env::var_os("ARGO_EXAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root()
                .join("..")
                .join("shared")
                .join("argo-examples")
        })
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Error lines of `validate` (hints and the closing count left out).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            !l.starts_with("  hint:")
                && !l.ends_with("error(s)")
                && !l.starts_with("warning:")
                && !l.is_empty()
        })
        .collect()
}

/// Argo examples that are not valid as they stand, and the error that says so.
const KNOWN_INVALID: [(&str, &str); 1] = [(
    // A tutorial template whose parameter is a placeholder the reader fills in.
    "tutorials/02-parameterization/sensor-05.yaml",
    "unknown dependency \"THIS_WILL_BE_REPLACED\"",
)];

/// Argo examples that read files from a volume mounted into Argo's sensor pod: triggerd reads
/// files only inside the manifest's directory and the library directories, so the volume is
/// named with `--lib`, as a user moving over would.
const MOUNTED_VOLUMES: [(&str, &str); 1] = [("sensors/trigger-source-file.yaml", "/workflows")];

#[test]
fn every_argo_example_loads_or_names_what_is_unsupported() {
    let dir = examples_dir();
    if !dir.is_dir() && std::env::var_os("CI").is_none() {
        eprintln!(
            "skipped: Argo's example manifests are not at {} (they live in ../shared beside the \
             repository; set ARGO_EXAMPLES_DIR, or CI=true to make their absence fail)",
            dir.display()
        );
        return;
    }
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    assert!(
        files.len() > 50,
        "expected Argo's examples in {}",
        dir.display()
    );
    let (mut loaded, mut rejected, mut unexpected) = (Vec::new(), Vec::new(), Vec::new());
    for file in &files {
        let name = file
            .strip_prefix(&dir)
            .unwrap_or(file)
            .display()
            .to_string();
        let mut args = vec![Path::new("validate"), Path::new("-f"), file.as_path()];
        if let Some((_, volume)) = MOUNTED_VOLUMES.iter().find(|(f, _)| name == *f) {
            args.extend([Path::new("--lib"), Path::new(volume)]);
        }
        let out = run_cli(&args, &dir, Duration::from_secs(30));
        match out.code {
            Some(0) => loaded.push(name),
            Some(1)
                if KNOWN_INVALID
                    .iter()
                    .any(|(f, why)| name == *f && out.stderr.contains(why)) =>
            {
                rejected.push(name);
            }
            Some(1) => {
                let errors = error_lines(&out.stderr);
                let named =
                    !errors.is_empty() && errors.iter().all(|l| l.contains("is not supported"));
                if named {
                    rejected.push(name);
                } else {
                    unexpected.push(format!("{name}: {}", errors.join(" | ")));
                }
            }
            other => unexpected.push(format!("{name}: exit {other:?}: {}", out.stderr)),
        }
    }
    println!(
        "argo examples: {} loaded, {} rejected with reason, {} unexpected",
        loaded.len(),
        rejected.len(),
        unexpected.len()
    );
    for l in &loaded {
        println!("  loaded {l}");
    }
    assert!(
        unexpected.is_empty(),
        "unexpected outcomes:\n{}",
        unexpected.join("\n")
    );
    // The supported kinds among Argo's examples must load.
    for must in [
        "event-sources/webhook.yaml",
        "event-sources/calendar.yaml",
        "event-sources/kafka.yaml",
        "event-sources/mqtt.yaml",
        "event-sources/amqp.yaml",
        "event-sources/aws-sqs.yaml",
        "sensors/mqtt-sensor.yaml",
        "sensors/http-trigger.yaml",
        "sensors/log.yaml",
        "sensors/aws-lambda-trigger.yaml",
        "tutorials/10-aws-lambda-trigger/sensor.yaml",
        "event-sources/resource.yaml",
        "sensors/special-workflow-trigger-shortened.yaml",
        "sensors/trigger-standard-k8s-resource.yaml",
        "sensors/trigger-source-configmap.yaml",
        "tutorials/03-trigger-sources/sensor-cm.yaml",
    ] {
        assert!(
            loaded.iter().any(|l| l == must),
            "{must} should load; loaded: {loaded:?}"
        );
    }
}
