//! The comparison point of the live benchmark: what a libpcap/tcpdump-class
//! tool gets from the same interface. An AF_PACKET socket with a
//! `PACKET_MMAP` TPACKET_V3 ring (8 blocks of 1 MiB: the size of the
//! sensor's UMEM) and the classic BPF filter of `tcp port 502`; each frame
//! is decoded down to its TCP header (what any such tool does first) and
//! counted. Runs until SIGTERM/SIGINT, then prints
//! `{"frames": N, "kernel_packets": N, "kernel_drops": N}`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use modbus_detect::decode::{decode, LinkType};
use serde_json::json;

/// `tcpdump -dd 'tcp port 502'` (Ethernet; IPv4 and IPv6).
const TCP_PORT_502: [(u16, u8, u8, u32); 20] = [
    (0x28, 0, 0, 0x0000000c),
    (0x15, 0, 6, 0x000086dd),
    (0x30, 0, 0, 0x00000014),
    (0x15, 0, 15, 0x00000006),
    (0x28, 0, 0, 0x00000036),
    (0x15, 12, 0, 0x000001f6),
    (0x28, 0, 0, 0x00000038),
    (0x15, 10, 11, 0x000001f6),
    (0x15, 0, 10, 0x00000800),
    (0x30, 0, 0, 0x00000017),
    (0x15, 0, 8, 0x00000006),
    (0x28, 0, 0, 0x00000014),
    (0x45, 6, 0, 0x00001fff),
    (0xb1, 0, 0, 0x0000000e),
    (0x48, 0, 0, 0x0000000e),
    (0x15, 2, 0, 0x000001f6),
    (0x48, 0, 0, 0x00000010),
    (0x15, 0, 1, 0x000001f6),
    (0x6, 0, 0, 0x00040000),
    (0x6, 0, 0, 0x00000000),
];

// Kernel ABI (linux/if_packet.h, asm-generic/socket.h).
const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const SO_ATTACH_FILTER: libc::c_int = 26;

const BLOCK_SIZE: u32 = 1 << 20;
const BLOCKS: u32 = 8;
const FRAME_SIZE: u32 = 2048;

#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

#[repr(C)]
#[derive(Default)]
struct TpacketStatsV3 {
    packets: u32,
    drops: u32,
    freeze_q_cnt: u32,
}

#[repr(C)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

// Offsets in `struct tpacket_block_desc` (version, offset_to_priv, then
// `tpacket_hdr_v1`) and `struct tpacket3_hdr`.
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST_PKT: usize = 16;
const PKT_NEXT: usize = 0;
const PKT_SNAPLEN: usize = 12;
const PKT_MAC: usize = 24;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn os_err(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// What the reader got.
#[derive(Debug, Default, Clone, Copy)]
pub struct Received {
    pub frames: u64,
    pub tcp: u64,
    pub kernel_packets: u64,
    pub kernel_drops: u64,
}

/// Read `iface` until SIGTERM/SIGINT; prints "reading on IF" on stderr
/// once the ring is set up, then the JSON result on stdout.
pub fn run(iface: &str) -> std::io::Result<()> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let r = read(iface)?;
    println!(
        "{}",
        json!({"frames": r.frames, "tcp_decoded": r.tcp, "kernel_packets": r.kernel_packets,
               "kernel_drops": r.kernel_drops})
    );
    Ok(())
}

fn read(iface: &str) -> std::io::Result<Received> {
    let name = std::ffi::CString::new(iface).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(os_err(iface));
    }
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        return Err(os_err("AF_PACKET socket (needs root)"));
    }
    let sock = Fd(fd);
    let setopt = |level, opt, val: *const libc::c_void, len: usize, what: &str| {
        // SAFETY: `val` points to `len` readable bytes for the call.
        let rc = unsafe { libc::setsockopt(sock.0, level, opt, val, len as libc::socklen_t) };
        if rc < 0 {
            Err(os_err(what))
        } else {
            Ok(())
        }
    };
    // The filter first, so that nothing unfiltered is queued before it.
    let code: Vec<SockFilter> = TCP_PORT_502
        .iter()
        .map(|&(code, jt, jf, k)| SockFilter { code, jt, jf, k })
        .collect();
    let prog = SockFprog {
        len: code.len() as u16,
        filter: code.as_ptr(),
    };
    setopt(
        libc::SOL_SOCKET,
        SO_ATTACH_FILTER,
        (&prog as *const SockFprog).cast(),
        std::mem::size_of::<SockFprog>(),
        "SO_ATTACH_FILTER",
    )?;
    let version = TPACKET_V3;
    setopt(
        SOL_PACKET,
        PACKET_VERSION,
        (&version as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>(),
        "PACKET_VERSION",
    )?;
    let req = TpacketReq3 {
        block_size: BLOCK_SIZE,
        block_nr: BLOCKS,
        frame_size: FRAME_SIZE,
        frame_nr: BLOCK_SIZE / FRAME_SIZE * BLOCKS,
        retire_blk_tov: 10,
        sizeof_priv: 0,
        feature_req_word: 0,
    };
    setopt(
        SOL_PACKET,
        PACKET_RX_RING,
        (&req as *const TpacketReq3).cast(),
        std::mem::size_of::<TpacketReq3>(),
        "PACKET_RX_RING",
    )?;
    let len = (BLOCK_SIZE * BLOCKS) as usize;
    // SAFETY: maps the ring the kernel just set up for this socket.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_LOCKED,
            sock.0,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(os_err("mmap of the ring"));
    }
    let ring = Map(map.cast(), len);
    // SAFETY: sockaddr_ll is plain data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: binds our socket to a valid sockaddr_ll.
    let rc = unsafe {
        libc::bind(
            sock.0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(os_err("bind"));
    }
    eprintln!("reading on {iface}");
    let _ = std::io::stderr().flush();
    let mut got = Received::default();
    let mut block = 0usize;
    while !STOP.load(Ordering::Relaxed) {
        let base = ring.0.wrapping_add(block * BLOCK_SIZE as usize);
        // SAFETY: `base` is the start of block `block` inside the mapping;
        // the kernel hands the block over by setting TP_STATUS_USER.
        let status = unsafe { std::ptr::read_volatile(base.add(BLOCK_STATUS).cast::<u32>()) };
        if status & TP_STATUS_USER == 0 {
            let mut pfd = libc::pollfd {
                fd: sock.0,
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            continue;
        }
        std::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: the block is ours until we give it back; packet offsets
        // come from the kernel and stay inside the block.
        unsafe {
            let n = std::ptr::read(base.add(BLOCK_NUM_PKTS).cast::<u32>());
            let mut pkt =
                base.add(std::ptr::read(base.add(BLOCK_FIRST_PKT).cast::<u32>()) as usize);
            for _ in 0..n {
                let snap = std::ptr::read(pkt.add(PKT_SNAPLEN).cast::<u32>()) as usize;
                let mac = std::ptr::read(pkt.add(PKT_MAC).cast::<u16>()) as usize;
                let frame = std::slice::from_raw_parts(pkt.add(mac), snap);
                got.frames += 1;
                got.tcp += u64::from(decode(LinkType::Ethernet, frame).is_ok());
                pkt = pkt.add(std::ptr::read(pkt.add(PKT_NEXT).cast::<u32>()) as usize);
            }
            std::sync::atomic::fence(Ordering::Release);
            std::ptr::write_volatile(base.add(BLOCK_STATUS).cast::<u32>(), TP_STATUS_KERNEL);
        }
        block = (block + 1) % BLOCKS as usize;
    }
    let mut stats = TpacketStatsV3::default();
    let mut slen = std::mem::size_of::<TpacketStatsV3>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `slen` bytes into `stats`.
    let rc = unsafe {
        libc::getsockopt(
            sock.0,
            SOL_PACKET,
            PACKET_STATISTICS,
            (&mut stats as *mut TpacketStatsV3).cast(),
            &mut slen,
        )
    };
    if rc == 0 {
        got.kernel_packets = u64::from(stats.packets);
        got.kernel_drops = u64::from(stats.drops);
    }
    let _ = stats.freeze_q_cnt;
    drop(ring);
    Ok(got)
}

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

struct Map(*mut u8, usize);

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the mapping we made, unmapped once.
        unsafe { libc::munmap(self.0.cast(), self.1) };
    }
}
