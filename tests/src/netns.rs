//! Network-namespace test topologies for the live-capture path: a PLC, an
//! HMI and an attacker on one switch, and a sensor on the switch's SPAN port.
//!
//! ```text
//!   <prefix>-plc     <prefix>-hmi     <prefix>-atk        <prefix>-sensor
//!   eth0 10.77.0.10  eth0 10.77.0.20  eth0 10.77.0.66     span0 (no address)
//!     |                |                |                   |
//!   [plc]            [hmi]            [atk]               [span]
//!     +------- br0 ----+----------------+     <prefix>-sw   |
//!     \___ tc clsact on [plc]: ingress + egress -> mirred --/
//! ```
//!
//! Every veth is created from inside the switch namespace with its peer
//! placed straight into its host's namespace, so nothing is ever created in
//! the root namespace and no interface name can clash with another run.
//! The mirror is the switch port facing the PLC, as a SPAN session on a real
//! switch would be: frames from the PLC (its responses) are taken at that
//! port's ingress, frames to the PLC (every master's requests) at its egress,
//! so the sensor sees both directions of every PLC conversation, once.
//!
//! Mirroring uses `tc ... u32 match u32 0 0 action mirred egress mirror`:
//! the u32 match-everything idiom rather than `matchall`, because the kernel
//! of this project's machines is built without `cls_matchall`
//! (`CONFIG_NET_CLS_MATCHALL` unset) while u32 is present everywhere.
//!
//! Offloads (TSO, GSO, GRO, TX checksumming) are off on every veth so the
//! sensor sees wire-sized frames with correct checksums, as from a real TAP;
//! IPv6 is off in every namespace so the only traffic is what a test sends
//! (and ARP).
//!
//! Dropping a [`Topology`] (also while unwinding from a panic) kills every
//! process inside its namespaces, deletes its veths (and with them the
//! qdiscs and filters) and deletes the namespaces. A run killed outright
//! leaves its namespaces behind: names carry the creating PID, and
//! [`cleanup_stale`] removes those whose PID is gone.

use std::io::{self, BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub const PLC_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
pub const HMI_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);
pub const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 66);
pub const PREFIX_LEN: u8 = 24;
/// The interface of the PLC, the HMI and the attacker, in their namespaces.
pub const HOST_IFACE: &str = "eth0";
/// The sensor's interface, in the sensor namespace: the mirror's output.
pub const SENSOR_IFACE: &str = "span0";
/// The bridge, in the switch namespace.
pub const BRIDGE: &str = "br0";
/// The switch's end of the sensor's veth, where mirrored frames are sent.
const SPAN_PORT: &str = "span";
/// A second copy of the mirror, in the sensor namespace, for a packet
/// capture next to the sensor: XDP redirect takes the frames of `span0`
/// away from the kernel, so tcpdump there would see nothing.
pub const TAP_IFACE: &str = "tap0";
/// How long the lab's PLC or the sensor may take to say it is up, and a
/// stopped process to end.
pub const START: Duration = Duration::from_secs(20);
pub const STOP: Duration = Duration::from_secs(20);
/// The switch's end of [`TAP_IFACE`].
const TAP_PORT: &str = "tap";
/// The switch port whose traffic is mirrored.
const MIRRORED_PORT: &str = "plc";

/// The machines of a topology, one namespace each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    Plc,
    Hmi,
    Attacker,
    Sensor,
    /// The namespace holding the bridge and the mirror.
    Switch,
}

impl Host {
    /// Creation order (the switch first: the veths are made from it).
    pub const ALL: [Host; 5] = [
        Host::Switch,
        Host::Plc,
        Host::Hmi,
        Host::Attacker,
        Host::Sensor,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Host::Plc => "plc",
            Host::Hmi => "hmi",
            Host::Attacker => "atk",
            Host::Sensor => "sensor",
            Host::Switch => "sw",
        }
    }

    /// The host's address; the sensor and the switch have none.
    pub fn ip(self) -> Option<Ipv4Addr> {
        match self {
            Host::Plc => Some(PLC_IP),
            Host::Hmi => Some(HMI_IP),
            Host::Attacker => Some(ATTACKER_IP),
            Host::Sensor | Host::Switch => None,
        }
    }

    /// The switch-side veth facing this host.
    fn switch_port(self) -> Option<&'static str> {
        match self {
            Host::Plc => Some(MIRRORED_PORT),
            Host::Hmi => Some("hmi"),
            Host::Attacker => Some("atk"),
            Host::Sensor => Some(SPAN_PORT),
            Host::Switch => None,
        }
    }
}

/// `<base><pid>x<n>`: a prefix no other run or test of this process uses,
/// whose PID [`cleanup_stale`] can read back.
pub fn unique_prefix(base: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{base}{}x{n}", std::process::id())
}

/// Topologies are built one at a time per process: the first `ip netns add`
/// on a machine sets up the /run/netns mount, which concurrent first calls
/// can race on.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// A live topology; see the module documentation. Torn down on drop.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    /// Namespace names, indexed like [`Host::ALL`].
    names: [String; 5],
    /// Namespaces created so far (a failed build tears down only these).
    created: Vec<Host>,
    /// Switch-side veths created so far.
    ports: Vec<&'static str>,
    torn_down: bool,
}

impl Topology {
    /// Build the whole topology; on any failure, tear down what was built
    /// and return the error of the command that failed.
    pub fn create(prefix: &str) -> io::Result<Topology> {
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("topology prefix {prefix:?}: use 1-64 of [A-Za-z0-9_-]"),
            ));
        }
        let names = Host::ALL.map(|h| format!("{prefix}-{}", h.suffix()));
        let mut t = Topology {
            prefix: prefix.to_string(),
            names,
            created: Vec::new(),
            ports: Vec::new(),
            torn_down: false,
        };
        let _guard = BUILD_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        t.build()?;
        Ok(t)
    }

    fn build(&mut self) -> io::Result<()> {
        for host in Host::ALL {
            let ns = self.ns_name(host);
            run("ip", &["netns", "add", &ns])?;
            self.created.push(host);
            let ipv6_off = [
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ];
            run("ip", &ipv6_off)?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let sw = self.ns_name(Host::Switch);
        run("ip", &["-n", &sw, "link", "add", BRIDGE, "type", "bridge"])?;
        run("ip", &["-n", &sw, "link", "set", BRIDGE, "up"])?;
        for host in [Host::Plc, Host::Hmi, Host::Attacker, Host::Sensor] {
            self.wire(host)?;
        }
        self.wire_mirror_copy()?;
        run(
            "tc",
            &["-n", &sw, "qdisc", "add", "dev", MIRRORED_PORT, "clsact"],
        )?;
        for hook in ["ingress", "egress"] {
            run(
                "tc",
                &[
                    "-n",
                    &sw,
                    "filter",
                    "add",
                    "dev",
                    MIRRORED_PORT,
                    hook,
                    "protocol",
                    "all",
                    "prio",
                    "1",
                    "u32",
                    "match",
                    "u32",
                    "0",
                    "0",
                    "action",
                    "mirred",
                    "egress",
                    "mirror",
                    "dev",
                    SPAN_PORT,
                    "action",
                    "mirred",
                    "egress",
                    "mirror",
                    "dev",
                    TAP_PORT,
                ],
            )?;
        }
        Ok(())
    }

    /// One veth pair from the switch to `host`: a bridge port (or, for the
    /// sensor, the span port) on one end, the host's interface on the other.
    fn wire(&mut self, host: Host) -> io::Result<()> {
        let sw = self.ns_name(Host::Switch);
        let ns = self.ns_name(host);
        let port = host.switch_port().unwrap_or(SPAN_PORT);
        let iface = if host == Host::Sensor {
            SENSOR_IFACE
        } else {
            HOST_IFACE
        };
        run(
            "ip",
            &[
                "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", iface, "netns", &ns,
            ],
        )?;
        self.ports.push(port);
        offloads_off(&sw, port)?;
        offloads_off(&ns, iface)?;
        if let Some(ip) = host.ip() {
            let cidr = format!("{ip}/{PREFIX_LEN}");
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", iface])?;
            run("ip", &["-n", &sw, "link", "set", port, "master", BRIDGE])?;
        } else {
            // Mirrored frames are addressed to other MACs.
            run("ip", &["-n", &ns, "link", "set", iface, "promisc", "on"])?;
        }
        run("ip", &["-n", &ns, "link", "set", iface, "up"])?;
        run("ip", &["-n", &sw, "link", "set", port, "up"])?;
        Ok(())
    }

    /// The switch's end of the sensor's veth ([`Host::Switch`] namespace):
    /// frames sent out of it arrive on the sensor interface, as from a TAP.
    pub fn sensor_peer(&self) -> &str {
        SPAN_PORT
    }

    /// The second mirror output ([`TAP_IFACE`]) in the sensor namespace.
    fn wire_mirror_copy(&mut self) -> io::Result<()> {
        let sw = self.ns_name(Host::Switch);
        let ns = self.ns_name(Host::Sensor);
        run(
            "ip",
            &[
                "-n", &sw, "link", "add", TAP_PORT, "type", "veth", "peer", "name", TAP_IFACE,
                "netns", &ns,
            ],
        )?;
        self.ports.push(TAP_PORT);
        offloads_off(&sw, TAP_PORT)?;
        offloads_off(&ns, TAP_IFACE)?;
        run(
            "ip",
            &["-n", &ns, "link", "set", TAP_IFACE, "promisc", "on"],
        )?;
        run("ip", &["-n", &ns, "link", "set", TAP_IFACE, "up"])?;
        run("ip", &["-n", &sw, "link", "set", TAP_PORT, "up"])?;
        Ok(())
    }

    /// The interface with a second copy of the mirrored traffic, for tcpdump.
    pub fn tap_iface(&self) -> &str {
        TAP_IFACE
    }

    /// The prefix every namespace name starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>-plc`, `-hmi`, `-atk`, `-sensor`, `-sw`.
    pub fn ns_name(&self, host: Host) -> String {
        self.ns(host).to_string()
    }

    fn ns(&self, host: Host) -> &str {
        let i = Host::ALL
            .iter()
            .position(|&h| h == host)
            .unwrap_or_default();
        &self.names[i]
    }

    pub fn sensor_netns(&self) -> &str {
        self.ns(Host::Sensor)
    }

    pub fn sensor_iface(&self) -> &str {
        SENSOR_IFACE
    }

    pub fn plc_ip(&self) -> Ipv4Addr {
        PLC_IP
    }

    pub fn hmi_ip(&self) -> Ipv4Addr {
        HMI_IP
    }

    pub fn attacker_ip(&self) -> Ipv4Addr {
        ATTACKER_IP
    }

    /// Run `program args` inside `host`'s namespace to completion. A command
    /// that cannot start or exits non-zero is an error naming it, with its
    /// stderr.
    pub fn run_in(&self, host: Host, program: &str, args: &[&str]) -> io::Result<Output> {
        let mut all = vec!["netns", "exec", self.ns(host), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Start `program args` inside `host`'s namespace, stdout and stderr
    /// piped. `ip netns exec` execs the program, so the handle's PID is the
    /// program's. The handle kills it when dropped; the topology kills
    /// anything still running in its namespaces (children of it included)
    /// when it goes.
    pub fn spawn_in(&self, host: Host, program: &str, args: &[&str]) -> io::Result<NsProcess> {
        let mut all = vec!["netns", "exec", self.ns(host), program];
        all.extend_from_slice(args);
        NsProcess::spawn("ip", &all)
    }

    /// The PLC's Modbus/TCP address, `IP:502`.
    pub fn plc_addr(&self) -> String {
        format!("{}:502", self.plc_ip())
    }

    /// `modbus-lab args` in `host`'s namespace, to completion; the test
    /// fails if it does.
    pub fn lab(&self, host: Host, args: &[&str]) -> Output {
        let lab = crate::lab_binary().display().to_string();
        self.run_in(host, &lab, args)
            .unwrap_or_else(|e| panic!("modbus-lab {args:?}: {e}"))
    }

    /// `modbus-lab args` started in `host`'s namespace (see
    /// [`Topology::spawn_in`]).
    pub fn spawn_lab(&self, host: Host, args: &[&str]) -> NsProcess {
        let lab = crate::lab_binary().display().to_string();
        self.spawn_in(host, &lab, args)
            .unwrap_or_else(|e| panic!("modbus-lab {args:?}: {e}"))
    }

    /// The lab's HMI polling the PLC for `secs` seconds, one request
    /// every `interval_ms`, started in its namespace.
    pub fn spawn_hmi(&self, secs: &str, interval_ms: &str) -> NsProcess {
        let target = self.plc_addr();
        let args = [
            "hmi",
            "--target",
            &target,
            "--duration",
            secs,
            "--interval-ms",
            interval_ms,
        ];
        self.spawn_lab(Host::Hmi, &args)
    }

    /// Sends a capture's frames, as recorded, out of the switch's end of
    /// the sensor's link (`modbus-lab inject`, with `extra` flags); the
    /// test fails if it does.
    pub fn inject(&self, pcap: &Path, extra: &[&str]) {
        let pcap = pcap.display().to_string();
        let mut args = vec!["inject", "--iface", self.sensor_peer(), "--pcap", &pcap];
        args.extend_from_slice(extra);
        let out = self.lab(Host::Switch, &args);
        assert!(
            out.status.success(),
            "inject {pcap}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The lab's PLC on [`Topology::plc_addr`], once it listens; the
    /// handle stops it when dropped.
    pub fn start_plc(&self) -> NsProcess {
        let mut plc = self.spawn_lab(Host::Plc, &["plc", "--listen", &self.plc_addr()]);
        plc.wait_for_line("listening on", START).expect("PLC up");
        plc
    }

    /// `modbus-detect args` in the sensor's namespace, once it captures.
    pub fn start_sensor(&self, args: &[&str]) -> NsProcess {
        self.start_sensor_with_env(&[], args)
    }

    /// [`Topology::start_sensor`] with these environment variables
    /// (`ip netns exec NS env K=V ... modbus-detect ...`: `env` execs the
    /// detector, so the handle's PID is still the detector's).
    pub fn start_sensor_with_env(&self, env: &[(&str, &str)], args: &[&str]) -> NsProcess {
        let mut argv: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        argv.push(crate::detector_binary().display().to_string());
        argv.extend(args.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut sensor = self.spawn_in(Host::Sensor, "env", &argv).expect("sensor");
        sensor
            .wait_for_line("capturing on", START)
            .expect("sensor up");
        sensor
    }

    /// Is an XDP program attached to the sensor's interface?
    pub fn xdp_attached(&self) -> bool {
        let out = self
            .run_in(
                Host::Sensor,
                "ip",
                &["link", "show", "dev", self.sensor_iface()],
            )
            .expect("ip link show");
        String::from_utf8_lossy(&out.stdout).contains("xdp")
    }

    /// Tear down now, reporting every failure (dropping does the same but
    /// can only print them).
    pub fn teardown(mut self) -> io::Result<()> {
        let errors = self.teardown_inner();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(errors.join("; ")))
        }
    }

    /// Every step is tried even when an earlier one failed, so that as much
    /// as possible is gone.
    fn teardown_inner(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let mut errors = Vec::new();
        for &host in &self.created {
            if let Err(e) = kill_all_in(self.ns(host)) {
                errors.push(e.to_string());
            }
        }
        if self.created.contains(&Host::Switch) {
            let sw = self.ns(Host::Switch);
            // Deleting one end of a veth deletes its peer; the qdisc and its
            // filters go with the device.
            for port in self.ports.iter().rev() {
                if let Err(e) = run("ip", &["-n", sw, "link", "del", port]) {
                    errors.push(e.to_string());
                }
            }
        }
        for &host in self.created.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", self.ns(host)]) {
                errors.push(e.to_string());
            }
        }
        errors
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for e in self.teardown_inner() {
            eprintln!("netns teardown of {}: {e}", self.prefix);
        }
    }
}

/// TSO, GSO and GRO off so frames are never coalesced (the sensor must see
/// what a TAP would), TX checksumming off so their checksums are real.
fn offloads_off(ns: &str, dev: &str) -> io::Result<()> {
    run(
        "ip",
        &[
            "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off",
            "gro", "off",
        ],
    )
    .map(drop)
}

/// Names of all namespaces (`ip netns list`).
pub fn list_namespaces() -> io::Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Remove the namespaces of earlier runs that were killed before their
/// topology could tear itself down: names `<prefix_start><pid>...` whose PID
/// no longer exists. Namespaces of live processes are left alone. Returns
/// the names removed.
pub fn cleanup_stale(prefix_start: &str) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_namespaces()? {
        let Some(rest) = name.strip_prefix(prefix_start) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_all_in(&name)?;
        run("ip", &["netns", "del", &name])?;
        removed.push(name);
    }
    Ok(removed)
}

/// PIDs of the processes inside namespace `ns` (zombies excluded).
fn pids_in(ns: &str) -> io::Result<Vec<i32>> {
    let out = run("ip", &["netns", "pids", ns])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// SIGTERM everything in `ns`, then SIGKILL what is still there after a
/// second. An error if anything survives that.
fn kill_all_in(ns: &str) -> io::Result<()> {
    for (sig, grace) in [
        (libc::SIGTERM, Duration::from_secs(1)),
        (libc::SIGKILL, Duration::from_secs(2)),
    ] {
        let pids = pids_in(ns)?;
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            signal(pid, sig);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if pids_in(ns)?.is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(io::Error::other(format!(
        "processes {:?} still in namespace {ns} after SIGKILL",
        pids_in(ns)?
    )))
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; a PID that is gone
    // just gives ESRCH, which is what we want anyway.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Run a command to completion; not starting or a non-zero exit is an error
/// naming the command line and carrying its stderr.
fn run(program: &str, args: &[&str]) -> io::Result<Output> {
    let line = command_line(program, args);
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `{line}`: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pipe {
    Out,
    Err,
}

/// How a process ended, with everything it printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A process started in a namespace. Its stdout and stderr are read by two
/// threads as it runs, so it never blocks on a full pipe and a test can wait
/// for a line ("listening on ...") before going on.
#[derive(Debug)]
pub struct NsProcess {
    child: Child,
    line: String,
    rx: mpsc::Receiver<(Pipe, String)>,
    stdout: String,
    stderr: String,
    status: Option<ExitStatus>,
}

impl NsProcess {
    fn spawn(program: &str, args: &[&str]) -> io::Result<NsProcess> {
        let line = command_line(program, args);
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{line}`: {e}")))?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            forward_lines(out, Pipe::Out, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward_lines(err, Pipe::Err, tx);
        }
        Ok(NsProcess {
            child,
            line,
            rx,
            stdout: String::new(),
            stderr: String::new(),
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.line
    }

    fn take(&mut self, (pipe, line): (Pipe, String)) -> String {
        let buf = match pipe {
            Pipe::Out => &mut self.stdout,
            Pipe::Err => &mut self.stderr,
        };
        buf.push_str(&line);
        buf.push('\n');
        line
    }

    /// Wait until the process prints a line (on stdout or stderr) containing
    /// `needle`, and return it. An error if it exits first or `timeout`
    /// passes.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> io::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(item) => {
                    let line = self.take(item);
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "`{}` printed no line with {needle:?} within {timeout:?}; stderr: {}",
                            self.line,
                            self.stderr.trim()
                        ),
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    self.status = Some(status);
                    return Err(io::Error::other(format!(
                        "`{}` exited ({status}) before printing {needle:?}; stderr: {}",
                        self.line,
                        self.stderr.trim()
                    )));
                }
            }
        }
    }

    /// Wait for the process to exit by itself; kill it and fail if it has
    /// not within `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Finished> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("`{}` still running after {timeout:?}; killed", self.line),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.status = Some(status);
        self.finish(status)
    }

    /// SIGTERM, then wait up to `timeout` (SIGKILL and an error after that).
    pub fn stop(&mut self, timeout: Duration) -> io::Result<Finished> {
        if self.status.is_none() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                signal(pid, libc::SIGTERM);
            }
        }
        self.wait(timeout)
    }

    /// Collect what is left in the pipes. A grandchild may hold them open,
    /// so this waits a second at most for their end.
    fn finish(&mut self, status: ExitStatus) -> io::Result<Finished> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(item) => {
                    self.take(item);
                }
                Err(_) => break,
            }
        }
        Ok(Finished {
            status,
            stdout: std::mem::take(&mut self.stdout),
            stderr: std::mem::take(&mut self.stderr),
        })
    }

    fn kill(&mut self) {
        // Already gone is fine: all we want is that it is not running.
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.status = Some(status);
        }
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
        }
    }
}

fn forward_lines<R: Read + Send + 'static>(r: R, pipe: Pipe, tx: mpsc::Sender<(Pipe, String)>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send((pipe, line)).is_err() {
                break;
            }
        }
    });
}
