//! The bucket's side of central settings: read a sensor's items once,
//! then follow their changes, in a thread of its own (the shards never
//! wait on the network); and the `config` command that writes them.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;

use super::{key, key_token, Central, CentralReport, Item, Outcome};
use crate::config::live::LiveConfig;
use crate::config::DetectConfig;
use crate::output::publish::nats::{connect, Connect};

/// Where a sensor's central settings are.
#[derive(Debug, Clone)]
pub struct Source {
    pub connect: Connect,
    pub bucket: String,
    pub sensor: String,
}

/// How long a request to the servers may take (the sensor tries again).
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long `config`'s requests may take: making a replicated bucket on a
/// busy cluster took longer than 5 s in CI, and a person waits anyway.
const EDIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two attempts while the servers are unreachable.
const RETRY: Duration = Duration::from_secs(1);

/// Follow `source` from now on: its items over `local`, installed in
/// `live` at every change, each change logged on stderr and kept in
/// `live`'s story (the report's `central_config`). Waits up to `wait` for
/// the first reading; without one, the local settings run (said on
/// stderr) until it comes.
pub fn follow(
    source: Source,
    local: DetectConfig,
    live: Arc<LiveConfig>,
    wait: Duration,
) -> std::io::Result<()> {
    live.note(|r| {
        *r = CentralReport {
            servers: source.connect.servers.clone(),
            bucket: source.bucket.clone(),
            key_prefix: format!("{}.", key_token(&source.sensor)),
            ..CentralReport::default()
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (loaded_tx, loaded) = mpsc::channel();
    let (bucket, servers) = (source.bucket.clone(), source.connect.servers.clone());
    // Lives as long as the process: a sensor follows its settings until
    // it ends.
    std::thread::Builder::new()
        .name("central-config".into())
        .spawn(move || {
            let mut state = Follower {
                central: Central::new(local),
                live,
                loaded: Some(loaded_tx),
                failing: false,
            };
            rt.block_on(state.run(&source));
        })?;
    if loaded.recv_timeout(wait).is_err() {
        eprintln!(
            "modbus-detect: warning: central settings: bucket {bucket} at {servers} not read within {:.0} s; the local settings run until it is",
            wait.as_secs_f64()
        );
    }
    Ok(())
}

struct Follower {
    central: Central,
    live: Arc<LiveConfig>,
    /// Told once, when the bucket was first read.
    loaded: Option<mpsc::Sender<()>>,
    /// The last attempt failed (said once, until one succeeds).
    failing: bool,
}

impl Follower {
    async fn run(&mut self, source: &Source) {
        loop {
            let problem = self.session(source).await;
            if !self.failing {
                eprintln!(
                    "modbus-detect: warning: central settings: {problem}; trying again every {} s",
                    RETRY.as_secs()
                );
            }
            self.failing = true;
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Read the sensor's items, then follow them until something fails.
    async fn session(&mut self, source: &Source) -> String {
        let client = match connect(&source.connect).await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let mut js = jetstream::new(client);
        js.set_timeout(TIMEOUT);
        let store = match js.get_key_value(&source.bucket).await {
            Ok(s) => s,
            Err(e) => {
                return format!(
                    "bucket {}: {e} (write it with `modbus-detect config put`)",
                    source.bucket
                )
            }
        };
        // Changes after this revision are watched; those read below may be
        // newer and are then seen twice (the second time changes nothing).
        let last = match store.status().await {
            Ok(s) => s.info.state.last_sequence,
            Err(e) => return format!("bucket {}: {e}", source.bucket),
        };
        self.central.bucket_at(last);
        for item in Item::ALL {
            let k = key(&source.sensor, item);
            match store.entry(k.clone()).await {
                Ok(Some(entry)) => self.take(&entry),
                // Not even a delete marker: a key held from an earlier
                // reading is gone (read again after a reconnection).
                Ok(None) => {
                    let outcome = self.central.gone(&k, item, now());
                    self.settle(outcome);
                }
                Err(e) => return format!("{k}: {e}"),
            }
        }
        let prefix = key_token(&source.sensor);
        let mut watch = match store
            .watch_from_revision(format!("{prefix}.*"), last + 1)
            .await
        {
            Ok(w) => w,
            Err(e) => return format!("watch {prefix}.*: {e}"),
        };
        self.live.note(|r| r.loaded = true);
        if std::mem::take(&mut self.failing) {
            eprintln!(
                "modbus-detect: central settings: bucket {} read again",
                source.bucket
            );
        }
        if let Some(tx) = self.loaded.take() {
            let _ = tx.send(());
        }
        while let Some(entry) = watch.next().await {
            match entry {
                Ok(e) => self.take(&e),
                Err(e) => return format!("watch {prefix}.*: {e}"),
            }
        }
        format!("watch {prefix}.*: ended")
    }

    /// One entry of the bucket: applied, refused or already seen.
    fn take(&mut self, entry: &kv::Entry) {
        let Some(item) = entry
            .key
            .rsplit_once('.')
            .and_then(|(_, name)| Item::from_name(name))
        else {
            return;
        };
        let value = match entry.operation {
            kv::Operation::Put => Some(&entry.value[..]),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        let outcome = self
            .central
            .change(&entry.key, item, entry.revision, value, now());
        self.settle(outcome);
    }

    /// Install what an outcome applied; log it and keep it in the report.
    fn settle(&mut self, outcome: Outcome) {
        if let Outcome::Applied(_) = outcome {
            self.live.install(Arc::new(self.central.effective()));
        }
        let central = &self.central;
        let line = self.live.note(|r| central.note(r, outcome));
        if let Some(line) = line {
            eprintln!("modbus-detect: {line}");
        }
    }
}

/// The time now, as the change records give it.
fn now() -> String {
    let ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    crate::output::iso_time(ns)
}

/// What `modbus-detect config` does.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Check `value` as the item's file would be checked, then store it.
    Put {
        item: Item,
        value: Vec<u8>,
    },
    Delete {
        item: Item,
    },
    /// Print each item's revision and size.
    Show,
}

/// Do `edit` on `sensor`'s items in `bucket` (created if missing, with
/// `replicas`); returns what to print.
pub fn edit(
    connect_to: &Connect,
    bucket: &str,
    replicas: usize,
    sensor: &str,
    edit: Edit,
) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    if let Edit::Put { item, value } = &edit {
        super::parse(*item, value, &DetectConfig::default())
            .map_err(|e| format!("{}: {e}", key(sensor, *item)))?;
    }
    rt.block_on(async {
        let client = connect(connect_to).await?;
        let max_payload = client.server_info().max_payload;
        let mut js = jetstream::new(client);
        js.set_timeout(EDIT_TIMEOUT);
        let store = bucket_store(&js, bucket, replicas).await?;
        match edit {
            Edit::Put { item, value } => {
                let k = key(sensor, item);
                let value = super::stored(value).map_err(|e| format!("{k}: gzip: {e}"))?;
                if value.len() > max_payload {
                    return Err(format!(
                        "{k}: {} bytes (gzipped), more than the {max_payload} the servers take in a message: raise their max_payload (up to 64 MB)",
                        value.len()
                    ));
                }
                let rev = store
                    .put(&k, value.into())
                    .await
                    .map_err(|e| format!("{k}: {e}"))?;
                Ok(format!("{k} revision {rev}"))
            }
            Edit::Delete { item } => {
                let k = key(sensor, item);
                store.delete(&k).await.map_err(|e| format!("{k}: {e}"))?;
                Ok(format!("{k} deleted"))
            }
            Edit::Show => {
                let mut out = String::new();
                for item in Item::ALL {
                    let k = key(sensor, item);
                    match store.entry(k.clone()).await {
                        Ok(Some(e)) if e.operation == kv::Operation::Put => out.push_str(
                            &format!("{k} revision {} {} bytes\n", e.revision, e.value.len()),
                        ),
                        Ok(_) => out.push_str(&format!("{k} (not set: the local setting)\n")),
                        Err(e) => return Err(format!("{k}: {e}")),
                    }
                }
                Ok(out.trim_end().to_string())
            }
        }
    })
}

/// The bucket, made if missing. Its stream is made here rather than by
/// the client's `create_key_value`, which first asks for the account's
/// limits in a shape Debian's nats-server 2.9 does not answer in; the
/// stream is what a key-value bucket is (JetStream's ADR-8): one subject
/// per key, the last revisions kept, rollups and direct reads allowed.
async fn bucket_store(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: HISTORY,
        max_bytes: -1,
        max_message_size: -1,
        num_replicas: replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| format!("bucket {bucket}: {e}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| format!("bucket {bucket}: {e}"))
}

/// Revisions a bucket keeps per key.
const HISTORY: i64 = 16;
