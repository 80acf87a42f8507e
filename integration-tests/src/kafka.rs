//! A real Kafka-protocol broker (tansu, in-memory storage) for one test: its own free port,
//! killed when dropped, plus the test's own rdkafka producer and reader.
//!
//! `TRIGGERD_TANSU` overrides the binary; otherwise `tansu` on PATH, then `~/.cargo/bin/tansu`
//! (`integration-tests/run` installs it there). A missing binary fails the test with how to
//! install it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tempfile::TempDir;

use crate::net::free_port;

/// How long the broker gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `tansu broker` on 127.0.0.1.
pub struct Tansu {
    child: Child,
    port: u16,
    binary: PathBuf,
    log: TempDir,
    /// librdkafka settings the test's own clients need (TLS, SASL).
    client_settings: Vec<(&'static str, String)>,
    /// Where tansu itself listens (plaintext); `port` is the TLS front's when there is one.
    listen_port: u16,
    _tls: Option<crate::TlsProxy>,
}

/// How a test broker is secured.
#[derive(Clone, Copy, Default)]
pub struct TansuSecurity<'a> {
    /// TLS in front of the broker (a [`crate::TlsProxy`] with a certificate for 127.0.0.1
    /// from these test certificates; tansu advertises the proxy's address).
    pub tls: Option<&'a crate::TestCerts>,
    /// Require SASL authentication (`--authentication`): connections that do not
    /// authenticate are closed. tansu 0.6 offers SCRAM-SHA-256/512 and OAUTHBEARER, and
    /// registers SCRAM users only over an authenticated connection, which its memory
    /// storage cannot bootstrap: such a broker knows no user, and the harness's own clients
    /// cannot use it.
    pub authentication: bool,
}

/// One record as read back from a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Key as text.
    pub key: Option<String>,
    /// Headers as text, in order.
    pub headers: Vec<(String, String)>,
    /// Value as text.
    pub value: String,
}

/// The tansu binary to run, or a panic saying how to get one.
pub fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TRIGGERD_TANSU") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"))
        .find(|p| p.is_file());
    let in_cargo = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cargo/bin/tansu"))
        .filter(|p| p.is_file());
    on_path.or(in_cargo).unwrap_or_else(|| {
        panic!(
            "the Kafka tests need the tansu broker, which is not installed. Install it with \
             `cargo install tansu --locked --features dynostore` (15-20 minutes the first \
             time; integration-tests/run does it) or point TRIGGERD_TANSU at the binary"
        )
    })
}

impl Tansu {
    /// Starts a broker on a free port.
    pub async fn start() -> Tansu {
        Self::start_on(free_port()).await
    }

    /// Starts a broker on `port` (e.g. one a test's agent already points at).
    pub async fn start_on(port: u16) -> Tansu {
        Self::start_secured_on(port, TansuSecurity::default()).await
    }

    /// Starts a broker with TLS and/or required authentication on a free port.
    pub async fn start_secured(security: TansuSecurity<'_>) -> Tansu {
        Self::start_secured_on(free_port(), security).await
    }

    async fn start_secured_on(port: u16, security: TansuSecurity<'_>) -> Tansu {
        // With TLS, clients reach `port` through the proxy and tansu listens on another one.
        let listen_port = if security.tls.is_some() {
            free_port()
        } else {
            port
        };
        let binary = tansu_binary();
        let log = tempfile::Builder::new()
            .prefix("triggerd-tansu-")
            .tempdir()
            .expect("create tansu log dir");
        let out = std::fs::File::create(log.path().join("broker.log")).expect("create log");
        let err = out.try_clone().expect("clone log handle");
        let url = format!("tcp://127.0.0.1:{listen_port}");
        let advertised = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(&binary);
        command
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"]);
        let mut client_settings = Vec::new();
        let tls = match security.tls {
            Some(certs) => {
                client_settings.push(("ssl.ca.location", certs.ca.to_string_lossy().into_owned()));
                Some(crate::TlsProxy::start(certs, port, listen_port).await)
            }
            None => None,
        };
        if security.authentication {
            command.arg("--authentication");
        }
        let protocol = if security.tls.is_some() {
            "ssl"
        } else {
            "plaintext"
        };
        client_settings.push(("security.protocol", protocol.into()));
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut broker = Tansu {
            child,
            port,
            binary,
            log,
            client_settings,
            listen_port,
            _tls: tls,
        };
        broker.wait_accepting().await;
        broker
    }

    /// A client configuration for this broker: bootstrap servers plus its TLS and SASL.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        for (k, v) in &self.client_settings {
            config.set(*k, v);
        }
        config
    }

    async fn wait_accepting(&mut self) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.listen_port))
                .await
                .is_ok()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tansu exited with {status}: {}", self.log_text());
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "tansu did not accept connections on port {} within {START_TIMEOUT:?}: {}",
                    self.port,
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the broker logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path().join("broker.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`, the bootstrap servers.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic (topics are not created automatically).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.binary)
            .args(["topic", "create", name, "--partitions"])
            .arg(partitions.to_string())
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.listen_port)])
            .stdin(Stdio::null())
            .output()
            .expect("run tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a topic through the Kafka admin API with the broker's TLS and SASL settings
    /// (the tansu CLI speaks plaintext only).
    pub async fn create_topic_admin(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("test admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create topic {name}: {e}\n--- broker log ---\n{}",
                    self.log_text()
                )
            });
        for r in results {
            if let Err((topic, code)) = r {
                panic!("create topic {topic}: {code}");
            }
        }
    }

    /// Writes one record and waits for the broker's acknowledgement; returns its offset.
    pub async fn produce(&self, topic: &str, key: &str, value: &str) -> i64 {
        self.produce_to(topic, None, key, value).await
    }

    /// Writes one record to `partition` (or the key's) and waits for the acknowledgement;
    /// returns its offset.
    pub async fn produce_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &str,
        value: &str,
    ) -> i64 {
        let producer: FutureProducer = self
            .client_config()
            .set("message.timeout.ms", "10000")
            .create()
            .expect("test producer");
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(value)
            .headers(OwnedHeaders::new());
        let record = match partition {
            Some(p) => record.partition(p),
            None => record,
        };
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|d| d.offset)
            .unwrap_or_else(|(e, _)| panic!("test produce to {topic}: {e}"))
    }

    /// Commits `offset` (the next record to read) of one partition for `group`, as a member
    /// of that group would.
    pub fn commit(&self, group: &str, topic: &str, partition: i32, offset: i64) {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("test consumer");
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Offset(offset))
            .expect("partition list");
        consumer
            .commit(&list, CommitMode::Sync)
            .unwrap_or_else(|e| panic!("commit {group} {topic}/{partition}@{offset}: {e}"));
    }

    /// Reads the first `count` records of one partition, from the beginning.
    pub async fn read(&self, topic: &str, partition: i32, count: usize) -> Vec<Record> {
        let consumer: StreamConsumer = self
            .client_config()
            .set("group.id", "triggerd-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("test consumer");
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .expect("partition list");
        consumer.assign(&list).expect("assign");
        let mut records = Vec::new();
        let deadline = tokio::time::Instant::now() + crate::net::DELIVERY_TIMEOUT;
        while records.len() < count {
            let m = match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => panic!("reading {topic}: {e}"),
                Err(_) => panic!(
                    "only {} of {count} records on {topic} within the delivery timeout: {records:?}",
                    records.len()
                ),
            };
            let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
            records.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: text(m.key()),
                headers: m
                    .headers()
                    .into_iter()
                    .flat_map(|h| h.iter())
                    .map(|h| (h.key.to_owned(), text(h.value).unwrap_or_default()))
                    .collect(),
                value: text(m.payload()).unwrap_or_default(),
            });
        }
        records
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
