//! Deterministic generator of realistic Modbus/TCP captures.
//!
//! Used by the integration tests (captures with known attacks whose alerts
//! they assert), by the benchmarks (multi-million-frame captures) and by
//! `cargo xtask gen-pcap`. It writes every byte itself (Ethernet II, IPv4
//! without options, TCP, MBAP, PDU) and shares no code with the detector's
//! decoder: an independent encoder catches misreadings of the wire format
//! that a shared one would hide.
//!
//! Two levels:
//! - hand-written scenarios: [`Conversation`] keeps TCP sequence numbers
//!   right while a test sends ADUs built with [`adu`] and the PDU builders;
//! - bulk traffic: [`generate`] simulates masters polling slaves, driven by
//!   a [`SynthConfig`] and a seeded PRNG, so the same config always yields
//!   byte-identical output; the [`SynthSummary`] says what it contains.
//!
//! # Bulk traffic
//!
//! Masters 10.1.0.x poll slaves 10.2.0.x (unit ids 1..=3) with FC 3 / FC 4
//! reads of 1..=20 registers at addresses 0..=99; values stay within
//! 0..=1000 and drift slowly. The first half of the masters are writers:
//! 2 % of their requests are FC 6 / FC 16 writes (echo responses). 0.5 % of
//! reads get exception 2. Responses follow 0.2-2 ms after the request.
//! Every connection starts with a handshake and never closes; one in 16
//! starts its sequence numbers just below 2^32. Short frames are padded to
//! the 60-byte Ethernet minimum, as a capture from a SPAN port would be.
//!
//! # Attacks (`SynthConfig::attacks`)
//!
//! All against slave 10.2.0.1, unit 1, 1024 attack requests in all:
//!
//! - the rogue master [`ROGUE_MASTER`] (10.9.9.9) connects from port 51000
//!   and sends 20 FC 3 reads about 10 ms apart, an FC 43 / MEI 14 device-id
//!   request, an FC 8 sub-function 1 restart, then 1000 back-to-back FC 3
//!   reads 100 us apart, and closes; every request is answered;
//! - the rogue then connects from port 51001, sends one ADU (an FC 3 read)
//!   whose MBAP protocol id is 7, gets no answer, and closes;
//! - a non-writer master that polls 10.2.0.1 sends one FC 6 write (register
//!   42 := 999) on its existing connection, answered with the echo; if no
//!   non-writer polls that slave, the last master connects from port 49151
//!   for that write alone. [`SynthSummary::unauthorized_writer`] names it.
//!
//! They start at 10 % (write), 20 % (rogue) and 30 % (malformed) of the
//! capture's length as estimated from the frame budget, so at the default
//! rates all of them fit in any capture of 20 000 frames or more;
//! [`SynthSummary::attack_requests`] counts only those that made it in.

mod attacks;
mod conversation;
mod frames;
mod link;
mod pcap_writer;
mod pdu;
mod plan;
mod slaves;
mod traffic;

#[cfg(test)]
mod tests;

pub use attacks::ROGUE_MASTER;
pub use conversation::{Conversation, HANDSHAKE_GAP_NS};
pub use frames::{MAX_TCP_PAYLOAD, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG};
pub use pcap_writer::PcapWriter;
pub use pdu::{
    adu, diagnostics, exception, mask_write_request, read_bits_response, read_device_id_request,
    read_device_id_response, read_registers_response, read_request, read_write_multiple_request,
    report_server_id_request, write_multiple_coils_request, write_multiple_registers_request,
    write_multiple_registers_response, write_single_coil, write_single_register,
};
pub use traffic::{generate, master_addr, slave_addr, SynthConfig, SynthSummary};
