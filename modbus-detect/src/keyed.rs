//! Hash tables keyed by wire data (addresses, ports, unit ids, registers
//! an attacker chooses) hash with a per-process random key, so that nobody
//! can craft keys that all land in one bucket and turn every lookup into a
//! scan (HashDoS). foldhash seeds each table at random and is about as
//! fast as the unkeyed FxHash it replaces (criterion `flow_table`,
//! `rules`). Tables keyed by the configuration only (the allow lists, the
//! limits file) keep FxHash; the shard of a server address stays a fixed
//! hash, so that a capture is spread the same way on every run.

pub use foldhash::fast::RandomState;

/// A `HashMap` whose keys come from the wire.
pub type KeyedMap<K, V> = std::collections::HashMap<K, V, RandomState>;
