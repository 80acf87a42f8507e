//! A `triggerd run` process under test.

// The std mutexes here guard the child handle and output buffers filled by plain
// threads; no guard is ever held across an `.await`.
#![allow(
    clippy::disallowed_types,
    reason = "std Mutex shared with plain reader threads, never held across .await"
)]

use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::time::Instant;

use crate::{free_port, http_client, triggerd_bin, wait_for_metric, Request, Sink};

/// How long the agent gets to report ready on `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often bounded waits poll.
const POLL: Duration = Duration::from_millis(20);
/// Readiness is polled more often, so start-up time measurements stay fine-grained.
const READY_POLL: Duration = Duration::from_millis(2);
/// How much of the agent's output a failure message shows.
const OUTPUT_TAIL: usize = 16 * 1024;

/// Builds an [`Agent`]: manifests, extra files, secrets, arguments and environment.
#[must_use]
#[derive(Default)]
pub struct AgentBuilder {
    manifests: Vec<String>,
    files: Vec<(PathBuf, String)>,
    secrets: Vec<(String, String, String)>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    binary: Option<PathBuf>,
    kube: bool,
}

impl AgentBuilder {
    /// A manifest file (one or more YAML documents) for `-f`.
    pub fn manifest(mut self, yaml: impl Into<String>) -> Self {
        self.manifests.push(yaml.into());
        self
    }

    /// A file at `path` relative to the agent's working directory (e.g.
    /// `scripts/lib.rhai`, found by the default `--lib` dirs).
    pub fn file(mut self, path: impl Into<PathBuf>, contents: impl Into<String>) -> Self {
        self.files.push((path.into(), contents.into()));
        self
    }

    /// A file-mode secret: written to `<secrets-dir>/NAME/KEY` and passed with
    /// `--secrets-dir` (no trailing newline).
    pub fn secret(mut self, name: &str, key: &str, value: &str) -> Self {
        self.secrets
            .push((name.to_owned(), key.to_owned(), value.to_owned()));
        self
    }

    /// One extra argument after `run -f DIR --ops-addr ADDR`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Extra arguments after `run -f DIR --ops-addr ADDR`.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// An environment variable for the agent (`RUST_LOG` defaults to `info`,
    /// `NO_COLOR` to `1`).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Cluster mode: `run --kube` instead of `run -f DIR` (the manifests are the
    /// namespace's Sensor and EventSource objects; pass `--kubeconfig` and `--namespace`).
    pub fn kube(mut self) -> Self {
        self.kube = true;
        self
    }

    /// Run this binary instead of the debug build (benchmarks use the release build).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Write everything into a fresh temp dir, spawn `triggerd run` there and wait
    /// until `/readyz` answers 200 (polling every 20 ms, at most 30 s).
    pub async fn start(self) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("triggerd-test-")
            .tempdir()
            .expect("create temp dir");
        let manifest_dir = dir.path().join("manifests");
        std::fs::create_dir_all(&manifest_dir).expect("create manifest dir");
        for (index, yaml) in self.manifests.iter().enumerate() {
            write(&manifest_dir.join(format!("{index:02}.yaml")), yaml);
        }
        for (path, contents) in &self.files {
            write(&dir.path().join(path), contents);
        }
        let ops = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut args: Vec<OsString> = vec!["run".into()];
        if self.kube {
            args.push("--kube".into());
        } else {
            args.push("-f".into());
            args.push(manifest_dir.into_os_string());
        }
        args.push("--ops-addr".into());
        args.push(ops.to_string().into());
        if !self.secrets.is_empty() {
            let secrets_dir = dir.path().join("secrets");
            for (name, key, value) in &self.secrets {
                write(&secrets_dir.join(name).join(key), value);
            }
            args.push("--secrets-dir".into());
            args.push(secrets_dir.into_os_string());
        }
        args.extend(self.args);
        let launch = Launch {
            binary: self.binary.unwrap_or_else(|| triggerd_bin().to_path_buf()),
            args,
            env: self.env,
        };
        let spawned = Instant::now();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let child = launch.spawn(dir.path(), &stdout, &stderr);
        let mut agent = Agent {
            pid: AtomicU32::new(child.id()),
            child: Mutex::new(child),
            launch,
            ops,
            dir,
            stdout,
            stderr,
            http: http_client(),
            ready_after: Duration::ZERO,
        };
        agent.wait_ready().await;
        agent.ready_after = spawned.elapsed();
        agent
    }
}

/// How to spawn the process again: everything but the working directory.
struct Launch {
    binary: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Launch {
    /// Spawn `binary args...` in `dir`, appending its output to `stdout` and `stderr`.
    fn spawn(&self, dir: &Path, stdout: &Arc<Mutex<String>>, stderr: &Arc<Mutex<String>>) -> Child {
        let mut child = Command::new(&self.binary)
            .args(&self.args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", self.binary.display()));
        capture(
            child.stdout.take().expect("piped stdout"),
            stdout.clone(),
            "stdout",
        );
        capture(
            child.stderr.take().expect("piped stderr"),
            stderr.clone(),
            "stderr",
        );
        child
    }
}

/// A running `triggerd run -f DIR --ops-addr 127.0.0.1:PORT` with its output captured.
/// Dropping it kills the process. [`Agent::kill`] and [`Agent::restart`] crash it and start
/// it again with the same manifests, arguments and ports; the output of every run goes
/// into the same buffers, separated by a marker line.
pub struct Agent {
    child: Mutex<Child>,
    pid: AtomicU32,
    launch: Launch,
    ops: SocketAddr,
    dir: TempDir,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
    ready_after: Duration,
}

impl Agent {
    /// Time from spawning the process to `/readyz` answering 200 (within a 2 ms poll), for
    /// the first start.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// The agent's current process id (for resource measurements; a restart changes it).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// Start an agent on `manifests` with no extra arguments.
    pub async fn start(manifests: &[&str]) -> Agent {
        manifests
            .iter()
            .fold(Agent::builder(), |builder, yaml| builder.manifest(*yaml))
            .start()
            .await
    }

    /// The agent's working directory (manifests are in `manifests/` below it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The HTTP client this agent's helpers use.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `http://127.0.0.1:{port}{path}`: where a webhook source of this agent listens.
    pub fn webhook_url(&self, port: u16, path: &str) -> String {
        format!("http://127.0.0.1:{port}{path}")
    }

    /// `http://<ops-addr>{path}`.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops)
    }

    /// The status code of `GET <ops-addr>{path}`.
    pub async fn ops_status(&self, path: &str) -> u16 {
        match self.http.get(self.ops_url(path)).send().await {
            Ok(response) => response.status().as_u16(),
            Err(err) => self.fail(format_args!("GET {path}: {err}")),
        }
    }

    /// The body of `GET /metrics` (which must answer 200).
    pub async fn metrics_text(&self) -> String {
        let result = async {
            let response = self.http.get(self.ops_url("/metrics")).send().await?;
            let status = response.status();
            let text = response.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        }
        .await;
        match result {
            Ok((status, text)) if status.is_success() => text,
            Ok((status, text)) => self.fail(format_args!("GET /metrics: {status}\n{text}")),
            Err(err) => self.fail(format_args!("GET /metrics: {err}")),
        }
    }

    /// The current value of a metric (see [`crate::metric`]).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        crate::metric(&self.metrics_text().await, name, labels)
    }

    /// See [`crate::wait_for_metric`].
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
        timeout: Duration,
    ) -> f64 {
        wait_for_metric(self, name, labels, value, timeout).await
    }

    /// POST `body` as JSON to a webhook and return the event id from its 200 reply
    /// `{"id": ...}`; fails the test on anything else.
    pub async fn post_event(&self, url: &str, body: &serde_json::Value) -> String {
        let response = match self.http.post(url).json(body).send().await {
            Ok(response) => response,
            Err(err) => self.fail(format_args!("POST {url}: {err}")),
        };
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::OK {
            self.fail(format_args!(
                "POST {url}: expected 200, got {status}: {text}"
            ));
        }
        let reply: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|err| {
            self.fail(format_args!(
                "POST {url}: reply is not JSON ({err}): {text}"
            ))
        });
        match reply["id"].as_str() {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => self.fail(format_args!("POST {url}: reply has no \"id\": {text}")),
        }
    }

    /// The sink's next request within `timeout`; fails the test (with the agent's
    /// output) when none arrives.
    pub async fn expect_request(&self, sink: &Sink, timeout: Duration) -> Request {
        match sink.next(timeout).await {
            Some(request) => request,
            None => self.fail(format_args!(
                "no request reached {} within {timeout:?}",
                sink.url("")
            )),
        }
    }

    /// Snapshot of everything the agent wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// The last 16 KiB of what the agent wrote to stderr (for failure messages of tests
    /// that run several agents).
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr()).to_owned()
    }

    /// Snapshot of everything the agent wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout buffer").clone()
    }

    /// Poll the agent's stderr (every 20 ms, at most `timeout`) until `found` holds
    /// for it; returns the stderr seen. `what` describes the wait in the failure.
    pub async fn wait_for_stderr(
        &self,
        what: &str,
        timeout: Duration,
        found: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let stderr = self.stderr();
            if found(&stderr) {
                return stderr;
            }
            if Instant::now() >= deadline {
                self.fail(format_args!(
                    "stderr never showed {what} within {timeout:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Send SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Crash the agent: SIGKILL, then reap it, so its sockets are closed (and its
    /// ports free) when this returns. Fails the test if it had already exited.
    pub fn kill(&self) {
        self.check_alive();
        self.signal(Signal::SIGKILL);
        let status = self
            .child
            .lock()
            .expect("child lock")
            .wait()
            .expect("reap killed triggerd process");
        self.stderr
            .lock()
            .expect("stderr buffer")
            .push_str(&format!("=== test harness: SIGKILL ({status}) ===\n"));
    }

    /// Start the agent again after [`Agent::kill`] (or an exit): same binary, manifests,
    /// arguments, working directory and ops port; waits until `/readyz` answers 200
    /// (at most 30 s).
    pub async fn restart(&self) {
        assert!(
            self.try_exit_status().is_some(),
            "restart needs a stopped agent (call kill first)"
        );
        self.stderr
            .lock()
            .expect("stderr buffer")
            .push_str("=== test harness: restart ===\n");
        let child = self
            .launch
            .spawn(self.dir.path(), &self.stdout, &self.stderr);
        self.pid.store(child.id(), Ordering::SeqCst);
        *self.child.lock().expect("child lock") = child;
        self.wait_ready().await;
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pid fits in i32"));
        if let Err(err) = kill(pid, signal) {
            self.fail(format_args!("{signal} to {pid}: {err}"));
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .expect("child lock")
            .try_wait()
            .expect("poll triggerd process")
    }

    /// Wait (polling every 20 ms, at most `timeout`) for the process to exit.
    pub async fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            if Instant::now() >= deadline {
                self.fail(format_args!("agent did not exit within {timeout:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Bounded negative check: fail if the process exits within `within`.
    pub async fn expect_running(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            self.check_alive();
            tokio::time::sleep(POLL).await;
        }
        self.check_alive();
    }

    /// Fail the test if the agent has exited.
    pub fn check_alive(&self) {
        if let Some(status) = self.try_exit_status() {
            self.fail(format_args!("agent exited unexpectedly: {status}"));
        }
    }

    /// Fail the test with `message`, the agent's warnings and errors, and the tail of its
    /// output.
    pub fn fail(&self, message: impl Display) -> ! {
        let stderr = self.stderr();
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .take(40)
            .collect();
        panic!(
            "{message}\n--- triggerd warnings and errors (first 40) ---\n{}\n--- triggerd stderr (tail) ---\n{}\n--- triggerd stdout (tail) ---\n{}\n---",
            warnings.join("\n"),
            tail(&stderr),
            tail(&self.stdout()),
        )
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = self.ops_url("/readyz");
        loop {
            self.check_alive();
            let ready = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|response| response.status() == reqwest::StatusCode::OK);
            if ready {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(format_args!(
                    "{url} did not answer 200 within {READY_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Write `path`, creating its parent directories.
fn write(path: &Path, contents: &str) {
    let parent = path.parent().expect("file has a parent");
    std::fs::create_dir_all(parent)
        .unwrap_or_else(|err| panic!("create {}: {err}", parent.display()));
    std::fs::write(path, contents).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

/// Copy a pipe into `buffer` on its own thread (echoed to the test's stderr when
/// `TRIGGERD_TEST_ECHO` is set).
fn capture(pipe: impl Read + Send + 'static, buffer: Arc<Mutex<String>>, label: &'static str) {
    let echo = std::env::var_os("TRIGGERD_TEST_ECHO").is_some();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            if echo {
                eprint!("[triggerd {label}] {text}");
            }
            buffer.lock().expect("output buffer").push_str(&text);
            line.clear();
        }
    });
}

/// The last [`OUTPUT_TAIL`] bytes of `text`, cut at a char boundary.
fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(OUTPUT_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
