//! Where frames come from: capture files (pcap, pcapng) and, live, the
//! XDP program and its AF_XDP sockets.
//!
//! A source only yields frames. A capture file hands out [`FrameRef`]s,
//! offsets into one shared buffer, so that the dispatcher moves a few words
//! per frame instead of copying packet bytes; an AF_XDP socket lends each
//! frame for one call; standard input or a FIFO ([`CaptureStream`]) lends
//! each record of its buffer until the next. Where frames go is the
//! runtime's business.

mod pcap;
pub mod set;
pub mod stream;
pub mod xdp;

pub use pcap::{CaptureFile, FrameRef, Frames, SourceError};
pub use set::CaptureSet;
pub use stream::CaptureStream;
