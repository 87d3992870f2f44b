//! Where frames come from: capture files (pcap, pcapng).
//!
//! A source hands out [`FrameRef`]s, offsets into one shared buffer, so that the
//! dispatcher moves a few words per frame instead of copying packet bytes.

pub mod busy_poll;
pub mod live;
mod pcap;
pub mod xdp;

pub use pcap::{CaptureFile, FrameRef, Frames, SourceError};
