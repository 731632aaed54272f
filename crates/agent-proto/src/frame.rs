//! Framing over a plain byte stream: `MAGIC | len u32 LE | crc32(payload) u32 LE | payload`.
//!
//! The decoder skips garbage (for example kernel messages on a serial line) by searching for the
//! magic marker, and drops frames whose length is over [`MAX_PAYLOAD`] or whose checksum fails,
//! resynchronising on the next marker.

use thiserror::Error;

/// Marker that starts every frame.
pub const MAGIC: [u8; 4] = [0xF1, 0x7E, b'A', b'G'];
/// Bytes before the payload: magic, length, checksum.
pub const HEADER_LEN: usize = 12;
/// Largest payload a frame may carry (bounds memory on both sides).
pub const MAX_PAYLOAD: usize = 256 * 1024;

/// Errors raised when building a frame.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    Oversize {
        /// Payload length that was refused.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// CRC-32 lookup table (IEEE, reflected, polynomial 0xEDB88320), built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE, reflected, polynomial 0xEDB88320) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc = (crc >> 8) ^ CRC_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize];
    }
    !crc
}

/// Builds one frame around `payload`.
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::Oversize {
            len: payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Incremental frame decoder with resynchronisation; its buffer never exceeds one frame plus
/// the bytes pushed in a single call.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    skipped_bytes: u64,
    bad_checksums: u64,
    oversize_frames: u64,
}

impl FrameDecoder {
    /// Creates an empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes discarded while searching for a frame marker.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_bytes
    }

    /// Frames dropped because their checksum did not match.
    pub fn bad_checksums(&self) -> u64 {
        self.bad_checksums
    }

    /// Frames dropped because their announced length was over [`MAX_PAYLOAD`].
    pub fn oversize_frames(&self) -> u64 {
        self.oversize_frames
    }

    /// Returns the next complete, valid payload, or `None` when more bytes are needed.
    pub fn next_payload(&mut self) -> Option<Vec<u8>> {
        loop {
            self.align_to_magic();
            if self.buffer.len() < HEADER_LEN {
                return None;
            }
            let len = u32::from_le_bytes(self.buffer[4..8].try_into().expect("4 bytes")) as usize;
            if len > MAX_PAYLOAD {
                self.oversize_frames += 1;
                self.discard(1);
                continue;
            }
            if self.buffer.len() < HEADER_LEN + len {
                return None;
            }
            let expected = u32::from_le_bytes(self.buffer[8..12].try_into().expect("4 bytes"));
            let payload = &self.buffer[HEADER_LEN..HEADER_LEN + len];
            if crc32(payload) != expected {
                self.bad_checksums += 1;
                self.discard(1);
                continue;
            }
            let payload = payload.to_vec();
            self.buffer.drain(..HEADER_LEN + len);
            return Some(payload);
        }
    }

    fn discard(&mut self, count: usize) {
        self.skipped_bytes += count as u64;
        self.buffer.drain(..count);
    }

    /// Drops bytes before the first possible marker start (keeping a partial marker at the end).
    fn align_to_magic(&mut self) {
        let start = (0..self.buffer.len())
            .find(|&i| {
                let rest = &self.buffer[i..];
                let n = rest.len().min(MAGIC.len());
                rest[..n] == MAGIC[..n]
            })
            .unwrap_or(self.buffer.len());
        if start > 0 {
            self.discard(start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trip_split_across_pushes() {
        let frame = encode_frame(b"hello world").unwrap();
        let mut decoder = FrameDecoder::new();
        for byte in &frame {
            assert_eq!(decoder.next_payload(), None);
            decoder.push(std::slice::from_ref(byte));
        }
        assert_eq!(decoder.next_payload().as_deref(), Some(&b"hello world"[..]));
        assert_eq!(decoder.next_payload(), None);
    }

    #[test]
    fn resyncs_after_leading_garbage() {
        let mut decoder = FrameDecoder::new();
        decoder.push(b"[    0.000000] Linux version 6.1 \xF1\x7E noise\r\n");
        decoder.push(&encode_frame(b"first").unwrap());
        decoder.push(b"more garbage");
        decoder.push(&encode_frame(b"second").unwrap());
        assert_eq!(decoder.next_payload().as_deref(), Some(&b"first"[..]));
        assert_eq!(decoder.next_payload().as_deref(), Some(&b"second"[..]));
        assert!(decoder.skipped_bytes() > 40);
    }

    #[test]
    fn bad_checksum_drops_frame_and_keeps_next() {
        let mut corrupt = encode_frame(b"payload").unwrap();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xFF;
        let mut decoder = FrameDecoder::new();
        decoder.push(&corrupt);
        decoder.push(&encode_frame(b"good").unwrap());
        assert_eq!(decoder.next_payload().as_deref(), Some(&b"good"[..]));
        assert_eq!(decoder.bad_checksums(), 1);
    }

    #[test]
    fn oversize_frames_are_refused_both_ways() {
        let big = vec![0u8; MAX_PAYLOAD + 1];
        assert_eq!(
            encode_frame(&big),
            Err(FrameError::Oversize {
                len: MAX_PAYLOAD + 1,
                max: MAX_PAYLOAD
            })
        );
        let mut decoder = FrameDecoder::new();
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        decoder.push(&header);
        decoder.push(&encode_frame(b"after").unwrap());
        assert_eq!(decoder.next_payload().as_deref(), Some(&b"after"[..]));
        assert_eq!(decoder.oversize_frames(), 1);
    }

    #[test]
    fn maximum_payload_is_accepted() {
        let max = vec![7u8; MAX_PAYLOAD];
        let mut decoder = FrameDecoder::new();
        decoder.push(&encode_frame(&max).unwrap());
        assert_eq!(decoder.next_payload().map(|p| p.len()), Some(MAX_PAYLOAD));
    }
}
