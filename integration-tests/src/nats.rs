//! A real `nats-server` with JetStream for one test: its own free ports and store directory,
//! killed when dropped. `TRIGGERD_NATS_SERVER` overrides the binary (default: `nats-server`
//! on PATH, which `integration-tests/run` installs when missing).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::time::Instant;

/// How long the server gets to print its client port.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`NatsServer::stop`] waits for a graceful exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `nats-server -js` on 127.0.0.1. It can be stopped and started again on the
/// same port with the same JetStream store ([`NatsServer::stop`], [`NatsServer::restart`]).
pub struct NatsServer {
    /// `None` while stopped.
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
    store: TempDir,
}

impl NatsServer {
    /// Starts a server without authentication.
    pub fn start() -> NatsServer {
        Self::start_with(&[])
    }

    /// Starts a server that requires this token from every client.
    pub fn start_with_token(token: &str) -> NatsServer {
        Self::start_with(&["--auth", token])
    }

    /// Starts a server that only speaks mutual TLS: its certificate for 127.0.0.1 is signed
    /// by `certs`' CA, and every client must present one signed by it too.
    pub fn start_with_tls(certs: &TestCerts) -> NatsServer {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let (cert, key, ca) = (
            path(&certs.server_cert),
            path(&certs.server_key),
            path(&certs.ca),
        );
        Self::start_with(&[
            "--tlsverify",
            "--tlscert",
            &cert,
            "--tlskey",
            &key,
            "--tlscacert",
            &ca,
        ])
    }

    fn start_with(extra: &[&str]) -> NatsServer {
        let store = tempfile::Builder::new()
            .prefix("triggerd-nats-")
            .tempdir()
            .expect("create JetStream store dir");
        let extra: Vec<String> = extra.iter().map(|&arg| arg.to_owned()).collect();
        // `-p -1`: the server picks a free port, read back from its log.
        let (child, port) = spawn("-1", &store, &extra);
        NatsServer {
            child: Some(child),
            port,
            extra,
            store,
        }
    }

    /// Stops the server gracefully (SIGTERM, so JetStream flushes its store; SIGKILL
    /// after 10 s) and waits until it has exited: its port is closed when this returns.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("stop: nats-server is not running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM to nats-server");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().expect("poll nats-server").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                child.wait().expect("reap nats-server");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the server again after [`NatsServer::stop`]: same port, same store
    /// directory (streams, consumers and key-value buckets survive), same options.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart: nats-server is still running"
        );
        let (child, port) = spawn(&self.port.to_string(), &self.store, &self.extra);
        assert_eq!(port, self.port, "nats-server restarted on another port");
        self.child = Some(child);
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A client connected to this server (with `token` when the server requires one).
    pub async fn client(&self, token: Option<&str>) -> async_nats::Client {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(t) = token {
            options = options.token(t.to_owned());
        }
        options
            .connect(self.url())
            .await
            .expect("test client connects to nats-server")
    }

    /// A TLS client that trusts `certs`' CA.
    pub async fn tls_client(&self, certs: &TestCerts) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(certs.ca.clone())
            .add_client_certificate(certs.client_cert.clone(), certs.client_key.clone())
            .connect(self.url())
            .await
            .expect("test client connects to nats-server over TLS")
    }
}

/// A throw-away CA and a server certificate for 127.0.0.1, made with the `openssl` command
/// (P-256 keys, valid for a day).
pub struct TestCerts {
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// Server certificate (PEM) for IP 127.0.0.1 and localhost.
    pub server_cert: PathBuf,
    /// Server key (PEM).
    pub server_key: PathBuf,
    /// Client certificate (PEM, CN `triggerd-client`, for client authentication) signed by
    /// the CA.
    pub client_cert: PathBuf,
    /// Client key (PEM).
    pub client_key: PathBuf,
    _dir: TempDir,
}

impl TestCerts {
    /// Makes the CA and the server certificate in a temp dir.
    pub fn generate() -> TestCerts {
        let dir = tempfile::Builder::new()
            .prefix("triggerd-certs-")
            .tempdir()
            .expect("create cert dir");
        let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        std::fs::write(p("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("write ext");
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &key,
                &[
                    "-keyout",
                    &p("ca.key"),
                    "-out",
                    &p("ca.pem"),
                    "-days",
                    "1",
                    "-subj",
                    "/CN=triggerd test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &key,
                &[
                    "-keyout",
                    &p("server.key"),
                    "-out",
                    &p("server.csr"),
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("server.pem"),
            "-days",
            "1",
            "-extfile",
            &p("ext"),
        ]);
        std::fs::write(p("client-ext"), "extendedKeyUsage=clientAuth\n").expect("write ext");
        openssl(
            &[
                &["req"][..],
                &key,
                &[
                    "-keyout",
                    &p("client.key"),
                    "-out",
                    &p("client.csr"),
                    "-subj",
                    "/CN=triggerd-client",
                ],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p("client.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("client.pem"),
            "-days",
            "1",
            "-extfile",
            &p("client-ext"),
        ]);
        TestCerts {
            ca: dir.path().join("ca.pem"),
            server_cert: dir.path().join("server.pem"),
            server_key: dir.path().join("server.key"),
            client_cert: dir.path().join("client.pem"),
            client_key: dir.path().join("client.key"),
            _dir: dir,
        }
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}); integration-tests/run installs it"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Spawns `nats-server -js` on 127.0.0.1 (client port `port`, `-1` for any free one) with
/// its JetStream store in `store`, and returns it with the client port it reports.
fn spawn(port: &str, store: &TempDir, extra: &[String]) -> (Child, u16) {
    let binary = std::env::var("TRIGGERD_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let mut child = Command::new(&binary)
        .args(["-js", "-a", "127.0.0.1", "-p", port, "-m", "-1", "-sd"])
        .arg(store.path())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {binary}: {e}. Install it with `apt-get install nats-server` \
                 (integration-tests/run does) or set TRIGGERD_NATS_SERVER"
            )
        });
    // The server logs to stderr; the client port is in the "Listening for client
    // connections on 127.0.0.1:PORT" line. Keep draining afterwards so it never blocks.
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut found = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !found {
                if let Some(port) = client_port(&line) {
                    found = true;
                    let _ = tx.send(Ok(port));
                } else if line.contains("[FTL]") || line.contains("[ERR]") {
                    let _ = tx.send(Err(line));
                }
            }
        }
    });
    let port = match rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(port)) => port,
        Ok(Err(line)) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nats-server failed to start: {line}")
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nats-server printed no client port within {START_TIMEOUT:?}")
        }
    };
    (child, port)
}

fn client_port(line: &str) -> Option<u16> {
    let rest = line.split("Listening for client connections on ").nth(1)?;
    rest.trim().rsplit(':').next()?.parse().ok()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::{self, stream};

    use super::{client_port, NatsServer};

    #[test]
    fn reads_the_client_port_from_the_log() {
        assert_eq!(
            client_port("[1] 2026/11/30 23:00:00.000000 [INF] Listening for client connections on 127.0.0.1:40123"),
            Some(40123)
        );
        assert_eq!(client_port("[INF] Starting nats-server"), None);
    }

    #[tokio::test]
    async fn a_restarted_server_keeps_its_port_and_jetstream_data() {
        let mut server = NatsServer::start();
        let port = server.port();
        let js = jetstream::new(server.client(None).await);
        js.create_stream(stream::Config {
            name: "KEPT".into(),
            subjects: vec!["kept.>".into()],
            ..Default::default()
        })
        .await
        .expect("create stream");
        js.publish("kept.one", "1".into())
            .await
            .expect("publish")
            .await
            .expect("stored");

        server.stop().await;
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "a stopped server still accepts connections"
        );
        server.restart();
        assert_eq!(server.port(), port);
        let js = jetstream::new(server.client(None).await);
        let mut kept = js.get_stream("KEPT").await.expect("stream survived");
        let info = kept.info().await.expect("stream info");
        assert_eq!(info.state.messages, 1, "{info:?}");
    }
}
