//! Running one-shot `triggerd` commands (`validate`, ...).

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::triggerd_bin;

/// What a finished `triggerd` command printed and returned.
#[derive(Debug)]
pub struct CliOutput {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `triggerd ARGS...` in `cwd` and wait for it to finish, at most `timeout`
/// (then it is killed and the test fails).
pub fn run_cli<S: AsRef<OsStr>>(args: &[S], cwd: &Path, timeout: Duration) -> CliOutput {
    let mut child = Command::new(triggerd_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn triggerd");
    // Drain both pipes on their own threads so a chatty child never blocks.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = match exited.recv_timeout(timeout) {
        Ok(status) => Some(status.expect("wait for triggerd")),
        Err(_) => {
            // The waiting thread reaps it after the kill.
            let _ = kill(pid, Signal::SIGKILL);
            None
        }
    };
    let output = CliOutput {
        code: status.and_then(|status| status.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "triggerd {:?} did not finish within {timeout:?}\n{output}",
        args.iter().map(AsRef::as_ref).collect::<Vec<_>>()
    );
    output
}

/// Runs `triggerd run` on one `manifest` (plus `extra` arguments) in a fresh temp dir,
/// expecting start-up to fail with exit code 1; returns what it printed.
pub fn run_failing_to_start(manifest: &str, extra: &[&str]) -> CliOutput {
    let dir = tempfile::tempdir().expect("create temp dir");
    std::fs::write(dir.path().join("manifest.yaml"), manifest).expect("write manifest");
    let ops = format!("127.0.0.1:{}", crate::free_port());
    let mut args = vec!["run", "-f", "manifest.yaml", "--ops-addr", ops.as_str()];
    args.extend_from_slice(extra);
    let out = run_cli(&args, dir.path(), Duration::from_secs(60));
    assert_eq!(out.code, Some(1), "{out}");
    out
}
