//! The XDP program's debug log (aya-log), printed on stderr.
//!
//! Off unless `MODBUS_XDP_LOG` names a level: the program is then loaded
//! with that `AYA_LOG_LEVEL` and a thread copies its records from the
//! `AYA_LOGS` ring buffer to stderr until the program is dropped.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Prints aya-log records as `xdp: LEVEL message`.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!("xdp: {} {}", record.level(), record.args());
    }

    fn flush(&self) {}
}

/// The thread copying records; stopped and joined on drop.
pub(super) struct LogPump {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl LogPump {
    /// Start copying the records of the loaded program `program_id`.
    pub(super) fn start(program_id: u32) -> Option<LogPump> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("xdp-log".into())
            .spawn(move || {
                let mut logger =
                    match aya_log::EbpfLogger::init_from_id_with_logger(program_id, StderrLog) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("xdp: no debug log: {e}");
                            return;
                        }
                    };
                loop {
                    let mut pfd = libc::pollfd {
                        fd: logger.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd; a timeout so `stop` is seen.
                    unsafe { libc::poll(&mut pfd, 1, 100) };
                    logger.flush();
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                }
            })
            .ok()?;
        Some(LogPump {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for LogPump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
