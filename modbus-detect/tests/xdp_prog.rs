//! The XDP program, run by the kernel: BPF_PROG_TEST_RUN on hand-made frames
//! (every parser path, exact verdicts and counter moves), and attach/detach
//! on a veth pair in a network namespace made for the test.
//!
//! These need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) and a build with
//! the eBPF program; without either they fail, loudly: they never skip.
//!
//! Verdicts: XDP_PASS = 2, XDP_REDIRECT = 4. With an empty XskMap (what
//! `test_run` loads) a Modbus frame's redirect fails and the program passes
//! it on (XDP_PASS, counted in `redirect_failed`); with an AF_XDP socket in
//! the XskMap at queue 0 the verdict is XDP_REDIRECT. An AF_XDP socket need
//! not be bound to be put in the map, and BPF_PROG_TEST_RUN (without live
//! frames) only returns the verdict, so the tests use an unbound one.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use modbus_detect::source::xdp::{
    available, test_run, XdpCounters, XdpError, XdpMode, XdpProgram, XdpTestProgram,
};

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// Fail, never skip, where the tests cannot mean anything.
fn require_root_and_program() {
    // SAFETY: no arguments, no side effects.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the XDP tests must run as root (they load BPF programs and make network namespaces); run them with sudo"
    );
    assert!(
        available(),
        "this build has no eBPF program (AYA_BUILD_SKIP=1 or bpf-linker missing): run `cargo xtask setup` and rebuild"
    );
}

// ---------------------------------------------------------------- frames --

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const IP4_A: [u8; 4] = [192, 0, 2, 10];
const IP4_B: [u8; 4] = [192, 0, 2, 20];

fn ip6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0x20;
    a[1] = 0x01;
    a[2] = 0x0d;
    a[3] = 0xb8;
    a[15] = last;
    a
}

/// Ethernet header with `tags` (TPID, VID) VLAN tags, then `ethertype`.
fn eth(tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&MAC_A);
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A TCP header (20 bytes, SYN|ACK... whatever: flags PSH|ACK) plus a
/// Modbus-looking payload.
fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes());
    t.extend_from_slice(&2000u32.to_be_bytes());
    t.push(5 << 4);
    t.push(0x18);
    t.extend_from_slice(&8192u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    // Read holding registers, unit 1, address 0, count 2.
    t.extend_from_slice(&[0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2]);
    t
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&20u16.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(&[0u8; 12]);
    u
}

/// IPv4 header with `options` bytes of options (a multiple of 4), the
/// fragment field `frag` (flags and offset), protocol `proto`, then `payload`.
fn ipv4(options: usize, frag: u16, proto: u8, payload: &[u8]) -> Vec<u8> {
    assert!(options & 3 == 0 && options <= 40);
    let hlen = 20 + options;
    let mut h = vec![0x40 | (hlen / 4) as u8, 0];
    h.extend_from_slice(&((hlen + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.push(64);
    h.push(proto);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&IP4_A);
    h.extend_from_slice(&IP4_B);
    // NOPs, then end of options.
    h.extend(std::iter::repeat_n(1u8, options));
    if options > 0 {
        h[hlen - 1] = 0;
    }
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv6 extension header: (its protocol number, its bytes with the
/// next-header byte left 0).
type Ext = (u8, Vec<u8>);

fn hop_by_hop(len8: u8) -> Ext {
    // (len8 + 1) * 8 bytes: next, hdr ext len, then PadN filling the rest.
    let total = (usize::from(len8) + 1) * 8;
    let mut h = vec![0, len8, 1, (total - 4) as u8];
    h.resize(total, 0);
    (0, h)
}

fn dest_opts() -> Ext {
    (60, vec![0, 0, 1, 4, 0, 0, 0, 0])
}

fn routing() -> Ext {
    // Type 4 (segment routing) with one segment: 8 + 16 bytes.
    let mut h = vec![0, 2, 4, 0, 0, 0, 0, 0];
    h.extend_from_slice(&ip6(0x99));
    (43, h)
}

/// Fragment header: `offset` in 8-byte units, M flag `more`.
fn fragment(offset: u16, more: bool) -> Ext {
    let field = (offset << 3) | u16::from(more);
    let mut h = vec![0, 0];
    h.extend_from_slice(&field.to_be_bytes());
    h.extend_from_slice(&0xdead_beefu32.to_be_bytes());
    (44, h)
}

/// IPv6 header, extension headers `exts` in order, then `payload` of
/// protocol `proto`.
fn ipv6(exts: &[Ext], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, bytes)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(proto, |e| e.0);
        let mut b = bytes.clone();
        b[0] = next;
        body.extend_from_slice(&b);
    }
    body.extend_from_slice(payload);
    let first = exts.first().map_or(proto, |e| e.0);
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.push(first);
    h.push(64);
    h.extend_from_slice(&ip6(1));
    h.extend_from_slice(&ip6(2));
    h.extend_from_slice(&body);
    h
}

fn frame(l2: Vec<u8>, l3: Vec<u8>) -> Vec<u8> {
    let mut f = l2;
    f.extend_from_slice(&l3);
    f
}

fn v4_tcp(sport: u16, dport: u16) -> Vec<u8> {
    frame(eth(&[], 0x0800), ipv4(0, 0, 6, &tcp(sport, dport)))
}

fn v6_tcp(exts: &[Ext], sport: u16, dport: u16) -> Vec<u8> {
    frame(eth(&[], 0x86dd), ipv6(exts, 6, &tcp(sport, dport)))
}

fn arp() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&MAC_A);
    a.extend_from_slice(&IP4_A);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&IP4_B);
    frame(eth(&[], 0x0806), a)
}

// ------------------------------------------------------------- verdicts --

/// What the program must do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// TCP on a Modbus port: redirected (or, with no socket, passed and
    /// counted as a failed redirect).
    Modbus,
    /// Not Modbus: passed.
    Pass,
    /// A header cut short or invalid: passed, counted as malformed.
    Malformed,
}

fn delta(after: XdpCounters, before: XdpCounters) -> XdpCounters {
    XdpCounters {
        seen: after.seen - before.seen,
        redirected: after.redirected - before.redirected,
        redirect_failed: after.redirect_failed - before.redirect_failed,
        passed: after.passed - before.passed,
        malformed: after.malformed - before.malformed,
    }
}

/// An AF_XDP socket, unbound: enough for the XskMap.
fn xdp_socket() -> OwnedFd {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "socket(AF_XDP): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Two loaded copies of the program: one with an AF_XDP socket on queue 0,
/// one without; every case runs on both, verdict and counters checked.
struct Bench {
    with_socket: XdpTestProgram,
    without: XdpTestProgram,
    _socket: OwnedFd,
}

impl Bench {
    fn new(ports: &[u16]) -> Bench {
        require_root_and_program();
        let socket = xdp_socket();
        let mut with_socket = XdpTestProgram::load(ports).unwrap_or_else(|e| panic!("{e}"));
        with_socket
            .register_socket(0, socket.as_raw_fd())
            .unwrap_or_else(|e| panic!("{e}"));
        let without = XdpTestProgram::load(ports).unwrap_or_else(|e| panic!("{e}"));
        Bench {
            with_socket,
            without,
            _socket: socket,
        }
    }

    fn check(&self, name: &str, frame: &[u8], expect: Expect) {
        let (redirect_verdict, redirected, failed, passed, malformed) = match expect {
            Expect::Modbus => (XDP_REDIRECT, 1, 0, 0, 0),
            Expect::Pass => (XDP_PASS, 0, 0, 1, 0),
            Expect::Malformed => (XDP_PASS, 0, 0, 1, 1),
        };
        // With a socket on the queue.
        let before = self.with_socket.counters().unwrap();
        let verdict = self
            .with_socket
            .run(frame)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            verdict, redirect_verdict,
            "{name}: verdict with a socket on queue 0"
        );
        let d = delta(self.with_socket.counters().unwrap(), before);
        let want = XdpCounters {
            seen: 1,
            redirected,
            redirect_failed: failed,
            passed,
            malformed,
        };
        assert_eq!(d, want, "{name}: counters with a socket on queue 0");
        // Without: Modbus frames are passed, counted as failed redirects.
        let before = self.without.counters().unwrap();
        let verdict = self
            .without
            .run(frame)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(verdict, XDP_PASS, "{name}: verdict with no socket");
        let d = delta(self.without.counters().unwrap(), before);
        let modbus = u64::from(expect == Expect::Modbus);
        let want = XdpCounters {
            seen: 1,
            redirected: 0,
            redirect_failed: modbus,
            passed: 1,
            malformed,
        };
        assert_eq!(d, want, "{name}: counters with no socket");
    }
}

#[test]
fn ipv4_tcp_modbus_either_direction() {
    let b = Bench::new(&[502]);
    b.check("v4 to 502", &v4_tcp(40000, 502), Expect::Modbus);
    b.check("v4 from 502", &v4_tcp(502, 40000), Expect::Modbus);
    b.check("v4 502 to 502", &v4_tcp(502, 502), Expect::Modbus);
    b.check("v4 port 80", &v4_tcp(40000, 80), Expect::Pass);
    b.check(
        "v4 port 5020 not in set",
        &v4_tcp(40000, 5020),
        Expect::Pass,
    );
}

#[test]
fn ipv4_options_any_ihl() {
    let b = Bench::new(&[502]);
    for options in [4, 12, 40] {
        let f = frame(eth(&[], 0x0800), ipv4(options, 0, 6, &tcp(40000, 502)));
        b.check(
            &format!("v4 with {options} bytes of options"),
            &f,
            Expect::Modbus,
        );
        let f = frame(eth(&[], 0x0800), ipv4(options, 0, 6, &tcp(502, 80)));
        b.check(
            &format!("v4 with {options} bytes of options, from 502"),
            &f,
            Expect::Modbus,
        );
        let f = frame(eth(&[], 0x0800), ipv4(options, 0, 6, &tcp(40000, 80)));
        b.check(
            &format!("v4 with {options} bytes of options, port 80"),
            &f,
            Expect::Pass,
        );
    }
}

#[test]
fn ipv4_fragments() {
    let b = Bench::new(&[502]);
    // First fragment (MF set, offset 0): has the TCP header.
    let f = frame(eth(&[], 0x0800), ipv4(0, 0x2000, 6, &tcp(40000, 502)));
    b.check("v4 first fragment", &f, Expect::Modbus);
    // Every fragment goes to userspace, which reassembles the datagram:
    // a non-first one has no ports to judge by (whatever its bytes).
    let f = frame(eth(&[], 0x0800), ipv4(0, 185, 6, &tcp(40000, 80)));
    b.check("v4 non-first fragment", &f, Expect::Modbus);
    let f = frame(eth(&[], 0x0800), ipv4(0, 0x2000 | 1, 6, &tcp(80, 80)));
    b.check("v4 middle fragment", &f, Expect::Modbus);
    // DF set is not a fragment.
    let f = frame(eth(&[], 0x0800), ipv4(0, 0x4000, 6, &tcp(40000, 502)));
    b.check("v4 DF", &f, Expect::Modbus);
}

#[test]
fn ipv6_plain_and_extension_headers() {
    let b = Bench::new(&[502]);
    b.check("v6 to 502", &v6_tcp(&[], 40000, 502), Expect::Modbus);
    b.check("v6 from 502", &v6_tcp(&[], 502, 40000), Expect::Modbus);
    b.check("v6 port 80", &v6_tcp(&[], 40000, 80), Expect::Pass);
    b.check(
        "v6 hop-by-hop + destination options",
        &v6_tcp(&[hop_by_hop(0), dest_opts()], 40000, 502),
        Expect::Modbus,
    );
    b.check(
        "v6 long hop-by-hop + destination options, port 80",
        &v6_tcp(&[hop_by_hop(3), dest_opts()], 40000, 80),
        Expect::Pass,
    );
    b.check(
        "v6 hop-by-hop + routing + destination options",
        &v6_tcp(&[hop_by_hop(1), routing(), dest_opts()], 502, 40000),
        Expect::Modbus,
    );
    b.check(
        "v6 four extension headers (the most walked)",
        &v6_tcp(
            &[hop_by_hop(0), dest_opts(), routing(), dest_opts()],
            40000,
            502,
        ),
        Expect::Modbus,
    );
    b.check(
        "v6 five extension headers (past the bound: userspace walks on)",
        &v6_tcp(
            &[
                hop_by_hop(0),
                dest_opts(),
                routing(),
                dest_opts(),
                dest_opts(),
            ],
            40000,
            502,
        ),
        Expect::Modbus,
    );
    let no_next = frame(eth(&[], 0x86dd), ipv6(&[], 59, &[]));
    b.check("v6 no next header", &no_next, Expect::Pass);
    let v6_udp = frame(eth(&[], 0x86dd), ipv6(&[], 17, &udp(40000, 502)));
    b.check("v6 UDP 502", &v6_udp, Expect::Pass);
}

#[test]
fn ipv6_fragment_header() {
    let b = Bench::new(&[502]);
    b.check(
        "v6 first fragment (offset 0, M)",
        &v6_tcp(&[fragment(0, true)], 40000, 502),
        Expect::Modbus,
    );
    b.check(
        "v6 atomic fragment (offset 0, no M)",
        &v6_tcp(&[fragment(0, false)], 502, 40000),
        Expect::Modbus,
    );
    b.check(
        "v6 non-first fragment",
        &v6_tcp(&[fragment(100, true)], 40000, 80),
        Expect::Modbus,
    );
    b.check(
        "v6 last fragment after hop-by-hop",
        &v6_tcp(&[hop_by_hop(0), fragment(7, false)], 40000, 80),
        Expect::Modbus,
    );
}

#[test]
fn vlan_tags() {
    let b = Bench::new(&[502]);
    let one = frame(
        eth(&[(0x8100, 10)], 0x0800),
        ipv4(0, 0, 6, &tcp(40000, 502)),
    );
    b.check("802.1Q + v4", &one, Expect::Modbus);
    let one6 = frame(eth(&[(0x8100, 10)], 0x86dd), ipv6(&[], 6, &tcp(502, 40000)));
    b.check("802.1Q + v6", &one6, Expect::Modbus);
    let qinq = frame(
        eth(&[(0x88a8, 100), (0x8100, 10)], 0x0800),
        ipv4(8, 0, 6, &tcp(502, 40000)),
    );
    b.check("802.1ad + 802.1Q + v4 with options", &qinq, Expect::Modbus);
    let qinq6 = frame(
        eth(&[(0x8100, 100), (0x8100, 10)], 0x86dd),
        ipv6(&[hop_by_hop(0)], 6, &tcp(40000, 502)),
    );
    b.check("802.1Q + 802.1Q + v6 hop-by-hop", &qinq6, Expect::Modbus);
    let other = frame(eth(&[(0x8100, 10)], 0x0800), ipv4(0, 0, 6, &tcp(40000, 80)));
    b.check("802.1Q + v4 port 80", &other, Expect::Pass);
    let three = frame(
        eth(&[(0x88a8, 1), (0x8100, 2), (0x8100, 3)], 0x0800),
        ipv4(0, 0, 6, &tcp(40000, 502)),
    );
    b.check(
        "three VLAN tags (past the bound: userspace skips on)",
        &three,
        Expect::Modbus,
    );
}

#[test]
fn port_set_from_userspace() {
    let b = Bench::new(&[5020]);
    b.check("5020 in the set", &v4_tcp(40000, 5020), Expect::Modbus);
    b.check("5020 as source", &v6_tcp(&[], 5020, 40000), Expect::Modbus);
    b.check("502 not in the set", &v4_tcp(40000, 502), Expect::Pass);
    let b = Bench::new(&[502, 1502, 5020]);
    for port in [502, 1502, 5020] {
        b.check(
            &format!("{port} in a set of 3"),
            &v4_tcp(40000, port),
            Expect::Modbus,
        );
    }
    b.check("80 not in a set of 3", &v4_tcp(40000, 80), Expect::Pass);
    let b = Bench::new(&[]);
    b.check("empty set", &v4_tcp(40000, 502), Expect::Pass);
}

#[test]
fn not_tcp() {
    let b = Bench::new(&[502]);
    let u = frame(eth(&[], 0x0800), ipv4(0, 0, 17, &udp(40000, 502)));
    b.check("v4 UDP 502", &u, Expect::Pass);
    let u = frame(eth(&[], 0x0800), ipv4(0, 0, 17, &udp(502, 502)));
    b.check("v4 UDP from 502", &u, Expect::Pass);
    b.check("ARP", &arp(), Expect::Pass);
    let icmp = frame(eth(&[], 0x0800), ipv4(0, 0, 1, &[8, 0, 0, 0, 0, 1, 0, 1]));
    b.check("ICMP", &icmp, Expect::Pass);
    let lldp = frame(eth(&[], 0x88cc), vec![0u8; 40]);
    b.check("LLDP", &lldp, Expect::Pass);
}

#[test]
fn truncated_and_invalid_headers() {
    let b = Bench::new(&[502]);
    // Ethernet.
    b.check("empty frame", &[], Expect::Malformed);
    b.check(
        "10-byte frame",
        &v4_tcp(40000, 502)[..10],
        Expect::Malformed,
    );
    b.check(
        "13-byte frame",
        &v4_tcp(40000, 502)[..13],
        Expect::Malformed,
    );
    b.check(
        "bare Ethernet header, IPv4 type",
        &eth(&[], 0x0800),
        Expect::Malformed,
    );
    b.check(
        "bare Ethernet header, ARP type",
        &eth(&[], 0x0806),
        Expect::Pass,
    );
    // VLAN.
    let tagged = frame(
        eth(&[(0x8100, 10)], 0x0800),
        ipv4(0, 0, 6, &tcp(40000, 502)),
    );
    b.check("VLAN tag cut short", &tagged[..16], Expect::Malformed);
    let qinq = frame(
        eth(&[(0x88a8, 100), (0x8100, 10)], 0x0800),
        ipv4(0, 0, 6, &tcp(40000, 502)),
    );
    b.check("second VLAN tag cut short", &qinq[..20], Expect::Malformed);
    // IPv4.
    let v4 = v4_tcp(40000, 502);
    b.check("IPv4 header cut short", &v4[..14 + 19], Expect::Malformed);
    let opts = frame(eth(&[], 0x0800), ipv4(40, 0, 6, &tcp(40000, 502)));
    b.check(
        "IPv4 options cut short",
        &opts[..14 + 50],
        Expect::Malformed,
    );
    let mut bad_ihl = v4.clone();
    bad_ihl[14] = 0x44;
    b.check("IPv4 IHL 4", &bad_ihl, Expect::Malformed);
    let mut bad_version = v4.clone();
    bad_version[14] = 0x65;
    b.check(
        "version 6 in an IPv4 frame",
        &bad_version,
        Expect::Malformed,
    );
    // TCP.
    b.check(
        "IPv4 TCP header cut short",
        &v4[..14 + 20 + 19],
        Expect::Malformed,
    );
    b.check("IPv4 TCP header absent", &v4[..14 + 20], Expect::Malformed);
    let v6 = v6_tcp(&[], 40000, 502);
    b.check(
        "IPv6 TCP header cut short",
        &v6[..14 + 40 + 10],
        Expect::Malformed,
    );
    // IPv6.
    b.check("IPv6 header cut short", &v6[..14 + 39], Expect::Malformed);
    let mut bad6 = v6.clone();
    bad6[14] = 0x45;
    b.check("version 4 in an IPv6 frame", &bad6, Expect::Malformed);
    let ext = v6_tcp(&[hop_by_hop(0), dest_opts()], 40000, 502);
    b.check(
        "IPv6 extension header cut short",
        &ext[..14 + 40 + 8 + 4],
        Expect::Malformed,
    );
    let long = v6_tcp(&[hop_by_hop(3)], 40000, 502);
    b.check(
        "IPv6 extension header longer than the frame",
        &long[..14 + 40 + 8],
        Expect::Malformed,
    );
    let frag = v6_tcp(&[fragment(0, true)], 40000, 502);
    b.check(
        "IPv6 fragment header cut short",
        &frag[..14 + 40 + 6],
        Expect::Malformed,
    );
}

#[test]
fn test_run_with_no_socket_passes_everything() {
    require_root_and_program();
    // The documented behaviour of `test_run`: an empty XskMap, so the
    // redirect of a Modbus frame fails and the program passes it.
    assert_eq!(test_run(&v4_tcp(40000, 502), &[502]).unwrap(), XDP_PASS);
    assert_eq!(test_run(&v4_tcp(40000, 80), &[502]).unwrap(), XDP_PASS);
    assert_eq!(test_run(&[0u8; 6], &[502]).unwrap(), XDP_PASS);
    // More ports than the map holds.
    let many: Vec<u16> = (1..=100).collect();
    let e = test_run(&v4_tcp(40000, 502), &many).unwrap_err();
    assert!(matches!(e, XdpError::TooManyPorts { .. }), "{e}");
}

#[test]
fn socket_registration_bounds() {
    require_root_and_program();
    let socket = xdp_socket();
    let mut p = XdpTestProgram::load(&[502]).unwrap();
    let e = p
        .register_socket(modbus_detect::source::xdp::MAX_QUEUES, socket.as_raw_fd())
        .unwrap_err();
    assert!(e.to_string().contains("RX queue"), "{e}");
    // Not an AF_XDP socket.
    // SAFETY: plain socket(2).
    let udp = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(udp >= 0);
    // SAFETY: a fresh fd we own.
    let udp = unsafe { OwnedFd::from_raw_fd(udp) };
    let e = p.register_socket(0, udp.as_raw_fd()).unwrap_err();
    assert!(!e.to_string().contains('\n'), "{e}");
    // A socket on queue 1 does not catch frames of queue 0.
    p.register_socket(1, socket.as_raw_fd()).unwrap();
    assert_eq!(p.run(&v4_tcp(40000, 502)).unwrap(), XDP_PASS);
    p.register_socket(0, socket.as_raw_fd()).unwrap();
    assert_eq!(p.run(&v4_tcp(40000, 502)).unwrap(), XDP_REDIRECT);
}

// ------------------------------------------------------------ attaching --

#[test]
fn attach_to_a_missing_interface() {
    let name = format!("nomb{}", std::process::id());
    let e = XdpProgram::attach(&name, &[502], None).unwrap_err();
    assert_eq!(e.to_string(), format!("{name}: no such interface"));
    let e = XdpProgram::attach(&name, &[502], Some(XdpMode::Skb)).unwrap_err();
    assert_eq!(e.to_string(), format!("{name}: no such interface"));
}

/// Run `cmd`, panicking with its output if it fails.
fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace holding a veth pair, both ends up; deleted (with the
/// pair) on drop, whatever happened.
struct Netns {
    name: String,
    a: String,
    b: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let pid = std::process::id();
        let ns = Netns {
            name: format!("mbxdp-{tag}-{pid}"),
            a: format!("mx{tag}{pid}a"),
            b: format!("mx{tag}{pid}b"),
        };
        assert!(ns.a.len() <= 15, "interface name too long: {}", ns.a);
        // A leftover of a killed run with the same PID.
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        run(&["ip", "netns", "add", &ns.name]);
        let n = ns.name.as_str();
        run(&[
            "ip", "-n", n, "link", "add", &ns.a, "type", "veth", "peer", "name", &ns.b,
        ]);
        run(&["ip", "-n", n, "link", "set", &ns.a, "up"]);
        run(&["ip", "-n", n, "link", "set", &ns.b, "up"]);
        ns
    }

    /// `ip -d link show dev IFACE` in the namespace.
    fn link(&self, iface: &str) -> String {
        run(&["ip", "-n", &self.name, "-d", "link", "show", "dev", iface])
    }

    /// Run `f` on a thread that has entered the namespace.
    fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // SAFETY: a namespace fd; only this thread moves.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Send `frames` out of `iface` with an AF_PACKET socket (in the caller's
/// namespace).
fn send_frames(iface: &str, frames: &[Vec<u8>]) {
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: a valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(index > 0, "{iface}: no such interface");
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "socket(AF_PACKET): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    for f in frames {
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&MAC_B);
        // SAFETY: buffer and address are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            n,
            f.len() as isize,
            "sendto {iface}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Attach in `mode` to one end of a fresh veth pair, check `ip link`, send
/// frames from the other end and check the counters, detach, check again.
fn attach_detach(tag: &str, mode: Option<XdpMode>, want: XdpMode) {
    require_root_and_program();
    let ns = Netns::new(tag);
    let shown_as = match want {
        XdpMode::Native => "xdp",
        XdpMode::Skb => "xdpgeneric",
    };
    ns.within(|| {
        let mut p = XdpProgram::attach(&ns.b, &[502], mode).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.mode(), want);
        let name = std::ffi::CString::new(ns.b.as_str()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(p.ifindex(), unsafe { libc::if_nametoindex(name.as_ptr()) });
        let link = ns.link(&ns.b);
        assert!(
            link.contains(&format!(" {shown_as} ")) && link.contains("prog/xdp id"),
            "ip link shows no {shown_as} program on {}:\n{link}",
            ns.b
        );
        assert!(link.contains("modbus_xdp"), "{link}");

        // Real frames through the pair: the program runs on them.
        let socket = xdp_socket();
        // A socket on a queue the veth does not have: never used.
        p.register_socket(7, socket.as_raw_fd()).unwrap();
        let before = p.counters().unwrap();
        let frames = vec![
            v4_tcp(40000, 502),
            v6_tcp(&[hop_by_hop(0)], 502, 40000),
            v4_tcp(40000, 80),
            arp(),
            v4_tcp(40000, 502)[..14 + 20 + 8].to_vec(),
        ];
        send_frames(&ns.a, &frames);
        let deadline = Instant::now() + Duration::from_secs(5);
        let d = loop {
            let d = delta(p.counters().unwrap(), before);
            if d.redirect_failed >= 2 && d.malformed >= 1 || Instant::now() > deadline {
                break d;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Other frames (IPv6 neighbour discovery...) may cross the pair too.
        assert_eq!(d.redirect_failed, 2, "{d:?}");
        assert_eq!(d.malformed, 1, "{d:?}");
        assert_eq!(d.redirected, 0, "{d:?}");
        assert!(d.seen >= 5 && d.seen == d.passed, "{d:?}");

        p.detach().unwrap_or_else(|e| panic!("{e}"));
        p.detach().unwrap_or_else(|e| panic!("second detach: {e}"));
        let link = ns.link(&ns.b);
        assert!(
            !link.contains("prog/xdp"),
            "the program is still attached to {} after detach:\n{link}",
            ns.b
        );

        // Dropping detaches too.
        let p = XdpProgram::attach(&ns.b, &[502], mode).unwrap_or_else(|e| panic!("{e}"));
        assert!(ns.link(&ns.b).contains("prog/xdp"));
        drop(p);
        // Closing the last link fd releases the link; the kernel may finish
        // that release a moment later (deferred work), so allow 2 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut link = ns.link(&ns.b);
        while link.contains("prog/xdp") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            link = ns.link(&ns.b);
        }
        assert!(
            !link.contains("prog/xdp"),
            "still attached 2 s after drop:\n{link}"
        );
    });
}

#[test]
fn attach_detach_native_on_veth() {
    attach_detach("n", Some(XdpMode::Native), XdpMode::Native);
}

#[test]
fn attach_detach_skb_on_veth() {
    attach_detach("s", Some(XdpMode::Skb), XdpMode::Skb);
}

#[test]
fn attach_default_mode_is_native_on_veth() {
    attach_detach("d", None, XdpMode::Native);
}

#[test]
fn attach_twice_is_one_line_error() {
    require_root_and_program();
    let ns = Netns::new("t");
    ns.within(|| {
        let _first = XdpProgram::attach(&ns.b, &[502], Some(XdpMode::Native))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = XdpProgram::attach(&ns.b, &[502], Some(XdpMode::Native)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{}: attaching XDP in native mode failed: ", ns.b)),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    });
}
