//! Dropping privileges once live capture is set up.
//!
//! Once the XDP program is attached and the AF_XDP sockets are bound,
//! nothing needs a capability: receiving, the fill ring, XDP_STATISTICS and
//! the program's counters all go through descriptors already open, and
//! detaching closes the program's BPF link.

use std::io::Write;

use serde::{Deserialize, Serialize};

/// What the live sensor holds once setup is done (report `capture.privileges`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privileges {
    /// Capabilities still held (names): none, normally. CAP_NET_ADMIN on
    /// kernels before 5.9 (no BPF link for XDP: detaching needs netlink);
    /// CAP_DAC_OVERRIDE when the outputs cannot be written without it.
    pub kept: Vec<String>,
    /// The effective set after the drop, as `CapEff` in /proc/PID/status.
    pub effective: String,
    /// The permitted set after the drop (`CapPrm`).
    pub permitted: String,
    /// Whether the bounding set could be emptied too (needs CAP_SETPCAP,
    /// which a root process has and a systemd unit with a minimal
    /// capability set does not: there the unit's bounding set applies).
    pub bounding_set_cleared: bool,
    /// PR_SET_NO_NEW_PRIVS: nothing executed later can gain privileges.
    pub no_new_privs: bool,
}

/// `capget`/`capset` (linux/capability.h, version 3: two 32-bit words).
mod raw {
    pub const DAC_OVERRIDE: u32 = 1;
    pub const SETPCAP: u32 = 8;
    pub const NET_ADMIN: u32 = 12;
    const VERSION_3: u32 = 0x2008_0522;

    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }

    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Data {
        pub effective: u32,
        pub permitted: u32,
        pub inheritable: u32,
    }

    /// The calling thread's sets (word 0: capabilities 0-31, word 1: 32-63).
    pub fn get() -> std::io::Result<[Data; 2]> {
        let mut h = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut d = [Data::default(); 2];
        // SAFETY: a version-3 header and the two data words it asks for.
        let r = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(d)
    }

    /// Set the calling thread's sets (lowering never needs a privilege).
    pub fn set(d: &[Data; 2]) -> std::io::Result<()> {
        let mut h = Header {
            version: VERSION_3,
            pid: 0,
        };
        // SAFETY: a version-3 header and two data words, read by the kernel.
        let r = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn has(d: &[Data; 2], cap: u32, f: fn(&Data) -> u32) -> bool {
        let word = &d[(cap / 32) as usize];
        f(word) & (1 << (cap % 32)) != 0
    }

    pub fn mask64(d: &[Data; 2], f: fn(&Data) -> u32) -> u64 {
        u64::from(f(&d[0])) | (u64::from(f(&d[1])) << 32)
    }
}

/// Whether detaching the XDP program later needs CAP_NET_ADMIN: only where
/// the kernel has no BPF links for XDP (before 5.9) and aya attached it
/// through netlink; with a link, closing its descriptor detaches.
fn detach_needs_net_admin() -> bool {
    // SAFETY: an all-zero utsname is valid; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return true;
    }
    // SAFETY: uname NUL-terminates the release.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    let mut parts = release
        .to_str()
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => (major, minor) < (5, 9),
        _ => true,
    }
}

/// Why the capabilities could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum DropError<E: std::error::Error + 'static> {
    /// The caller's check failed, even with the capabilities it could keep.
    #[error(transparent)]
    Check(E),
    /// capget/capset failed.
    #[error("{call}: {source}")]
    Caps {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Drop every capability of the calling thread once the XDP program is
/// attached and the AF_XDP sockets are bound: nothing after needs one
/// (receiving, the fill ring, XDP_STATISTICS and the program's counters all
/// go through descriptors already open; detaching closes the BPF link).
///
/// `check` runs with no capability in effect and says whether what the
/// process must still do works (writing its outputs). If it fails and the
/// process has CAP_DAC_OVERRIDE (root writing into a directory it does not
/// own), that one is kept, with a warning, when it makes `check` pass.
///
/// Also sets no-new-privs, clears the ambient set and, where it can (with
/// CAP_SETPCAP), the bounding set. Call it before starting other threads:
/// capabilities are per thread, and threads started later inherit the
/// emptied sets.
pub fn drop_capabilities<E: std::error::Error + 'static>(
    check: &dyn Fn() -> Result<(), E>,
) -> Result<Privileges, DropError<E>> {
    let caps_err = |call: &'static str, source: std::io::Error| DropError::Caps { call, source };
    let before = raw::get().map_err(|e| caps_err("capget", e))?;
    let mut keep: Vec<(u32, &'static str)> = Vec::new();
    if detach_needs_net_admin() {
        keep.push((raw::NET_ADMIN, "CAP_NET_ADMIN"));
    }
    // SAFETY: prctl with integer arguments only.
    let no_new_privs = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0;
    // Ambient capabilities would survive an exec; there is none to do, but
    // leave nothing behind. (EINVAL before Linux 4.3: nothing to clear.)
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    // The bounding set only limits what an exec could gain: empty it whole
    // (what is kept below stays in the permitted set).
    let mut bounding_set_cleared = false;
    if raw::has(&before, raw::SETPCAP, |d| d.effective) {
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(63);
        bounding_set_cleared = (0..=last).all(|c| {
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) == 0 }
        });
    }
    let with = |keep: &[(u32, &'static str)]| {
        let mut d = [raw::Data::default(); 2];
        for &(cap, _) in keep {
            let bit = 1u32 << (cap % 32);
            let (b, a) = (&before[(cap / 32) as usize], &mut d[(cap / 32) as usize]);
            a.effective |= b.permitted & bit;
            a.permitted |= b.permitted & bit;
        }
        d
    };
    // Nothing in effect while checking (the permitted set still holds all).
    let mut lowered = before;
    lowered.iter_mut().for_each(|d| d.effective = 0);
    raw::set(&lowered).map_err(|e| caps_err("capset", e))?;
    if let Err(e) = check() {
        if !raw::has(&before, raw::DAC_OVERRIDE, |d| d.permitted) {
            return Err(DropError::Check(e));
        }
        keep.push((raw::DAC_OVERRIDE, "CAP_DAC_OVERRIDE"));
        let mut trial = with(&keep);
        for (t, b) in trial.iter_mut().zip(before.iter()) {
            t.permitted = b.permitted;
        }
        raw::set(&trial).map_err(|e| caps_err("capset", e))?;
        check().map_err(DropError::Check)?;
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        let _ = writeln!(
            std::io::stderr(),
            "modbus-detect: warning: keeping CAP_DAC_OVERRIDE: uid {uid} cannot write the outputs without it ({e}); give their directory to the sensor's user to run with no capability at all"
        );
    }
    raw::set(&with(&keep)).map_err(|e| caps_err("capset", e))?;
    let now = raw::get().map_err(|e| caps_err("capget", e))?;
    Ok(Privileges {
        kept: keep
            .iter()
            .filter(|(c, _)| raw::has(&now, *c, |d| d.effective))
            .map(|(_, n)| n.to_string())
            .collect(),
        effective: format!("{:016x}", raw::mask64(&now, |d| d.effective)),
        permitted: format!("{:016x}", raw::mask64(&now, |d| d.permitted)),
        bounding_set_cleared,
        no_new_privs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Capabilities are per thread: this runs the drop in a thread of its
    /// own, which leaves the test process as it was.
    #[test]
    fn capabilities_are_dropped_and_dac_override_kept_only_when_needed() {
        let in_thread = |check: fn() -> std::io::Result<()>| {
            std::thread::spawn(move || {
                let r = drop_capabilities(&check);
                (r, raw::get().unwrap())
            })
            .join()
            .unwrap()
        };
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let (r, now) = in_thread(|| Ok(()));
        let p = r.unwrap_or_else(|e| panic!("{e:?}"));
        // Nothing left, but CAP_NET_ADMIN where detaching needs netlink.
        let kept: u64 = if root && detach_needs_net_admin() {
            1 << raw::NET_ADMIN
        } else {
            0
        };
        assert!(p.no_new_privs);
        assert_eq!(raw::mask64(&now, |d| d.effective), kept);
        assert_eq!(raw::mask64(&now, |d| d.permitted), kept);
        assert_eq!(raw::mask64(&now, |d| d.inheritable), 0);
        assert_eq!(p.effective, format!("{kept:016x}"));
        assert_eq!(p.kept.len(), kept.count_ones() as usize, "{p:?}");
        assert_eq!(p.bounding_set_cleared, root);
        // Outputs writable only with CAP_DAC_OVERRIDE: kept, with it alone.
        fn needs_dac() -> std::io::Result<()> {
            let d = raw::get()?;
            if raw::has(&d, raw::DAC_OVERRIDE, |d| d.effective) {
                Ok(())
            } else {
                Err(std::io::ErrorKind::PermissionDenied.into())
            }
        }
        let (r, now) = in_thread(needs_dac);
        if root {
            let p = r.unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(p.kept.last().map(String::as_str), Some("CAP_DAC_OVERRIDE"));
            let with_dac = kept | 1 << raw::DAC_OVERRIDE;
            assert_eq!(raw::mask64(&now, |d| d.effective), with_dac);
            assert_eq!(raw::mask64(&now, |d| d.permitted), with_dac);
        } else {
            assert!(matches!(r, Err(DropError::Check(_))), "{r:?}");
        }
    }
}
