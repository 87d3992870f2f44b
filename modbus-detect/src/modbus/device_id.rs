//! What a device says about itself: the objects of a Read Device
//! Identification response (FC 43, MEI type 14) and the data of a Report
//! Server ID response (FC 17).

/// MEI type of Read Device Identification.
pub const MEI_READ_DEVICE_ID: u8 = 14;

/// The name of a basic or regular object (Modbus Application Protocol
/// v1.1b3, 6.21); `None` for reserved and vendor-private objects.
pub fn object_name(id: u8) -> Option<&'static str> {
    Some(match id {
        0 => "vendor_name",
        1 => "product_code",
        2 => "major_minor_revision",
        3 => "vendor_url",
        4 => "product_name",
        5 => "model_name",
        6 => "user_application_name",
        _ => return None,
    })
}

/// The (object id, value) pairs of a Read Device Identification response
/// body (the bytes after the MEI type): read device id code, conformity
/// level, more follows, next object id, number of objects, then each
/// object as id, length, value. Objects cut short by the end of the PDU are
/// left out; a count that claims more objects than the bytes hold stops at
/// the bytes.
pub fn objects(body: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let (count, mut rest) = match body {
        [_code, _conformity, _more, _next, count, rest @ ..] => (*count, rest),
        _ => (0, &[][..]),
    };
    (0..count).map_while(move |_| {
        let (&id, after) = rest.split_first()?;
        let (&len, after) = after.split_first()?;
        let value = after.get(..usize::from(len))?;
        rest = &after[usize::from(len)..];
        Some((id, value))
    })
}

/// A value as text for reports: valid UTF-8 kept, anything else replaced,
/// and cut at `max` bytes (on a character boundary). Escaping for a
/// terminal, a page or a spreadsheet is the output's job.
pub fn text(value: &[u8], max: usize) -> String {
    let cut = &value[..value.len().min(max)];
    let s = match std::str::from_utf8(cut) {
        Ok(s) => s,
        // Cut inside a character: keep the whole characters before it.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&cut[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => {
            return String::from_utf8_lossy(cut)
                .trim_end_matches('\0')
                .to_string()
        }
    };
    s.trim_end_matches('\0').to_string()
}

/// The readable part of a Report Server ID answer: its bytes as text with
/// the binary fields (server id, run indicator: device-specific, often
/// 0x00 and 0xFF) and control characters left out.
pub fn server_id_text(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .chars()
        .filter(|c| !c.is_control() && *c != char::REPLACEMENT_CHARACTER)
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Read Device Identification answer with three basic objects.
    #[test]
    fn reads_the_objects_of_a_response() {
        let mut body = vec![1, 1, 0, 0, 3];
        for (id, v) in [(0u8, &b"Schneider"[..]), (1, b"BMX P34"), (2, b"v2.6")] {
            body.push(id);
            body.push(v.len() as u8);
            body.extend_from_slice(v);
        }
        let got: Vec<(u8, String)> = objects(&body).map(|(i, v)| (i, text(v, 64))).collect();
        assert_eq!(
            got,
            vec![
                (0, "Schneider".into()),
                (1, "BMX P34".into()),
                (2, "v2.6".into())
            ]
        );
        assert_eq!(object_name(2), Some("major_minor_revision"));
        assert_eq!(object_name(0x80), None);
    }

    #[test]
    fn stops_at_the_bytes_whatever_the_count_says() {
        // Claims 5 objects; the second is cut short.
        let body = [1, 1, 0, 0, 5, 0, 2, b'A', b'B', 1, 9, b'x'];
        let got: Vec<(u8, &[u8])> = objects(&body).collect();
        assert_eq!(got, vec![(0, &b"AB"[..])]);
        assert_eq!(objects(&[1, 2]).count(), 0);
    }

    #[test]
    fn text_is_bounded_and_lossy() {
        assert_eq!(text(b"abc\0\0", 64), "abc");
        assert_eq!(text(&[0xff, b'a'], 64), "\u{fffd}a");
        assert_eq!(text("éé".as_bytes(), 3), "é");
        assert_eq!(text(b"<script>\x1b[31m", 64), "<script>\x1b[31m");
        assert_eq!(text("aé".as_bytes(), 2), "a", "no half character");
    }

    #[test]
    fn server_id_text_keeps_what_reads() {
        // Quickdraw part 1, a Wingpath simulator's FC 17 answer.
        let data = b"\x00\xffWingpath Limited";
        assert_eq!(server_id_text(data), "Wingpath Limited");
    }
}
