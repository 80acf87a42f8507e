//! MQTT connections, shared by the `mqtt` event source and the `mqtt` trigger: broker URL
//! and topic checks for `validate`, credentials and TLS material read from the secret store,
//! and the client options both build on (MQTT 5, so the broker honours our maximum packet
//! size and receive maximum).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{ConnectionError, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use thiserror::Error;

use crate::broker_tls::{BrokerTlsError, ClientTlsPem};
use crate::manifest::{BasicAuth, ClientTls};
use crate::secret::{FieldSecretError, SecretStore};

/// The largest MQTT packet the agent accepts: the broker drops larger messages for this
/// client instead of sending them (MQTT 5 Maximum Packet Size), so a hostile publisher
/// cannot make the agent buffer more than this per message.
pub const MAX_PACKET_SIZE: u32 = 1024 * 1024 + 64 * 1024;

/// How many QoS 1 and 2 messages the broker may have in flight towards the agent, unacknowledged
/// (MQTT 5 Receive Maximum): bounds what waits for the bus.
pub const RECEIVE_MAXIMUM: u16 = 64;

/// A broker address taken from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the scheme asks for TLS (`ssl://`, `mqtts://`, `tls://`).
    pub tls: bool,
}

/// Parses a broker URL; the error says what is wrong with it (never its password).
pub fn parse_url(url: &str) -> Result<Endpoint, String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("url needs a scheme: tcp://, mqtt://, ssl:// or mqtts://".into());
    };
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "tcp" | "mqtt" => false,
        "ssl" | "mqtts" | "tls" => true,
        "ws" | "wss" => {
            return Err(format!(
                "{scheme}:// (MQTT over WebSocket) is not supported; use tcp:// or ssl://"
            ))
        }
        other => {
            return Err(format!(
                "unknown scheme {other:?}: use tcp://, mqtt://, ssl:// or mqtts://"
            ))
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("credentials in the url are not supported; use auth".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid port {p:?}"))?;
            (h, port)
        }
        _ => (authority, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("url has no host".into());
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
        tls,
    })
}

/// Why a subscription's topic filter is invalid (MQTT 5 section 4.7), if it is.
pub fn topic_filter_problem(filter: &str) -> Option<String> {
    if filter.is_empty() {
        return Some("topic is empty".into());
    }
    if filter.len() > 65_535 {
        return Some("topic is longer than 65535 bytes".into());
    }
    if filter.contains('\0') {
        return Some("topic contains a NUL character".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Some(format!(
                "topic {filter:?}: `#` must be a whole level and the last one (e.g. a/b/#)"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Some(format!(
                "topic {filter:?}: `+` must be a whole level (e.g. a/+/c)"
            ));
        }
    }
    None
}

/// Why a topic cannot be published to, if it cannot: no wildcards, not empty.
pub fn topic_name_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("topic is empty".into());
    }
    if topic.contains(['+', '#']) {
        return Some(format!(
            "topic {topic:?} cannot contain the wildcards + or # when publishing"
        ));
    }
    if topic.contains('\0') || topic.len() > 65_535 {
        return Some(format!("topic {topic:?} is not a valid MQTT topic"));
    }
    None
}

/// The QoS a manifest's `qos` names (default 1), or why it names none.
pub fn qos(given: Option<i64>) -> Result<QoS, String> {
    match given.unwrap_or(1) {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        other => Err(format!("qos {other} is not one of 0, 1, 2")),
    }
}

/// The QoS as its number.
pub fn qos_number(qos: QoS) -> u8 {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// Why a client id cannot be used, if it cannot.
pub fn client_id_problem(id: &str) -> Option<&'static str> {
    if id.trim().is_empty() {
        Some("clientId is empty")
    } else if id.len() > 65_535 || id.contains('\0') {
        Some("clientId is not a valid MQTT client identifier")
    } else {
        None
    }
}

/// Why no MQTT connection could be set up or made.
#[derive(Debug, Error)]
pub enum MqttConnectError {
    /// A credential or certificate could not be read. Retryable when the store is.
    #[error(transparent)]
    Secret(#[from] FieldSecretError),
    /// A certificate or key is unusable (never shows its contents). Not retryable.
    #[error(transparent)]
    Tls(#[from] BrokerTlsError),
    /// The broker refused the credentials. Not retryable: the secret must change.
    #[error("auth: the broker at {url} refused the user name and password ({code:?})")]
    Refused {
        /// Broker URL (masked).
        url: String,
        /// The broker's reason code.
        code: ConnectReturnCode,
    },
    /// The broker could not be reached or failed the connection. Retryable.
    #[error("cannot connect to {url} after {attempts} attempt(s): {message}")]
    Connect {
        /// Broker URL (masked).
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        message: String,
    },
}

impl MqttConnectError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            MqttConnectError::Secret(e) => e.is_retryable(),
            MqttConnectError::Tls(_) | MqttConnectError::Refused { .. } => false,
            MqttConnectError::Connect { .. } => true,
        }
    }

    /// Classifies a failed connection attempt.
    pub fn from_connection(url: &str, attempts: u32, e: &ConnectionError) -> Self {
        match e {
            ConnectionError::ConnectionRefused(
                code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
            ) => MqttConnectError::Refused {
                url: url.to_owned(),
                code: *code,
            },
            other => MqttConnectError::Connect {
                url: url.to_owned(),
                attempts,
                message: other.to_string(),
            },
        }
    }
}

/// Connection settings checked at load time; secrets are read when a client is built.
#[derive(Debug, Clone)]
pub struct MqttConnection {
    /// The URL as given, with any password masked, for logs and errors.
    pub url: String,
    /// Where the broker is.
    pub endpoint: Endpoint,
    /// Client identifier.
    pub client_id: String,
    /// User name and password references.
    pub auth: Option<BasicAuth>,
    /// TLS material references; TLS is used when given or when the scheme asks for it.
    pub tls: Option<ClientTls>,
}

impl MqttConnection {
    /// Client options with credentials and TLS read from `secrets`; `session` is `None` for a
    /// clean session, else how long the broker keeps the session after a disconnection.
    pub async fn options(
        &self,
        secrets: &SecretStore,
        session: Option<u32>,
    ) -> Result<MqttOptions, MqttConnectError> {
        let mut options = MqttOptions::new(
            self.client_id.clone(),
            self.endpoint.host.clone(),
            self.endpoint.port,
        );
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(session.is_none())
            .set_session_expiry_interval(session)
            .set_max_packet_size(Some(MAX_PACKET_SIZE))
            .set_receive_maximum(Some(RECEIVE_MAXIMUM))
            .set_connection_timeout(5);
        if let Some(auth) = &self.auth {
            let user = secrets.secret_of("auth.username", &auth.username).await?;
            let password = secrets.secret_of("auth.password", &auth.password).await?;
            options.set_credentials(user, password);
        }
        if self.tls.is_some() || self.endpoint.tls {
            let config = self.tls_config(secrets).await?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )));
        }
        Ok(options)
    }

    async fn tls_config(
        &self,
        secrets: &SecretStore,
    ) -> Result<rustls::ClientConfig, MqttConnectError> {
        let pem = match &self.tls {
            Some(tls) => ClientTlsPem::read(secrets, tls).await?,
            None => ClientTlsPem::default(),
        };
        Ok(pem.rustls_config()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_tls() {
        assert_eq!(
            parse_url("tcp://mqtt.argo-events:1883"),
            Ok(Endpoint {
                host: "mqtt.argo-events".into(),
                port: 1883,
                tls: false
            })
        );
        assert_eq!(
            parse_url("ssl://broker").map(|e| (e.port, e.tls)),
            Ok((8883, true))
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1884").map(|e| e.host),
            Ok("::1".into())
        );
        for bad in [
            "broker:1883",
            "http://broker",
            "ws://broker:9001",
            "tcp://:1883",
            "tcp://broker:0",
            "tcp://broker:99999",
            "tcp://user:pw@broker",
        ] {
            let e = parse_url(bad).expect_err(bad);
            assert!(!e.contains("pw"), "{e}");
        }
    }

    #[test]
    fn topic_filters_follow_the_mqtt_rules() {
        for ok in [
            "a",
            "a/b",
            "a/+/c",
            "#",
            "a/#",
            "+",
            "+/+",
            "/a",
            "sport/tennis/+",
        ] {
            assert_eq!(topic_filter_problem(ok), None, "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b#", "a+/b", "a/+b", "##"] {
            assert!(topic_filter_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(topic_name_problem("a/b"), None);
        for bad in ["", "a/+", "a/#"] {
            assert!(topic_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn qos_is_0_1_or_2_with_1_by_default() {
        assert_eq!(qos(None), Ok(QoS::AtLeastOnce));
        assert_eq!(qos(Some(0)), Ok(QoS::AtMostOnce));
        assert_eq!(qos(Some(2)), Ok(QoS::ExactlyOnce));
        assert!(qos(Some(3)).is_err());
        assert!(qos(Some(-1)).is_err());
    }

    #[tokio::test]
    async fn bad_tls_material_names_the_field_without_its_contents() {
        let dir = std::env::temp_dir().join(format!("triggerd-mqtt-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca"), "not a certificate SECRETVALUE").unwrap();
        let store = SecretStore::files(None);
        let r = |key: &str| crate::manifest::SecretRef {
            name: None,
            key: None,
            env: None,
            file: Some(dir.join(key).to_string_lossy().into_owned()),
            optional: None,
        };
        let connection = MqttConnection {
            url: "ssl://127.0.0.1:8883".into(),
            endpoint: parse_url("ssl://127.0.0.1:8883").unwrap(),
            client_id: "t".into(),
            auth: None,
            tls: Some(ClientTls {
                ca_cert_secret: Some(r("ca")),
                client_cert_secret: None,
                client_key_secret: None,
                insecure_skip_verify: false,
            }),
        };
        let e = connection.options(&store, None).await.unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("tls.caCertSecret"), "{text}");
        assert!(!text.contains("SECRETVALUE"), "{text}");
        assert!(!e.is_retryable());
        let mut missing = connection.clone();
        missing.tls = None;
        missing.auth = Some(BasicAuth {
            username: r("user"),
            password: r("password"),
        });
        let e = missing.options(&store, None).await.unwrap_err();
        assert!(e.to_string().starts_with("auth.username: "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
