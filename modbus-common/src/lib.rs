//! What the crates of the workspace share, `no_std` and with no
//! dependencies, as aya-template's `-common` crate:
//!
//! - what the XDP program (`modbus-ebpf`) and its loader (`modbus-detect`,
//!   `source::xdp`) must agree on: map names, map sizes and the layout of
//!   the counter block (this file). Change a layout here and both sides
//!   change with it; `modbus-detect`'s build.rs rebuilds the eBPF object
//!   whenever this folder changes;
//! - with the `rng` feature, the seeded generator ([`rng`]) that the ML
//!   training of `modbus-detect` and the capture generator `modbus-synth`
//!   both need to be reproducible (not built for the XDP program, which
//!   has no use for it).

#![cfg_attr(not(test), no_std)]

#[cfg(feature = "rng")]
pub mod rng;

/// Name of the XDP program (its function) in the object.
pub const PROGRAM_NAME: &str = "modbus_xdp";

/// `HashMap<u16, u8>`: TCP ports carrying Modbus/TCP, in host byte order;
/// the value is [`PORT_ENABLED`]. Filled by the loader before attaching.
pub const MAP_PORTS: &str = "MODBUS_PORTS";
/// `XskMap`: RX queue index -> AF_XDP socket.
pub const MAP_XSKS: &str = "XSK_SOCKETS";
/// `PerCpuArray<XdpStats>` with one entry (index 0).
pub const MAP_COUNTERS: &str = "XDP_COUNTERS";

/// At most this many Modbus ports (`--ports`).
pub const MAX_PORTS: u32 = 64;
/// RX queues an AF_XDP socket can be registered for (queue index < this).
pub const MAX_QUEUES: u32 = 256;
/// Value stored for a port in [`MAP_PORTS`].
pub const PORT_ENABLED: u8 = 1;

/// IPv6 extension headers the XDP program walks; a longer chain goes to
/// userspace, which walks it to the end.
pub const MAX_IPV6_EXT_HEADERS: usize = 4;
/// VLAN tags (802.1Q / 802.1ad) the XDP program skips; a frame with more
/// goes to userspace, which skips them all.
pub const MAX_VLAN_TAGS: usize = 2;

/// Per-CPU counters of the program, one block per CPU at index 0 of
/// [`MAP_COUNTERS`]. Every frame is counted in `seen` and in exactly one of
/// `redirected` and `passed`; `redirect_failed` and `malformed` are frames
/// that were also counted in `passed`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Every frame the program ran on.
    pub seen: u64,
    /// Modbus frames handed to an AF_XDP socket.
    pub redirected: u64,
    /// Modbus frames with no AF_XDP socket on their RX queue (passed on).
    pub redirect_failed: u64,
    /// Frames given to the kernel stack (XDP_PASS).
    pub passed: u64,
    /// Frames whose Ethernet, VLAN, IP or TCP header was cut short or
    /// invalid (passed on).
    pub malformed: u64,
}

// SAFETY: `#[repr(C)]`, five u64s, no padding, every bit pattern valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for XdpStats {}
