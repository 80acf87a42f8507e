//! A real RabbitMQ node for one test: its own node name, free AMQP and distribution ports,
//! config, Erlang cookie (`HOME`) and mnesia directory, so durable queues and persistent
//! messages survive [`RabbitMq::restart`]. The machine's own broker (5672) is never touched.
//! The node runs in its own process group, killed when dropped. Plus small AMQP helpers
//! (publish with confirms, bind a queue, receive, count) for tests.
//!
//! `TRIGGERD_RABBITMQ_SERVER` overrides the start script (default
//! `/usr/lib/rabbitmq/bin/rabbitmq-server`). A node takes roughly 8–15 s to boot, so start
//! one per test only where a test really needs a broker.
//!
//! Distribution: nodes register with the machine's `epmd` on its default port (4369), which
//! is shared and keyed by node name, so parallel tests do not conflict. When no `epmd` runs,
//! the first node starts one (`epmd -daemon`); it detaches, outlives the test and is reused
//! by later nodes, as with any Erlang program.

use std::fs::File;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::time::Instant;

use crate::free_port;

/// How long a node gets to accept AMQP connections (it needs ~8–15 s on 2 busy cores).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`RabbitMq::stop`] waits for a graceful exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on each helper's AMQP round trips, so a wedged broker fails the test.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often start-up, stop and [`RabbitMq::receive`] poll.
const POLL: Duration = Duration::from_millis(50);

/// A private RabbitMQ node listening on 127.0.0.1.
pub struct RabbitMq {
    /// The start script (the process group leader); `None` while stopped.
    child: Option<Child>,
    port: u16,
    dist_port: u16,
    node: String,
    user: String,
    password: String,
    dir: TempDir,
}

impl RabbitMq {
    /// A node with the default `guest`/`guest` login (allowed from 127.0.0.1).
    pub async fn start() -> RabbitMq {
        Self::start_with(None).await
    }

    /// A node whose only user is `user` with `password` (full rights on vhost `/`; there is
    /// no `guest`). Keep both URL-safe: [`RabbitMq::url`] embeds them as given.
    pub async fn start_with_user(user: &str, password: &str) -> RabbitMq {
        Self::start_with(Some((user, password))).await
    }

    async fn start_with(login: Option<(&str, &str)>) -> RabbitMq {
        let dir = tempfile::Builder::new()
            .prefix("triggerd-rabbitmq-")
            .tempdir()
            .expect("create rabbitmq dir");
        let port = free_port();
        let dist_port = free_port();
        let node = format!("triggerd-{port}-{:08x}@localhost", rand::random::<u32>());
        let (user, password) = login.unwrap_or(("guest", "guest"));
        let mut config =
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n");
        if login.is_some() {
            config.push_str(&format!(
                "default_user = {user}\ndefault_pass = {password}\n"
            ));
        }
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text)
                .unwrap_or_else(|e| panic!("write rabbitmq {name}: {e}"));
        };
        write("rabbit.conf", &config);
        write("enabled_plugins", "[].\n");
        // Replaces /etc/rabbitmq/rabbitmq-env.conf, which names the machine's node.
        write("rabbitmq-env.conf", "");
        let mut node = RabbitMq {
            child: None,
            port,
            dist_port,
            node,
            user: user.to_owned(),
            password: password.to_owned(),
            dir,
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let dir = self.dir.path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open rabbitmq log");
        let child = Command::new(binary())
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_LOGS", "-")
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            // Without the extension: RabbitMQ appends `.conf`.
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbit"))
            .env("RABBITMQ_CONFIG_FILES", dir.join("conf.d"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            // Only matters when this node has to start epmd itself.
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env_remove("ERL_EPMD_PORT")
            .env_remove("ERL_FLAGS")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone rabbitmq log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {} (install rabbitmq-server or set TRIGGERD_RABBITMQ_SERVER): {e}",
                    binary().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let attempt = tokio::time::timeout(Duration::from_secs(5), self.try_connect()).await;
            if let Ok(Ok(connection)) = attempt {
                let _ = connection.close(200, "OK".into()).await;
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "rabbitmq node {} exited with {status}:\n{}",
                    self.node,
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                let error = match attempt {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connect timed out".to_owned(),
                };
                panic!(
                    "rabbitmq node {} did not accept AMQP on {} within {START_TIMEOUT:?} \
                     (last error: {error}):\n{}",
                    self.node,
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the node gracefully (SIGTERM to its process group, so it flushes queues and
    /// messages to disk; SIGKILL after 15 s) and waits until every process is gone.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("stop: rabbitmq is not running");
        let group = pid_of(&child);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().expect("poll rabbitmq").is_none() || group_alive(group) {
            if Instant::now() >= deadline {
                let _ = killpg(group, Signal::SIGKILL);
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        while group_alive(group) {
            assert!(
                Instant::now() < deadline + STOP_TIMEOUT,
                "rabbitmq node {} survived SIGKILL",
                self.node
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts the node again after [`RabbitMq::stop`]: same node name, port, users and
    /// mnesia directory, so durable queues and persistent messages are still there.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: rabbitmq is still running");
        self.spawn().await;
    }

    /// `amqp://USER:PASSWORD@127.0.0.1:PORT/%2f` (vhost `/`).
    pub fn url(&self) -> String {
        format!(
            "amqp://{}:{}@127.0.0.1:{}/%2f",
            self.user, self.password, self.port
        )
    }

    /// The AMQP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's output so far (all starts), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    async fn try_connect(&self) -> lapin::Result<Connection> {
        Connection::connect(&self.url(), ConnectionProperties::default()).await
    }

    /// A fresh AMQP connection to the node with its login.
    pub async fn connect(&self) -> Connection {
        match tokio::time::timeout(CLIENT_TIMEOUT, self.try_connect()).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => panic!("connect to {}: {e}\n{}", self.url(), self.log()),
            Err(_) => panic!("connect to {}: timed out\n{}", self.url(), self.log()),
        }
    }

    /// A fresh connection and a channel on it (drop both, or close the connection, after).
    async fn channel(&self) -> (Connection, Channel) {
        let connection = self.connect().await;
        let channel = bounded("create channel", connection.create_channel()).await;
        (connection, channel)
    }

    /// Publishes `body` to `exchange` with `routing_key` and waits for the broker's
    /// publisher confirm (panics on a nack). Declares `exchange` first as a durable exchange
    /// of `exchange_type` (`direct`, `fanout`, `topic`, `headers`), unless it is `""` (the
    /// default exchange). For a message that survives a restart pass
    /// `BasicProperties::default().with_delivery_mode(2)`.
    pub async fn publish(
        &self,
        exchange: &str,
        exchange_type: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) {
        let (connection, channel) = self.channel().await;
        declare_exchange(&channel, exchange, exchange_type).await;
        bounded(
            "confirm.select",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await;
        let confirm = bounded(
            "basic.publish",
            channel.basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            ),
        )
        .await;
        match bounded("publisher confirm", confirm).await {
            Confirmation::Ack(_) => {}
            other => panic!("publish to {exchange:?}/{routing_key:?}: broker said {other:?}"),
        }
        let _ = connection.close(200, "OK".into()).await;
    }

    /// Declares the durable exchange (as in [`RabbitMq::publish`]) and the durable queue
    /// `queue`, and binds the queue to the exchange with `routing_key`.
    pub async fn declare_queue_bound(
        &self,
        exchange: &str,
        exchange_type: &str,
        queue: &str,
        routing_key: &str,
    ) {
        let (connection, channel) = self.channel().await;
        declare_exchange(&channel, exchange, exchange_type).await;
        bounded(
            "queue.declare",
            channel.queue_declare(
                queue.into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            ),
        )
        .await;
        bounded(
            "queue.bind",
            channel.queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        let _ = connection.close(200, "OK".into()).await;
    }

    /// The next message in `queue` within `timeout` (polled with `basic.get`), acked; `None`
    /// if none came. The queue must exist.
    pub async fn receive(&self, queue: &str, timeout: Duration) -> Option<Delivery> {
        let (connection, channel) = self.channel().await;
        let deadline = Instant::now() + timeout;
        let delivery = loop {
            let got = bounded(
                "basic.get",
                channel.basic_get(queue.into(), BasicGetOptions::default()),
            )
            .await;
            if let Some(message) = got {
                bounded(
                    "basic.ack",
                    message.delivery.acker.ack(BasicAckOptions::default()),
                )
                .await;
                break Some(message.delivery);
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(POLL).await;
        };
        let _ = connection.close(200, "OK".into()).await;
        delivery
    }

    /// A consumer on `queue` (which must exist) that acks each message it hands out.
    pub async fn consume(&self, queue: &str) -> Consumer {
        let (connection, channel) = self.channel().await;
        let consumer = bounded(
            "basic.consume",
            channel.basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        Consumer {
            _connection: connection,
            _channel: channel,
            consumer,
        }
    }

    /// How many ready messages `queue` holds (a passive `queue.declare`; panics if the queue
    /// does not exist). Unacked deliveries to a consumer are not counted.
    pub async fn queue_message_count(&self, queue: &str) -> u32 {
        let (connection, channel) = self.channel().await;
        let declared = bounded(
            "passive queue.declare",
            channel.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await;
        let _ = connection.close(200, "OK".into()).await;
        declared.message_count()
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = pid_of(&child);
        // Kill the VM first so the start script reaps it (else it lingers as init's zombie),
        // then whatever is left of the group.
        for pid in group_members(group) {
            if pid != group {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        for _ in 0..200 {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            #[allow(
                clippy::disallowed_methods,
                reason = "Drop cannot await; a bounded wait for the script to reap the VM"
            )]
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
    }
}

/// A test consumer (`basic.consume`) on one queue; messages are acked as they are handed
/// out.
pub struct Consumer {
    _connection: Connection,
    _channel: Channel,
    consumer: lapin::Consumer,
}

impl Consumer {
    /// The next message within `timeout`, acked; `None` if none came.
    pub async fn next(&mut self, timeout: Duration) -> Option<Delivery> {
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .expect("consumer delivery");
        bounded("basic.ack", delivery.acker.ack(BasicAckOptions::default())).await;
        Some(delivery)
    }
}

/// Declares `exchange` durable with `exchange_type`; nothing for the default exchange.
async fn declare_exchange(channel: &Channel, exchange: &str, exchange_type: &str) {
    if exchange.is_empty() {
        return;
    }
    let kind = match exchange_type {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_owned()),
    };
    bounded(
        "exchange.declare",
        channel.exchange_declare(
            exchange.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
}

/// Awaits one AMQP operation within [`CLIENT_TIMEOUT`], panicking with `what` on error.
async fn bounded<T>(what: &str, operation: impl Future<Output = lapin::Result<T>>) -> T {
    match tokio::time::timeout(CLIENT_TIMEOUT, operation).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!("amqp {what}: {e}"),
        Err(_) => panic!("amqp {what}: no answer within {CLIENT_TIMEOUT:?}"),
    }
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"))
}

/// The live (not zombie) processes in process group `group`, from `/proc`.
fn group_members(group: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat =
                std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))
                    .ok()?;
            // `pid (comm) state ppid pgrp ...`; comm may contain spaces and parentheses.
            let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
            let state = fields.next()?;
            let pgrp: i32 = fields.nth(1)?.parse().ok()?;
            (pgrp == group.as_raw() && state != "Z" && state != "X").then(|| Pid::from_raw(pid))
        })
        .collect()
}

fn group_alive(group: Pid) -> bool {
    !group_members(group).is_empty()
}

fn binary() -> PathBuf {
    std::env::var_os("TRIGGERD_RABBITMQ_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server"))
}
