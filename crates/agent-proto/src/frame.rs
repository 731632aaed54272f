//! Framing: how messages are cut out of a byte stream.
//!
//! ```text
//! offset  size  field
//! 0       4     magic  F1 5E A6 01
//! 4       4     payload length, u32 little-endian, at most MAX_FRAME_PAYLOAD
//! 8       4     CRC-32 (IEEE) of bytes 0..8: a damaged length is caught at once
//! 12      4     CRC-32 (IEEE) of the payload
//! 16      n     payload (one postcard-encoded message)
//! ```
//!
//! The decoder never fails: bytes that do not start a valid frame are
//! skipped (and counted) until the next magic that does.

use crate::message::ProtoError;

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = [0xF1, 0x5E, 0xA6, 0x01];
/// Size of the frame header.
pub const HEADER_LEN: usize = 16;
/// Largest payload a frame may carry.
pub const MAX_FRAME_PAYLOAD: usize = 256 * 1024;

/// Wraps a payload in a frame.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, ProtoError> {
    if payload.len() > MAX_FRAME_PAYLOAD {
        return Err(ProtoError::FrameTooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let header_crc = crc32fast::hash(&out[..8]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Cuts frames out of a stream fed in pieces of any size.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    start: usize,
    discarded: u64,
    corrupt: u64,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the transport.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buffer.len() {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete, intact frame's payload, if one has arrived.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            let pending = &self.buffer[self.start..];
            let Some(at) = find_magic(pending) else {
                // Keep a possible partial magic at the end; the rest is noise.
                let keep = partial_magic_suffix(pending);
                self.skip(pending.len() - keep, false);
                return None;
            };
            if at > 0 {
                self.skip(at, false);
                continue;
            }
            if pending.len() < HEADER_LEN {
                return None;
            }
            let length = u32::from_le_bytes(pending[4..8].try_into().expect("4 bytes")) as usize;
            let header_crc = u32::from_le_bytes(pending[8..12].try_into().expect("4 bytes"));
            if crc32fast::hash(&pending[..8]) != header_crc || length > MAX_FRAME_PAYLOAD {
                self.skip(1, true);
                continue;
            }
            if pending.len() < HEADER_LEN + length {
                return None;
            }
            let payload_crc = u32::from_le_bytes(pending[12..16].try_into().expect("4 bytes"));
            let payload = &pending[HEADER_LEN..HEADER_LEN + length];
            if crc32fast::hash(payload) != payload_crc {
                self.skip(1, true);
                continue;
            }
            let payload = payload.to_vec();
            self.start += HEADER_LEN + length;
            return Some(payload);
        }
    }

    fn skip(&mut self, n: usize, corrupt: bool) {
        self.start += n;
        self.discarded += n as u64;
        if corrupt {
            self.corrupt += 1;
        }
    }

    /// Bytes skipped so far because they were not part of an intact frame.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded
    }

    /// Frames dropped so far because a checksum or the length was wrong.
    pub fn corrupt_frames(&self) -> u64 {
        self.corrupt
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// How many bytes at the end of `bytes` could be the start of a magic.
fn partial_magic_suffix(bytes: &[u8]) -> usize {
    (1..MAGIC.len())
        .rev()
        .find(|&n| n <= bytes.len() && bytes[bytes.len() - n..] == MAGIC[..n])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(decoder: &mut FrameDecoder) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| decoder.next_frame()).collect()
    }

    #[test]
    fn round_trip_in_any_split() {
        let mut stream = encode(b"hello").unwrap();
        stream.extend(encode(b"").unwrap());
        stream.extend(encode(&[7u8; 1000]).unwrap());
        for piece in [1, 3, 16, 17, 1000, stream.len()] {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                d.feed(chunk);
                got.extend(frames(&mut d));
            }
            assert_eq!(
                got,
                vec![b"hello".to_vec(), Vec::new(), vec![7u8; 1000]],
                "piece {piece}"
            );
            assert_eq!(d.discarded_bytes(), 0);
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn kernel_noise_before_and_between_frames_is_skipped() {
        let mut stream = b"[    0.123] virtio_mmio: registered \xF1\x5E garbage\r\n".to_vec();
        stream.extend(encode(b"one").unwrap());
        stream.extend(b"more noise \xF1\x5E\xA6\x01 fake magic".iter());
        stream.extend(encode(b"two").unwrap());
        let mut d = FrameDecoder::new();
        d.feed(&stream);
        assert_eq!(frames(&mut d), vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(d.discarded_bytes() > 40);
    }

    #[test]
    fn damaged_frames_are_dropped_and_the_next_one_is_found() {
        let mut bad_payload = encode(b"damaged").unwrap();
        let last = bad_payload.len() - 1;
        bad_payload[last] ^= 0xFF;
        let mut bad_length = encode(b"length").unwrap();
        bad_length[5] ^= 0x40;
        let mut stream = bad_payload;
        stream.extend(bad_length);
        stream.extend(encode(b"intact").unwrap());
        let mut d = FrameDecoder::new();
        d.feed(&stream);
        assert_eq!(frames(&mut d), vec![b"intact".to_vec()]);
        assert_eq!(d.corrupt_frames(), 2);
    }

    #[test]
    fn oversize_frames_are_refused_both_ways() {
        assert!(matches!(
            encode(&vec![0; MAX_FRAME_PAYLOAD + 1]),
            Err(ProtoError::FrameTooLarge(_))
        ));
        let mut forged = MAGIC.to_vec();
        forged.extend(((MAX_FRAME_PAYLOAD + 1) as u32).to_le_bytes());
        let crc = crc32fast::hash(&forged);
        forged.extend(crc.to_le_bytes());
        forged.extend([0; 4]);
        forged.extend(encode(b"after").unwrap());
        let mut d = FrameDecoder::new();
        d.feed(&forged);
        assert_eq!(frames(&mut d), vec![b"after".to_vec()]);
    }

    #[test]
    fn noise_alone_does_not_grow_the_buffer() {
        let mut d = FrameDecoder::new();
        for _ in 0..1000 {
            d.feed(&[b'x'; 1000]);
            assert!(d.next_frame().is_none());
            assert!(d.buffered() < MAGIC.len());
        }
        assert_eq!(d.discarded_bytes(), 1_000_000);
    }
}
