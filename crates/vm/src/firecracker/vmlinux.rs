//! Turning a compressed x86 `bzImage` into the uncompressed ELF `vmlinux`
//! that released Firecracker versions boot.
//!
//! A bzImage starts with the real-mode setup code; its boot protocol header
//! (at offset 0x1f1) says how many 512-byte setup sectors precede the
//! protected-mode part and, from protocol 2.08 on, where inside that part the
//! compressed kernel (`payload_offset`, `payload_length`) lies. The payload is
//! the ELF vmlinux compressed with the build's `CONFIG_KERNEL_*` choice.
//! Debian's kernels (6.1 cloud included) use LZ4 in the legacy frame format;
//! gzip is also understood. Other compressions are reported by name.

use std::io::Read;

/// Errors extracting a vmlinux.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmlinuxError {
    /// The input has no valid x86 boot protocol header.
    #[error("not a bzImage: {0}")]
    NotBzImage(String),
    /// The payload uses a compression this code does not decompress.
    #[error("the kernel payload is {0}-compressed, which is not supported (LZ4 and gzip are)")]
    UnsupportedCompression(&'static str),
    /// The compressed stream is damaged.
    #[error("the {compression} payload cannot be decompressed: {reason}")]
    Corrupt {
        /// The compression.
        compression: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The decompressed payload is not an ELF file.
    #[error("the decompressed payload is not an ELF image")]
    NotElf,
}

/// The four bytes every ELF file starts with.
pub const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// Whether `bytes` start like an ELF file.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(&ELF_MAGIC)
}

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Uncompressed size of every block but the last in LZ4's legacy frame.
const LZ4_LEGACY_BLOCK: usize = 8 * 1024 * 1024;
/// Sanity bound for a decompressed kernel.
const MAX_KERNEL: usize = 1024 * 1024 * 1024;

/// Finds the compressed payload of `bzimage`, decompresses it and checks that
/// the result is an ELF image.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    let payload = payload(bzimage)?;
    let vmlinux = match compression_of(payload) {
        Some("lz4") => decompress_lz4_legacy(payload)?,
        Some("gzip") => decompress_gzip(payload)?,
        Some(other) => return Err(VmlinuxError::UnsupportedCompression(other)),
        None => return Err(VmlinuxError::UnsupportedCompression("unknown")),
    };
    if is_elf(&vmlinux) {
        Ok(vmlinux)
    } else {
        Err(VmlinuxError::NotElf)
    }
}

/// The compressed payload inside a bzImage.
pub fn payload(bzimage: &[u8]) -> Result<&[u8], VmlinuxError> {
    let not = |why: &str| VmlinuxError::NotBzImage(why.to_string());
    if bzimage.len() < 0x250 {
        return Err(not("shorter than the boot protocol header"));
    }
    if &bzimage[0x202..0x206] != b"HdrS" {
        return Err(not("no \"HdrS\" boot protocol signature at 0x202"));
    }
    let version = u16::from_le_bytes([bzimage[0x206], bzimage[0x207]]);
    if version < 0x0208 {
        return Err(not(&format!(
            "boot protocol {}.{:02} predates payload fields (2.08)",
            version >> 8,
            version & 0xff
        )));
    }
    let setup_sects = match bzimage[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let protected_mode_start = (setup_sects + 1) * 512;
    let le32 = |at: usize| {
        u32::from_le_bytes(bzimage[at..at + 4].try_into().expect("four bytes")) as usize
    };
    let start = protected_mode_start + le32(0x248);
    let end = start
        .checked_add(le32(0x24c))
        .ok_or_else(|| not("payload length overflows"))?;
    if end > bzimage.len() || start >= end {
        return Err(not("payload lies outside the file"));
    }
    Ok(&bzimage[start..end])
}

/// Names the compression of a kernel payload by its magic bytes.
pub fn compression_of(payload: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (&[0x1f, 0x8b], "gzip"),
        (&[0x1f, 0x9e], "gzip"),
        (&LZ4_LEGACY_MAGIC, "lz4"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"BZh", "bzip2"),
        (&[0x89, b'L', b'Z', b'O'], "lzo"),
        (&[0x5d, 0x00, 0x00], "lzma"),
    ];
    MAGICS
        .iter()
        .find(|(magic, _)| payload.starts_with(magic))
        .map(|(_, name)| *name)
}

/// Decompresses LZ4's legacy frame (`lz4 -l`, what the kernel build writes):
/// the magic, then blocks of `<u32 compressed size><LZ4 block>`, each
/// decompressing to 8 MiB except the last. The kernel build appends the
/// uncompressed size as a final little-endian u32; when present it is checked.
fn decompress_lz4_legacy(payload: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    let corrupt = |reason: String| VmlinuxError::Corrupt {
        compression: "lz4",
        reason,
    };
    let mut rest = &payload[LZ4_LEGACY_MAGIC.len()..];
    let mut out = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while rest.len() >= 4 {
        let word = u32::from_le_bytes(rest[..4].try_into().expect("four bytes"));
        rest = &rest[4..];
        if rest.is_empty() {
            // The size the kernel build appended.
            if word as usize != out.len() {
                return Err(corrupt(format!(
                    "decompressed {} bytes, the trailer says {word}",
                    out.len()
                )));
            }
            break;
        }
        if word.to_le_bytes() == LZ4_LEGACY_MAGIC {
            continue;
        }
        let size = word as usize;
        if size > rest.len() {
            return Err(corrupt(format!(
                "block of {size} bytes but only {} remain",
                rest.len()
            )));
        }
        let written = lz4_flex::block::decompress_into(&rest[..size], &mut block)
            .map_err(|err| corrupt(err.to_string()))?;
        if out.len() + written > MAX_KERNEL {
            return Err(corrupt("more than 1 GiB of output".into()));
        }
        out.extend_from_slice(&block[..written]);
        rest = &rest[size..];
    }
    if !rest.is_empty() {
        return Err(corrupt(format!("{} stray bytes at the end", rest.len())));
    }
    Ok(out)
}

fn decompress_gzip(payload: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(payload)
        .take(MAX_KERNEL as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|err| VmlinuxError::Corrupt {
            compression: "gzip",
            reason: err.to_string(),
        })?;
    if out.len() > MAX_KERNEL {
        return Err(VmlinuxError::Corrupt {
            compression: "gzip",
            reason: "more than 1 GiB of output".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A fake bzImage: a boot header with `setup_sects` sectors and `payload`
    /// placed `gap` bytes into the protected-mode part.
    fn bzimage(setup_sects: u8, gap: usize, payload: &[u8]) -> Vec<u8> {
        let sectors = if setup_sects == 0 {
            4
        } else {
            setup_sects as usize
        };
        let pm_start = (sectors + 1) * 512;
        let mut image = vec![0u8; pm_start + gap];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&(gap as u32).to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(b"trailing setup data");
        image
    }

    fn fake_elf(len: usize) -> Vec<u8> {
        let mut elf = ELF_MAGIC.to_vec();
        elf.extend((0..len).map(|i| (i % 251) as u8 / 3));
        elf
    }

    /// LZ4 legacy frame as `lz4 -l` plus the kernel's appended size.
    fn lz4_legacy(data: &[u8]) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
            let block = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&block);
        }
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    #[test]
    fn extracts_an_lz4_payload_across_blocks() {
        let elf = fake_elf(LZ4_LEGACY_BLOCK + 12345);
        let image = bzimage(0, 700, &lz4_legacy(&elf));
        assert_eq!(extract_vmlinux(&image).unwrap(), elf);
    }

    #[test]
    fn extracts_a_gzip_payload() {
        let elf = fake_elf(100_000);
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&elf).unwrap();
        let image = bzimage(27, 16, &encoder.finish().unwrap());
        assert_eq!(extract_vmlinux(&image).unwrap(), elf);
    }

    #[test]
    fn a_payload_that_is_not_elf_is_refused() {
        let image = bzimage(4, 0, &lz4_legacy(b"just some bytes, not a kernel"));
        assert_eq!(extract_vmlinux(&image), Err(VmlinuxError::NotElf));
    }

    #[test]
    fn a_wrong_size_trailer_is_corruption() {
        let mut payload = lz4_legacy(&fake_elf(1000));
        let end = payload.len();
        payload[end - 4..].copy_from_slice(&999u32.to_le_bytes());
        assert!(matches!(
            extract_vmlinux(&bzimage(4, 0, &payload)),
            Err(VmlinuxError::Corrupt {
                compression: "lz4",
                ..
            })
        ));
    }

    #[test]
    fn names_unsupported_compressions() {
        let xz = [0xfd, b'7', b'z', b'X', b'Z', 0x00, 1, 2, 3];
        assert_eq!(
            extract_vmlinux(&bzimage(4, 0, &xz)),
            Err(VmlinuxError::UnsupportedCompression("xz"))
        );
        let zstd = [0x28, 0xb5, 0x2f, 0xfd, 0];
        assert_eq!(
            extract_vmlinux(&bzimage(4, 0, &zstd)),
            Err(VmlinuxError::UnsupportedCompression("zstd"))
        );
    }

    #[test]
    fn rejects_inputs_that_are_not_bzimages() {
        assert!(matches!(
            extract_vmlinux(b"short"),
            Err(VmlinuxError::NotBzImage(_))
        ));
        let mut no_signature = bzimage(4, 0, &lz4_legacy(b"x"));
        no_signature[0x202] = b'X';
        assert!(matches!(
            extract_vmlinux(&no_signature),
            Err(VmlinuxError::NotBzImage(_))
        ));
        let mut old = bzimage(4, 0, &lz4_legacy(b"x"));
        old[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
        assert!(matches!(
            extract_vmlinux(&old),
            Err(VmlinuxError::NotBzImage(_))
        ));
        let mut outside = bzimage(4, 0, &lz4_legacy(b"x"));
        outside[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            extract_vmlinux(&outside),
            Err(VmlinuxError::NotBzImage(_))
        ));
    }
}
