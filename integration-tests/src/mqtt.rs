//! A real Mosquitto broker for one test: its own free port, config and persistence directory
//! (sessions and queued messages survive a broker restart), killed when dropped. Plus a small
//! MQTT 5 client to publish and subscribe from tests. `TRIGGERD_MOSQUITTO` overrides the
//! binary (default `/usr/sbin/mosquitto`, which `integration-tests/run` installs when missing).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::free_port;

/// How long the broker gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Mosquitto::stop`] waits for a graceful exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `mosquitto` on 127.0.0.1 with persistence on.
pub struct Mosquitto {
    /// `None` while stopped.
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Mosquitto {
    /// A broker that lets anyone in.
    pub async fn start() -> Mosquitto {
        Self::start_with(None).await
    }

    /// A broker that only lets `user` in with `password`.
    pub async fn start_with_password(user: &str, password: &str) -> Mosquitto {
        Self::start_with(Some((user, password))).await
    }

    async fn start_with(login: Option<(&str, &str)>) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("triggerd-mosquitto-")
            .tempdir()
            .expect("create mosquitto dir");
        let port = free_port();
        let mut config = format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nlog_dest file {}\nlog_type all\nmax_queued_messages 10000\n",
            dir.path().display(),
            dir.path().join("mosquitto.log").display(),
        );
        if nix::unistd::geteuid().is_root() {
            // As root, mosquitto would switch to the `mosquitto` user, who cannot write here.
            config.push_str("user root\n");
        }
        match login {
            None => config.push_str("allow_anonymous true\n"),
            Some((user, password)) => {
                let file = dir.path().join("passwords");
                let status = Command::new(passwd_binary())
                    .arg("-b")
                    .arg("-c")
                    .arg(&file)
                    .arg(user)
                    .arg(password)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("run mosquitto_passwd");
                assert!(status.success(), "mosquitto_passwd failed");
                config.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
        }
        std::fs::write(dir.path().join("mosquitto.conf"), config).expect("write config");
        let mut broker = Mosquitto {
            child: None,
            port,
            dir,
        };
        broker.spawn().await;
        broker
    }

    async fn spawn(&mut self) {
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (install the mosquitto package)");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("mosquitto exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {} within {START_TIMEOUT:?}: {}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the broker gracefully (SIGTERM, so it writes its persistence file; SIGKILL
    /// after 10 s) and waits until it has exited.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("stop: mosquitto is not running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM to mosquitto");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().expect("poll mosquitto").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                child.wait().expect("reap mosquitto");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the broker again after [`Mosquitto::stop`]: same port, config and sessions.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: mosquitto is still running");
        self.spawn().await;
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn options(&self, client_id: &str, login: Option<(&str, &str)>) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", self.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(Some(4 * 1024 * 1024));
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        options
    }

    /// Publishes each payload on `topic` with `qos` from a fresh client and waits until the
    /// broker acknowledged every one (QoS 1 and 2) or all were written (QoS 0).
    pub async fn publish(
        &self,
        login: Option<(&str, &str)>,
        topic: &str,
        qos: QoS,
        payloads: &[Vec<u8>],
    ) {
        let id = format!("test-pub-{}", rand::random::<u32>());
        let (client, mut eventloop) = AsyncClient::new(self.options(&id, login), 64);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut sent = 0;
        let mut confirmed = 0;
        let mut written = 0;
        while confirmed < payloads.len() {
            if sent < payloads.len()
                && client
                    .try_publish(topic, qos, false, payloads[sent].clone())
                    .is_ok()
            {
                sent += 1;
            }
            let event = tokio::time::timeout_at(deadline, eventloop.poll())
                .await
                .unwrap_or_else(|_| {
                    panic!("publishing to {topic}: no progress; log:\n{}", self.log())
                })
                .unwrap_or_else(|e| panic!("publishing to {topic}: {e}"));
            match (event, qos) {
                (Event::Outgoing(rumqttc::Outgoing::Publish(_)), QoS::AtMostOnce) => {
                    written += 1;
                    confirmed = written;
                }
                (Event::Incoming(Packet::PubAck(_)), QoS::AtLeastOnce)
                | (Event::Incoming(Packet::PubComp(_)), QoS::ExactlyOnce) => confirmed += 1,
                _ => {}
            }
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    }

    /// Subscribes to `filter` with QoS 1 and returns once the broker acknowledged it.
    pub async fn subscribe(&self, filter: &str) -> Subscriber {
        let id = format!("test-sub-{}", rand::random::<u32>());
        let (client, mut eventloop) = AsyncClient::new(self.options(&id, None), 64);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let event = tokio::time::timeout_at(deadline, eventloop.poll())
                .await
                .expect("subscription acknowledged in time")
                .expect("subscriber connects");
            if let Event::Incoming(Packet::SubAck(_)) = event {
                break;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        if tx.send((topic, p.payload.to_vec(), p.retain)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Subscriber {
            _client: client,
            rx,
            task,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A test subscription: messages as `(topic, payload, retain)`.
pub struct Subscriber {
    _client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// The next message within `timeout`, if one comes.
    pub async fn next(&mut self, timeout: Duration) -> Option<(String, Vec<u8>, bool)> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn binary() -> PathBuf {
    std::env::var_os("TRIGGERD_MOSQUITTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto"))
}

fn passwd_binary() -> PathBuf {
    let beside = binary()
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("bin/mosquitto_passwd"));
    match beside {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("mosquitto_passwd"),
    }
}
