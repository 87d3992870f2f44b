//! The embedded eBPF object: loading it, filling its port map, reading its
//! counters, and turning aya's errors into one line.

use std::error::Error as StdError;
use std::io;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, XskMap};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};

use super::{XdpCounters, XdpError};
use modbus_common::{
    XdpStats, MAP_COUNTERS, MAP_PORTS, MAP_XSKS, MAX_PORTS, PORT_ENABLED, PROGRAM_NAME,
};

/// The object built by build.rs (aya-build), 8-byte aligned for the ELF
/// parser; empty in a build without it (AYA_BUILD_SKIP=1, or no bpf-linker).
#[cfg(modbus_xdp)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/modbus-xdp"));
#[cfg(not(modbus_xdp))]
static OBJECT: &[u8] = &[];

/// Environment variable naming the level of the program's debug log
/// (`off`, `error`, `warn`, `info`, `debug`, `trace`); default off.
pub const LOG_ENV: &str = "MODBUS_XDP_LOG";

pub(super) fn object() -> &'static [u8] {
    OBJECT
}

/// The `AYA_LOG_LEVEL` to load the program with, from [`LOG_ENV`].
pub(super) fn log_level() -> u8 {
    let Ok(v) = std::env::var(LOG_ENV) else {
        return 0;
    };
    match v.to_ascii_lowercase().as_str() {
        "error" => aya_log::Level::Error as u8,
        "warn" => aya_log::Level::Warn as u8,
        "info" => aya_log::Level::Info as u8,
        "debug" => aya_log::Level::Debug as u8,
        "trace" | "all" => aya_log::Level::Trace as u8,
        _ => 0,
    }
}

/// Load the object and its program (the verifier runs here), with `ports`
/// in the port map. `iface` only names the interface in errors.
pub(super) fn load(ports: &[u16], iface: Option<&str>, log_level: u8) -> Result<Ebpf, XdpError> {
    if OBJECT.is_empty() {
        return Err(XdpError::Unavailable);
    }
    let mut wanted: Vec<u16> = ports.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.len() > MAX_PORTS as usize {
        return Err(XdpError::TooManyPorts {
            count: wanted.len(),
            max: MAX_PORTS as usize,
        });
    }
    let mut ebpf = EbpfLoader::new()
        .override_global("AYA_LOG_LEVEL", &log_level, false)
        .load(OBJECT)
        .map_err(|e| load_error(iface, &e))?;
    {
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| internal(iface, format!("the object has no program {PROGRAM_NAME}")))?
            .try_into()
            .map_err(|e| load_error(iface, &e))?;
        program.load().map_err(|e| load_error(iface, &e))?;
    }
    let mut map: BpfHashMap<&mut MapData, u16, u8> = ebpf
        .map_mut(MAP_PORTS)
        .ok_or_else(|| internal(iface, format!("the object has no map {MAP_PORTS}")))?
        .try_into()
        .map_err(|e| load_error(iface, &e))?;
    for port in wanted {
        map.insert(port, PORT_ENABLED, 0)
            .map_err(|e| load_error(iface, &e))?;
    }
    Ok(ebpf)
}

/// Put `fd` into the XskMap at `queue`.
pub(super) fn set_socket(
    ebpf: &mut Ebpf,
    iface: &str,
    queue: u32,
    fd: std::os::fd::RawFd,
) -> Result<(), XdpError> {
    let socket_error = |detail: String| XdpError::Socket {
        iface: iface.to_string(),
        queue,
        detail,
    };
    let mut map: XskMap<&mut MapData> = ebpf
        .map_mut(MAP_XSKS)
        .ok_or_else(|| socket_error(format!("the object has no map {MAP_XSKS}")))?
        .try_into()
        .map_err(|e| socket_error(describe(&e)))?;
    if queue >= map.len() {
        return Err(socket_error(format!(
            "the program handles RX queues 0 to {} only",
            map.len().saturating_sub(1)
        )));
    }
    map.set(queue, fd, 0)
        .map_err(|e| socket_error(describe(&e)))
}

/// The per-CPU counter blocks summed.
pub(super) fn counters(ebpf: &Ebpf, iface: Option<&str>) -> Result<XdpCounters, XdpError> {
    let err = |detail: String| XdpError::Counters {
        iface: iface.map(str::to_string),
        detail,
    };
    let map: PerCpuArray<&MapData, XdpStats> = ebpf
        .map(MAP_COUNTERS)
        .ok_or_else(|| err(format!("the object has no map {MAP_COUNTERS}")))?
        .try_into()
        .map_err(|e| err(describe(&e)))?;
    let per_cpu = map.get(&0, 0).map_err(|e| err(describe(&e)))?;
    let mut sum = XdpCounters::default();
    for s in per_cpu.iter() {
        sum.seen += s.seen;
        sum.redirected += s.redirected;
        sum.redirect_failed += s.redirect_failed;
        sum.passed += s.passed;
        sum.malformed += s.malformed;
    }
    Ok(sum)
}

fn internal(iface: Option<&str>, detail: String) -> XdpError {
    XdpError::Load {
        iface: iface.map(str::to_string),
        detail,
        verifier_log: String::new(),
    }
}

/// A load-time failure: a permission problem, the verifier, or anything else.
fn load_error(iface: Option<&str>, e: &(dyn StdError + 'static)) -> XdpError {
    let iface = iface.map(str::to_string);
    if is_permission(e) {
        return XdpError::Permission {
            iface,
            detail: describe(e),
        };
    }
    let verifier_log = verifier_log(e).unwrap_or_default();
    let mut detail = describe_without_log(e);
    if let Some(last) = verifier_log.lines().map(str::trim).rev().find(|l| {
        !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time")
    }) {
        detail = format!("the verifier rejected it: {last} ({detail})");
    }
    XdpError::Load {
        iface,
        detail,
        verifier_log,
    }
}

/// EPERM/EACCES anywhere in the chain.
pub(super) fn is_permission(e: &(dyn StdError + 'static)) -> bool {
    errno(e).is_some_and(|n| n == libc::EPERM || n == libc::EACCES)
}

/// The errno of the first `io::Error` in the chain.
pub(super) fn errno(e: &(dyn StdError + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            if let Some(n) = io.raw_os_error() {
                return Some(n);
            }
        }
        if let Some(aya::programs::ProgramError::LoadError { io_error, .. }) =
            c.downcast_ref::<aya::programs::ProgramError>()
        {
            return io_error.raw_os_error();
        }
        cur = c.source();
    }
    None
}

/// The verifier's log, if the chain has a program load error.
fn verifier_log(e: &(dyn StdError + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(aya::programs::ProgramError::LoadError { verifier_log, .. }) =
            c.downcast_ref::<aya::programs::ProgramError>()
        {
            return Some(verifier_log.to_string());
        }
        cur = c.source();
    }
    None
}

/// Like [`describe`], but a program load error is told without the
/// verifier's (multi-line) log.
fn describe_without_log(e: &(dyn StdError + 'static)) -> String {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(aya::programs::ProgramError::LoadError { io_error, .. }) =
            c.downcast_ref::<aya::programs::ProgramError>()
        {
            return format!("BPF_PROG_LOAD: {io_error}");
        }
        cur = c.source();
    }
    describe(e)
}

/// The error and its sources on one line, each message once.
pub(super) fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !msg.is_empty() && !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = c.source();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}
