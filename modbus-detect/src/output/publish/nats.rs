//! The NATS JetStream sink: events to `modbus.<sensor>.<kind>` in a stream
//! created if missing, each with its id as `Nats-Msg-Id` (JetStream keeps
//! one message per id within the stream's duplicate window), a batch sent
//! whole and then every acknowledgement awaited.

use std::time::Duration;

use async_nats::jetstream::{self, context::Publish, stream};

use super::{Event, Sink};

/// The stream the sensors publish into, and its limits.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub name: String,
    pub replicas: usize,
    /// 0: no limit.
    pub max_bytes: i64,
    pub max_age: Duration,
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            name: "MODBUS".into(),
            replicas: 1,
            max_bytes: 0,
            max_age: Duration::ZERO,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// How to reach the engine.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// `nats://host:port`, comma separated.
    pub servers: String,
    pub credentials: Option<std::path::PathBuf>,
    pub root_ca: Option<std::path::PathBuf>,
}

/// A connection made on first use and again after it fails.
pub struct NatsSink {
    rt: tokio::runtime::Runtime,
    connect: Connect,
    stream: StreamSettings,
    js: Option<jetstream::Context>,
}

/// How long a connection attempt and an acknowledgement may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// A subject token from a sensor name: NATS gives `.`, `*`, `>` and
/// white space meanings of their own.
pub fn subject_token(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect()
}

impl NatsSink {
    pub fn new(connect: Connect, stream: StreamSettings) -> std::io::Result<NatsSink> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(NatsSink {
            rt,
            connect,
            stream,
            js: None,
        })
    }

    async fn context(c: &Connect, s: &StreamSettings) -> Result<jetstream::Context, String> {
        let client = connect(c).await?;
        let mut js = jetstream::new(client);
        js.set_timeout(TIMEOUT);
        let config = stream::Config {
            name: s.name.clone(),
            subjects: vec!["modbus.>".into()],
            num_replicas: s.replicas.max(1),
            max_bytes: if s.max_bytes > 0 { s.max_bytes } else { -1 },
            max_age: s.max_age,
            duplicate_window: s.duplicate_window,
            ..Default::default()
        };
        tokio::time::timeout(TIMEOUT * 3, js.get_or_create_stream(config))
            .await
            .map_err(|_| "stream: timed out".to_string())?
            .map_err(|e| format!("stream {}: {e}", s.name))?;
        Ok(js)
    }
}

impl crate::cli::NatsAuth {
    /// How to reach `servers` with these credentials and CA.
    pub fn connect(&self, servers: &str) -> Connect {
        Connect {
            servers: servers.to_string(),
            credentials: self.creds.clone(),
            root_ca: self.ca.clone(),
        }
    }
}

/// A connection to the servers, with the credentials and CA given (also
/// for the central settings, `--config-from`).
pub async fn connect(c: &Connect) -> Result<async_nats::Client, String> {
    let mut opts = async_nats::ConnectOptions::new()
        .connection_timeout(TIMEOUT)
        .name("modbus-detect");
    if let Some(f) = &c.credentials {
        opts = opts
            .credentials_file(f)
            .await
            .map_err(|e| format!("{}: {e}", f.display()))?;
    }
    if let Some(ca) = &c.root_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let servers: Vec<async_nats::ServerAddr> = c
        .servers
        .split(',')
        .map(|u| u.trim().parse().map_err(|e| format!("{u}: {e}")))
        .collect::<Result<_, _>>()?;
    let client = tokio::time::timeout(TIMEOUT, opts.connect(servers))
        .await
        .map_err(|_| "connect: timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    Ok(client)
}

impl Sink for NatsSink {
    fn send(&mut self, sensor: &str, batch: &[Event]) -> Result<(), String> {
        let token = subject_token(sensor);
        let (connect, stream, js) = (&self.connect, &self.stream, &mut self.js);
        let sent = self.rt.block_on(async {
            if js.is_none() {
                *js = Some(Self::context(connect, stream).await?);
            }
            let Some(ctx) = js.as_ref() else {
                return Err("no connection".to_string());
            };
            let mut acks = Vec::with_capacity(batch.len());
            for ev in batch {
                let subject = format!("modbus.{token}.{}", ev.kind.name());
                let publish = Publish::build()
                    .payload(ev.payload.clone().into())
                    .message_id(&ev.id);
                let ack = ctx
                    .send_publish(subject, publish)
                    .await
                    .map_err(|e| format!("publish: {e}"))?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(|e| format!("ack: {e}"))?;
            }
            Ok(())
        });
        if sent.is_err() {
            // Connect again next time (the client also reconnects on its
            // own; a fresh context also finds a stream recreated since).
            self.js = None;
        }
        sent
    }
}
