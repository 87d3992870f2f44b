//! Who is master and who is slave on a connection whose two ports are both
//! Modbus ports (`--ports`), where the ports cannot tell.
//!
//! Never by address order: an attacker who sources from port 502 with an
//! address lower than the PLC's would become the "server", and its
//! requests would be read as responses. Decided once, on the connection's
//! first segment that the shard tracks:
//! - a SYN: its sender is the client (a SYN-ACK: its sender is the server);
//! - data: a PDU that parses only as a request comes from the client, one
//!   that parses only as a response from the server; where both or neither
//!   do (an FC 6 write and its echo look alike), the first to speak is the
//!   client, as Modbus/TCP clients always speak first (and a one-way
//!   mirror of the attacker's side then still shows its writes).

use crate::decode::{tcp_flags, PacketMeta};
use crate::flow::Dir;
use crate::modbus::mbap::{Mbap, MBAP_LEN};
use crate::modbus::pdu::{parse_request, parse_response};

/// How the roles of a new connection were decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    Handshake,
    Content,
}

/// Whether the sender of this first segment is the client, and how that
/// was decided. `None`: the segment says nothing (no SYN, no payload).
pub fn sender_is_client(meta: &PacketMeta, payload: &[u8]) -> Option<(bool, Decided)> {
    if meta.flags & tcp_flags::SYN != 0 {
        let client = meta.flags & tcp_flags::ACK == 0;
        return Some((client, Decided::Handshake));
    }
    if payload.is_empty() {
        return None;
    }
    let by_shape = Mbap::parse(payload).and_then(|h| {
        let pdu = payload.get(MBAP_LEN..h.adu_len().min(payload.len()))?;
        match (parse_request(pdu).is_ok(), parse_response(pdu).is_ok()) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    });
    // Clients speak first.
    Some((by_shape.unwrap_or(true), Decided::Content))
}

/// The side of a provisional segment once the roles are known: whether
/// the connection's key is the provisional one or the swapped one.
pub fn swap_needed(provisional_dir: Dir, sender_is_client: bool) -> bool {
    (provisional_dir == Dir::ToServer) != sender_is_client
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn meta(flags: u8) -> PacketMeta {
        let ip = IpAddr::from([10, 0, 0, 1]);
        PacketMeta::bare(ip, 502, ip, 502, flags)
    }

    fn adu(pdu: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 1, 0, 0];
        v.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
        v.push(1);
        v.extend_from_slice(pdu);
        v
    }

    #[test]
    fn the_handshake_decides_first() {
        let syn = meta(tcp_flags::SYN);
        assert_eq!(
            sender_is_client(&syn, &[]),
            Some((true, Decided::Handshake))
        );
        let syn_ack = meta(tcp_flags::SYN | tcp_flags::ACK);
        assert_eq!(
            sender_is_client(&syn_ack, &[]),
            Some((false, Decided::Handshake))
        );
        assert_eq!(sender_is_client(&meta(tcp_flags::ACK), &[]), None);
    }

    #[test]
    fn the_pdu_shape_decides_then_the_first_speaker() {
        let data = meta(tcp_flags::ACK | tcp_flags::PSH);
        let read = adu(&[3, 0, 0, 0, 10]);
        assert_eq!(
            sender_is_client(&data, &read),
            Some((true, Decided::Content))
        );
        let answer = adu(&[3, 4, 0, 1, 0, 2]);
        assert_eq!(
            sender_is_client(&data, &answer),
            Some((false, Decided::Content))
        );
        // A write and its echo look alike: the first to speak is the client.
        let write = adu(&[6, 0, 10, 3, 231]);
        assert_eq!(
            sender_is_client(&data, &write),
            Some((true, Decided::Content))
        );
        assert!(swap_needed(Dir::ToClient, true));
        assert!(!swap_needed(Dir::ToServer, true));
        assert!(swap_needed(Dir::ToServer, false));
    }
}
