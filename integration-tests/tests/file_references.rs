//! A manifest's file references (`scriptFile`, a Kubernetes trigger's `source.file.path`)
//! reach only the manifest's directory tree and the library directories. A reference to a
//! secret or to `/proc/self/environ` is refused without reading it, so its contents never
//! appear in an error.

use std::path::Path;
use std::time::Duration;

use integration_tests::{run_cli, CliOutput};

const TIMEOUT: Duration = Duration::from_secs(60);
const SECRET: &str = "tok3n-do-not-print";

/// A sensor whose dependency filter is `scriptFile: {file}`.
fn sensor_with_script_file(file: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: hooks
spec:
  webhook:
    push:
      port: "12000"
      endpoint: /push
---
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: s
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
      eventName: push
      filters:
        scriptFile: {file:?}
  triggers:
    - template:
        name: t
        log: {{}}
"#
    )
}

/// A layout with `manifests/`, `lib/` and, beside them, `secrets/` holding a token (also
/// under a `.rhai` name, as a careless or hostile author might arrange).
fn layout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["manifests/sub", "lib", "secrets"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
    }
    std::fs::write(dir.path().join("secrets/token"), SECRET).expect("write");
    std::fs::write(dir.path().join("secrets/token.rhai"), SECRET).expect("write");
    std::fs::write(dir.path().join("manifests/sub/ok.rhai"), "true").expect("write");
    std::fs::write(dir.path().join("lib/shared.rhai"), "true").expect("write");
    dir
}

fn validate(dir: &Path, manifest: &str) -> CliOutput {
    let path = dir.join("manifests/sensor.yaml");
    std::fs::write(&path, manifest).expect("write manifest");
    let lib = dir.join("lib");
    run_cli(
        &[
            "validate".as_ref(),
            "-f".as_ref(),
            path.as_os_str(),
            "--lib".as_ref(),
            lib.as_os_str(),
        ],
        dir,
        TIMEOUT,
    )
}

#[test]
fn script_files_inside_the_tree_and_the_library_load() {
    let dir = layout();
    for file in ["sub/ok.rhai", "shared.rhai"] {
        let out = validate(dir.path(), &sensor_with_script_file(file));
        assert_eq!(out.code, Some(0), "{file}\n{out}");
    }
}

#[test]
fn script_files_outside_are_refused_without_echoing_them() {
    let dir = layout();
    let absolute = dir.path().join("secrets/token.rhai").display().to_string();
    let cases = [
        ("../secrets/token.rhai", "is outside"),
        ("sub/../../secrets/token.rhai", "is outside"),
        (absolute.as_str(), "is outside"),
        ("../secrets/token", "is not a Rhai script file"),
        ("/proc/self/environ", "is not a Rhai script file"),
    ];
    for (file, why) in cases {
        let out = validate(dir.path(), &sensor_with_script_file(file));
        assert_eq!(out.code, Some(1), "{file} must be refused\n{out}");
        assert!(
            out.stderr
                .contains("spec.dependencies[0].filters.scriptFile")
                && out.stderr.contains(why),
            "{file}: expected the field and {why:?}\n{out}"
        );
        assert!(
            !out.stderr.contains(SECRET) && !out.stdout.contains(SECRET),
            "{file}: the secret was printed\n{out}"
        );
        let environ_value = std::env::var("PATH").unwrap_or_default();
        assert!(
            environ_value.is_empty() || !out.stderr.contains(&environ_value),
            "{file}: an environment variable was printed\n{out}"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_link_out_of_the_tree_is_refused() {
    let dir = layout();
    std::os::unix::fs::symlink(
        dir.path().join("secrets/token.rhai"),
        dir.path().join("manifests/innocent.rhai"),
    )
    .expect("symlink");
    let out = validate(dir.path(), &sensor_with_script_file("innocent.rhai"));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("is outside"), "{out}");
    assert!(!out.stderr.contains(SECRET), "{out}");
}

#[test]
fn a_trigger_resource_file_outside_is_refused() {
    let dir = layout();
    std::fs::write(
        dir.path().join("secrets/cm.yaml"),
        format!("kind: {SECRET}\n"),
    )
    .expect("write");
    let manifest = sensor_with_script_file("sub/ok.rhai").replace(
        "        log: {}\n",
        "        k8s:\n          operation: create\n          source:\n            file:\n              path: ../secrets/cm.yaml\n",
    );
    let out = validate(dir.path(), &manifest);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .contains("spec.triggers[0].template.k8s.source.file.path")
            && out.stderr.contains("is outside"),
        "{out}"
    );
    assert!(!out.stderr.contains(SECRET), "{out}");
}
