//! AMQP 0-9-1 (RabbitMQ) connections, shared by the `amqp` event source and the `amqp`
//! trigger: URL and name checks for `validate`, the URL, credentials and TLS material read
//! from the secret store, typed connection errors that say whether a retry may help, and the
//! conversions between AMQP field tables and JSON.

use std::str::FromStr;

use lapin::options::ExchangeDeclareOptions;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties, DefaultConnectionBuilder, ErrorKind, ExchangeKind};
use serde_json::{Map, Number, Value};
use serde_saphyr::Location;
use thiserror::Error;

use crate::broker_tls::ClientTlsPem;
use crate::compile::CompileContext;
use crate::manifest::{AmqpExchangeDeclare, BasicAuth, ClientTls, SecretRef};
use crate::nats_client::tls_problem;
use crate::secret::{mask_url, FieldSecretError, SecretStore};

/// How long one connection attempt may take (TCP, TLS and the AMQP handshake), unless the
/// URL's `connection_timeout` says otherwise.
const CONNECT_TIMEOUT_MS: u64 = 10_000;

/// Field tables converted to JSON deeper than this are cut (the value becomes `null`): a
/// hostile publisher's nesting costs bounded work.
const MAX_TABLE_DEPTH: usize = 16;

/// Why a broker URL is unusable, if it is (never shows its password).
pub fn url_problem(url: &str) -> Option<String> {
    let url = url.trim();
    if url.is_empty() {
        return Some("url is empty".into());
    }
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Some("url needs the scheme amqp:// or amqps://".into());
    }
    AMQPUri::from_str(url)
        .err()
        .map(|e| format!("not an AMQP URL: {e}"))
}

/// The exchange kind a manifest's `exchangeType` names (a plugin's type such as
/// `x-delayed-message` is passed on as given).
pub fn exchange_kind(name: &str) -> Result<ExchangeKind, String> {
    match name.trim() {
        "direct" => Ok(ExchangeKind::Direct),
        "fanout" => Ok(ExchangeKind::Fanout),
        "topic" => Ok(ExchangeKind::Topic),
        "headers" => Ok(ExchangeKind::Headers),
        "" => Err("exchangeType is empty: use direct, fanout, topic or headers".into()),
        custom if custom.starts_with("x-") => Ok(ExchangeKind::Custom(custom.to_owned())),
        other => Err(format!(
            "unknown exchangeType {other:?}: use direct, fanout, topic, headers or a plugin's x- type"
        )),
    }
}

/// An AMQP short string (names, routing keys, property values), or why `value` is none:
/// at most 255 bytes.
pub fn short_string(field: &str, value: &str) -> Result<ShortString, String> {
    ShortString::try_new(value).map_err(|_| {
        format!(
            "{field} is {} bytes long; AMQP allows at most 255",
            value.len()
        )
    })
}

/// Checks the connection fields every AMQP event and trigger has (`url` or `urlSecret`,
/// `tls`), recording errors under `field`; the URL's source when it is usable.
pub fn compile_connection_fields(
    ctx: &mut CompileContext<'_>,
    loc: Option<&Location>,
    field: &str,
    url: Option<&str>,
    url_secret: Option<&SecretRef>,
    tls: Option<&ClientTls>,
) -> Option<UrlSource> {
    if let Some((sub, problem, hint)) = tls.and_then(tls_problem) {
        ctx.error_with_hint(loc, format!("{field}.tls.{sub}"), problem, hint);
    }
    match (url, url_secret) {
        (Some(url), None) => {
            if let Some(problem) = url_problem(url) {
                ctx.error_with_hint(
                    loc,
                    format!("{field}.url"),
                    problem,
                    "e.g. amqp://rabbitmq:5672 or amqps://rabbitmq:5671/vhost",
                );
                return None;
            }
            if tls.is_some() && url.trim().starts_with("amqp://") {
                ctx.error_with_hint(
                    loc,
                    format!("{field}.tls"),
                    "tls is given but the url is amqp://, which does not use TLS",
                    "use an amqps:// url (Argo's client also uses TLS only for amqps://)",
                );
                return None;
            }
            Some(UrlSource::Given(url.to_owned()))
        }
        (None, Some(secret)) => Some(UrlSource::Secret(secret.clone())),
        (Some(_), Some(_)) => {
            ctx.error(
                loc,
                format!("{field}.urlSecret"),
                "give url or urlSecret, not both",
            );
            None
        }
        (None, None) => {
            ctx.error(loc, format!("{field}.url"), "url or urlSecret is required");
            None
        }
    }
}

/// How an exchange is declared: `exchangeDeclare` as given, else durable (Argo's default).
pub fn exchange_declare_options(given: Option<&AmqpExchangeDeclare>) -> ExchangeDeclareOptions {
    given.map_or(
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        |d| ExchangeDeclareOptions {
            passive: false,
            durable: d.durable,
            auto_delete: d.auto_delete,
            internal: d.internal,
            nowait: d.no_wait,
        },
    )
}

/// Why no AMQP connection could be set up or made.
#[derive(Debug, Error)]
pub enum AmqpConnectError {
    /// The URL, a credential or a certificate could not be read.
    #[error(transparent)]
    Secret(#[from] FieldSecretError),
    /// The URL read from `urlSecret` is not an AMQP URL.
    #[error("urlSecret: {0}")]
    BadUrl(String),
    /// TLS material given for a URL that does not use TLS.
    #[error("tls is given but the url is amqp://; use amqps://")]
    TlsWithoutAmqps,
    /// The broker refused the credentials or access to the virtual host. Not retryable.
    #[error("the broker at {url} refused access: {message}")]
    Refused {
        /// Broker URL (masked).
        url: String,
        /// The broker's words.
        message: String,
    },
    /// The broker could not be reached or failed the handshake. Retryable.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// Broker URL (masked).
        url: String,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
}

impl AmqpConnectError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            AmqpConnectError::Secret(e) => e.is_retryable(),
            AmqpConnectError::BadUrl(_)
            | AmqpConnectError::TlsWithoutAmqps
            | AmqpConnectError::Refused { .. } => false,
            AmqpConnectError::Connect { .. } => true,
        }
    }
}

/// Whether a broker error means the credentials or the virtual host are refused (a
/// retry with the same secret cannot help).
pub fn is_access_refused(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
    match e.kind() {
        ErrorKind::ProtocolError(p) => matches!(
            p.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
        ),
        ErrorKind::AuthProviderError(_) => true,
        _ => false,
    }
}

/// Where the broker URL comes from.
#[derive(Debug, Clone)]
pub enum UrlSource {
    /// Given in the manifest (checked at load time).
    Given(String),
    /// Read from a Secret when connecting (`urlSecret`).
    Secret(SecretRef),
}

/// Connection settings checked at load time; secrets are read when connecting.
#[derive(Debug, Clone)]
pub struct AmqpConnection {
    /// The URL or where to read it.
    pub url: UrlSource,
    /// User name and password references; they replace the URL's.
    pub auth: Option<BasicAuth>,
    /// TLS material references (for `amqps://`).
    pub tls: Option<ClientTls>,
    /// Shown to the broker's operators (`rabbitmqctl list_connections client_properties`).
    pub name: String,
}

impl AmqpConnection {
    /// The URL for logs and errors: the manifest's with its password masked, or which
    /// secret holds it.
    pub fn display_url(&self) -> String {
        match &self.url {
            UrlSource::Given(url) => mask_url(url.trim()).into_owned(),
            UrlSource::Secret(r) => format!(
                "the url in secret {}/{}",
                r.name.as_deref().unwrap_or("?"),
                r.key.as_deref().unwrap_or("?")
            ),
        }
    }

    /// Reads the URL, credentials and TLS material and makes one connection.
    pub async fn connect(&self, secrets: &SecretStore) -> Result<Connection, AmqpConnectError> {
        self.resolve(secrets).await?.connect().await
    }

    /// Reads the URL, credentials and TLS material: what a connection needs, checked.
    pub async fn resolve(
        &self,
        secrets: &SecretStore,
    ) -> Result<ResolvedConnection, AmqpConnectError> {
        let text = match &self.url {
            UrlSource::Given(url) => url.trim().to_owned(),
            UrlSource::Secret(r) => secrets.secret_of("urlSecret", r).await?.trim().to_owned(),
        };
        if let Some(problem) = url_problem(&text) {
            return Err(AmqpConnectError::BadUrl(problem));
        }
        let display = mask_url(&text).into_owned();
        let mut uri = AMQPUri::from_str(&text).map_err(AmqpConnectError::BadUrl)?;
        if let Some(auth) = &self.auth {
            uri.authority.userinfo.username =
                secrets.secret_of("auth.username", &auth.username).await?;
            uri.authority.userinfo.password =
                secrets.secret_of("auth.password", &auth.password).await?;
        }
        if uri.query.connection_timeout.is_none() {
            uri.query.connection_timeout = Some(CONNECT_TIMEOUT_MS);
        }
        let mut tls = OwnedTLSConfig::default();
        if let Some(given) = &self.tls {
            if uri.scheme != AMQPScheme::AMQPS {
                return Err(AmqpConnectError::TlsWithoutAmqps);
            }
            let pem = ClientTlsPem::read(secrets, given).await?;
            tls.cert_chain = pem.ca;
            tls.identity = pem.identity.map(|(cert, key)| OwnedIdentity::PKCS8 {
                pem: cert.into_bytes(),
                key: key.into_bytes(),
            });
        }
        Ok(ResolvedConnection {
            uri,
            tls,
            display,
            name: self.name.clone(),
        })
    }
}

/// A connection's settings with its secrets read; debug output shows no secret.
pub struct ResolvedConnection {
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    display: String,
    name: String,
}

impl std::fmt::Debug for ResolvedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedConnection")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

impl ResolvedConnection {
    /// The URL with its password masked.
    pub fn display_url(&self) -> &str {
        &self.display
    }

    /// Makes one connection.
    pub async fn connect(self) -> Result<Connection, AmqpConnectError> {
        let ResolvedConnection {
            uri,
            tls,
            display,
            name,
        } = self;
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let builder =
            DefaultConnectionBuilder::new().map_err(|source| AmqpConnectError::Connect {
                url: display.clone(),
                source,
            })?;
        builder
            .with_uri(uri)
            .with_properties(properties)
            .with_tls_config(tls)
            .connect()
            .await
            .map_err(|source| {
                if is_access_refused(&source) {
                    AmqpConnectError::Refused {
                        url: display.clone(),
                        message: source.to_string(),
                    }
                } else {
                    AmqpConnectError::Connect {
                        url: display,
                        source,
                    }
                }
            })
    }
}

/// An AMQP field table as JSON: numbers, strings (long strings as text, lossy UTF-8),
/// booleans, arrays and nested tables; byte arrays as base64 text; timestamps as seconds.
pub fn table_to_json(table: &FieldTable) -> Value {
    table_json(table, 0)
}

fn table_json(table: &FieldTable, depth: usize) -> Value {
    let mut out = Map::new();
    for (k, v) in table {
        out.insert(k.as_str().to_owned(), value_json(v, depth + 1));
    }
    Value::Object(out)
}

fn value_json(v: &AMQPValue, depth: usize) -> Value {
    use base64::Engine as _;
    if depth > MAX_TABLE_DEPTH {
        return Value::Null;
    }
    let float = |f: f64| Number::from_f64(f).map_or(Value::Null, Value::Number);
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => s.as_str().into(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned().into(),
        AMQPValue::FieldArray(a) => Value::Array(
            a.as_slice()
                .iter()
                .map(|v| value_json(v, depth + 1))
                .collect(),
        ),
        AMQPValue::FieldTable(t) => table_json(t, depth),
        AMQPValue::ByteArray(b) => base64::engine::general_purpose::STANDARD
            .encode(b.as_slice())
            .into(),
        AMQPValue::Void => Value::Null,
    }
}

/// A JSON object as an AMQP field table (queue arguments, message headers): strings as long
/// strings, integers as 64-bit, other numbers as doubles; the error names the key.
pub fn json_to_table(object: &Map<String, Value>) -> Result<FieldTable, String> {
    let mut table = FieldTable::default();
    for (k, v) in object {
        let key = short_string("a key", k)?;
        table.insert(key, json_value(v)?);
    }
    Ok(table)
}

fn json_value(v: &Value) -> Result<AMQPValue, String> {
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(json_value)
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(o) => AMQPValue::FieldTable(json_to_table(o)?),
    })
}

/// Argo's `queueDeclare.arguments`: a YAML mapping as text (e.g. `x-queue-type: quorum`),
/// as a field table; empty text gives an empty table.
pub fn arguments_table(text: &str) -> Result<FieldTable, String> {
    if text.trim().is_empty() {
        return Ok(FieldTable::default());
    }
    let value: Value =
        serde_saphyr::from_str(text).map_err(|e| format!("arguments is not YAML: {e}"))?;
    match value {
        Value::Object(o) => json_to_table(&o),
        Value::Null => Ok(FieldTable::default()),
        _ => Err("arguments must be a YAML mapping, e.g. `x-queue-type: quorum`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_the_amqp_scheme_and_never_show_the_password() {
        assert_eq!(
            url_problem("amqp://rabbitmq-service.argo-events:5672"),
            None
        );
        assert_eq!(url_problem("amqps://u:p@host/vhost"), None);
        for bad in [
            "",
            "http://host",
            "host:5672",
            "amqp://u:SECRETPW@host:notaport",
        ] {
            let p = url_problem(bad).expect(bad);
            assert!(!p.contains("SECRETPW"), "{p}");
        }
    }

    #[test]
    fn exchange_types_are_the_four_or_a_plugin_type() {
        assert_eq!(exchange_kind("fanout"), Ok(ExchangeKind::Fanout));
        assert_eq!(
            exchange_kind("x-delayed-message"),
            Ok(ExchangeKind::Custom("x-delayed-message".into()))
        );
        assert!(exchange_kind("fan-out").is_err());
        assert!(exchange_kind("").is_err());
    }

    #[test]
    fn arguments_are_a_yaml_mapping() {
        let t = arguments_table("x-queue-type: quorum\nx-max-length: 1000\n").expect("parses");
        assert_eq!(
            t.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            t.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(1000))
        );
        assert!(arguments_table("").expect("empty").inner().is_empty());
        assert!(arguments_table("- a\n- b\n").is_err());
        assert!(arguments_table("a: [unclosed").is_err());
    }

    #[test]
    fn tables_round_trip_through_json_and_deep_nesting_is_cut() {
        let json = serde_json::json!({"a": 1, "b": "x", "c": [true, 2.5], "d": {"e": null}});
        let table = json_to_table(json.as_object().expect("object")).expect("converts");
        assert_eq!(table_to_json(&table), json);
        let mut deep = FieldTable::default();
        for _ in 0..100 {
            let mut outer = FieldTable::default();
            outer.insert("n".into(), AMQPValue::FieldTable(deep));
            deep = outer;
        }
        let text = table_to_json(&deep).to_string();
        assert!(
            text.matches("\"n\"").count() <= MAX_TABLE_DEPTH + 1,
            "{text}"
        );
    }

    #[test]
    fn short_strings_are_at_most_255_bytes() {
        assert!(short_string("routingKey", &"k".repeat(255)).is_ok());
        let e = short_string("routingKey", &"k".repeat(256)).expect_err("too long");
        assert!(e.starts_with("routingKey is 256 bytes"), "{e}");
    }
}
