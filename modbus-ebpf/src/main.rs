//! The XDP program of modbus-detect.
//!
//! For every frame: Ethernet, VLAN tags (802.1Q, 802.1ad), IPv4 (any IHL)
//! or IPv6 (hop-by-hop, routing, destination options and AH extension
//! headers), then TCP. When either TCP port is in the Modbus port map the
//! frame goes to the AF_XDP socket registered for its RX queue; everything
//! else, and Modbus frames whose queue has no socket, goes to the kernel
//! stack (XDP_PASS).
//!
//! The verifier bounds loops, so at most [`MAX_VLAN_TAGS`] tags and
//! [`MAX_IPV6_EXT_HEADERS`] extension headers are walked here. A frame with
//! more, and every IP fragment (a non-first one has no ports, and the
//! datagram may be a Modbus write), goes to userspace too: it decodes
//! chains as long as a frame can hold and reassembles fragments. Passing
//! them to the stack would let an attacker hide a write behind a deep
//! header chain or in fragments.
//!
//! Logging (aya-log) is compiled in but off: the loader sets the
//! `AYA_LOG_LEVEL` global before loading, and with it at 0 the verifier
//! removes the log calls as dead code.

#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_PASS, XDP_REDIRECT},
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use modbus_common::{MAX_IPV6_EXT_HEADERS, MAX_PORTS, MAX_QUEUES, MAX_VLAN_TAGS, XdpStats};

// The statics' names are the map names of `modbus_common` (MAP_PORTS, MAP_XSKS,
// MAP_COUNTERS): `#[map]` names a map after its static.
#[map]
static MODBUS_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map]
static XSK_SOCKETS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

#[map]
static XDP_COUNTERS: PerCpuArray<XdpStats> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// What the parser decided.
enum Verdict {
    /// TCP with a Modbus port, or what only userspace can decide (an IP
    /// fragment, a header chain longer than the verifier lets us walk):
    /// redirect.
    Modbus,
    /// Anything else: to the stack.
    Pass,
    /// A header cut short or invalid: to the stack, counted.
    Malformed(Reason),
}

/// Which header was malformed (only for the debug log).
#[derive(Clone, Copy)]
#[repr(u8)]
enum Reason {
    Ethernet = 1,
    Vlan = 2,
    Ipv4 = 3,
    Ipv6 = 4,
    Ipv6Ext = 5,
    Tcp = 6,
}

#[xdp]
pub fn modbus_xdp(ctx: XdpContext) -> u32 {
    let stats = XDP_COUNTERS.get_ptr_mut(0);
    // SAFETY: the per-CPU entry of this CPU; nothing else runs on it while
    // this program does.
    let bump = |f: fn(&mut XdpStats) -> &mut u64| {
        if let Some(s) = stats {
            let c = f(unsafe { &mut *s });
            *c = c.wrapping_add(1);
        }
    };
    bump(|s| &mut s.seen);
    match classify(&ctx) {
        Verdict::Modbus => {
            let queue = ctx.rx_queue_index();
            // Flags 0: a queue without a socket makes the helper return
            // XDP_ABORTED, which is counted and turned into XDP_PASS.
            match XSK_SOCKETS.redirect(queue, 0) {
                Ok(_) => {
                    bump(|s| &mut s.redirected);
                    XDP_REDIRECT
                }
                Err(_) => {
                    bump(|s| &mut s.redirect_failed);
                    bump(|s| &mut s.passed);
                    debug!(
                        &ctx,
                        "modbus frame on queue {} with no AF_XDP socket", queue
                    );
                    XDP_PASS
                }
            }
        }
        Verdict::Pass => {
            bump(|s| &mut s.passed);
            XDP_PASS
        }
        Verdict::Malformed(reason) => {
            bump(|s| &mut s.malformed);
            bump(|s| &mut s.passed);
            debug!(&ctx, "malformed frame (header {})", reason as u8);
            XDP_PASS
        }
    }
}

/// A pointer to `len` bytes at `off` in the frame, if the frame has them.
/// The check is on the packet pointer itself, the form the verifier needs.
#[inline(always)]
fn bytes(ctx: &XdpContext, off: usize, len: usize) -> Option<*const u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    let p = start + off;
    if p + len > end {
        return None;
    }
    Some(p as *const u8)
}

/// Big-endian u16 at `p` (already bounds-checked).
#[inline(always)]
fn be16(p: *const u8) -> u16 {
    // SAFETY: the caller checked that both bytes are in the frame.
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

/// Byte at `p` (already bounds-checked).
#[inline(always)]
fn byte(p: *const u8) -> u8 {
    // SAFETY: the caller checked that the byte is in the frame.
    unsafe { *p }
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Verdict {
    let Some(eth) = bytes(ctx, 0, ETH_HLEN) else {
        return Verdict::Malformed(Reason::Ethernet);
    };
    let mut ethertype = be16(unsafe { eth.add(12) });
    let mut off = ETH_HLEN;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
        let Some(tag) = bytes(ctx, off, VLAN_HLEN) else {
            return Verdict::Malformed(Reason::Vlan);
        };
        ethertype = be16(unsafe { tag.add(2) });
        off += VLAN_HLEN;
        tags += 1;
    }
    match ethertype {
        ETH_P_IPV4 => ipv4(ctx, off),
        ETH_P_IPV6 => ipv6(ctx, off),
        // More tags than walked here: userspace decides.
        ETH_P_8021Q | ETH_P_8021AD => Verdict::Modbus,
        _ => Verdict::Pass,
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, off: usize) -> Verdict {
    let Some(ip) = bytes(ctx, off, IPV4_MIN_HLEN) else {
        return Verdict::Malformed(Reason::Ipv4);
    };
    let vihl = byte(ip);
    if vihl >> 4 != 4 {
        return Verdict::Malformed(Reason::Ipv4);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < IPV4_MIN_HLEN || bytes(ctx, off, ihl).is_none() {
        return Verdict::Malformed(Reason::Ipv4);
    }
    // Any fragment (more fragments, or an offset): userspace reassembles.
    if be16(unsafe { ip.add(6) }) & 0x3fff != 0 {
        return Verdict::Modbus;
    }
    if byte(unsafe { ip.add(9) }) != IPPROTO_TCP {
        return Verdict::Pass;
    }
    tcp(ctx, off + ihl)
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, off: usize) -> Verdict {
    let Some(ip) = bytes(ctx, off, IPV6_HLEN) else {
        return Verdict::Malformed(Reason::Ipv6);
    };
    if byte(ip) >> 4 != 6 {
        return Verdict::Malformed(Reason::Ipv6);
    }
    let mut next = byte(unsafe { ip.add(6) });
    let mut off = off + IPV6_HLEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_TCP => return tcp(ctx, off),
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some(h) = bytes(ctx, off, 8) else {
                    return Verdict::Malformed(Reason::Ipv6Ext);
                };
                next = byte(h);
                off += (usize::from(byte(unsafe { h.add(1) })) + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Some(h) = bytes(ctx, off, 8) else {
                    return Verdict::Malformed(Reason::Ipv6Ext);
                };
                // A real fragment (offset or more fragments; not an atomic
                // one): userspace reassembles.
                if be16(unsafe { h.add(2) }) & 0xfff9 != 0 {
                    return Verdict::Modbus;
                }
                next = byte(h);
                off += 8;
            }
            IPPROTO_AH => {
                let Some(h) = bytes(ctx, off, 8) else {
                    return Verdict::Malformed(Reason::Ipv6Ext);
                };
                next = byte(h);
                off += (usize::from(byte(unsafe { h.add(1) })) + 2) * 4;
            }
            _ => return Verdict::Pass,
        }
    }
    match next {
        IPPROTO_TCP => tcp(ctx, off),
        // A chain longer than walked here: userspace decides.
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_AH => {
            Verdict::Modbus
        }
        _ => Verdict::Pass,
    }
}

#[inline(always)]
fn tcp(ctx: &XdpContext, off: usize) -> Verdict {
    let Some(th) = bytes(ctx, off, TCP_MIN_HLEN) else {
        return Verdict::Malformed(Reason::Tcp);
    };
    let src = be16(th);
    let dst = be16(unsafe { th.add(2) });
    if MODBUS_PORTS.get_ptr(src).is_some() || MODBUS_PORTS.get_ptr(dst).is_some() {
        Verdict::Modbus
    } else {
        Verdict::Pass
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// "Dual MIT/GPL": what aya programs declare; GPL-compatible for the kernel.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
