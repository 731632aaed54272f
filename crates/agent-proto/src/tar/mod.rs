//! Minimal streaming tar (ustar with GNU long names and base-256 sizes) for directories:
//! regular files, directories and symlinks with their permission bits. Names are raw bytes
//! both ways. [`unpack`] treats every stream as hostile (see its module).

mod names;
mod unpack;

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub use unpack::{unpack, Existing, Limits, TarError, UnpackOptions, Unpacked};

const BLOCK: usize = 512;

/// Octal when it fits the field, else GNU base-256 (high bit set, big-endian).
fn number(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if value < 1u64 << (3 * digits) {
        let text = format!("{:0width$o}", value, width = digits);
        field[..digits].copy_from_slice(text.as_bytes());
        return;
    }
    field.fill(0);
    let bytes = value.to_be_bytes();
    let n = field.len();
    field[n - bytes.len()..].copy_from_slice(&bytes);
    field[0] |= 0x80;
}

fn header(name: &[u8], mode: u32, size: u64, kind: u8, link: &[u8]) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    number(&mut h[100..108], u64::from(mode & 0o7777));
    number(&mut h[108..116], 0);
    number(&mut h[116..124], 0);
    number(&mut h[124..136], size);
    number(&mut h[136..148], 0);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar ");
    h[263..265].copy_from_slice(b" \0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    number(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    h
}

fn write_entry<W: Write>(
    out: &mut W,
    name: &[u8],
    mode: u32,
    size: u64,
    kind: u8,
    link: &[u8],
) -> io::Result<()> {
    for (text, long_kind) in [(name, b'L'), (link, b'K')] {
        if text.len() >= 100 {
            let body = [text, b"\0"].concat();
            out.write_all(&header(
                b"././@LongLink",
                0,
                body.len() as u64,
                long_kind,
                b"",
            ))?;
            write_padded(out, &body)?;
        }
    }
    let short = |t: &[u8]| t[..t.len().min(99)].to_vec();
    out.write_all(&header(&short(name), mode, size, kind, &short(link)))
}

fn write_padded<W: Write>(out: &mut W, data: &[u8]) -> io::Result<()> {
    out.write_all(data)?;
    out.write_all(&vec![0u8; (BLOCK - data.len() % BLOCK) % BLOCK])
}

/// Writes a tar stream of the contents of `dir` (paths relative to it, names as raw bytes)
/// to `out`; sockets, FIFOs and devices are left out.
pub fn pack<W: Write>(dir: &Path, out: &mut W) -> io::Result<()> {
    pack_into(dir, b"", out)?;
    out.write_all(&[0u8; BLOCK * 2])
}

fn pack_into<W: Write>(dir: &Path, prefix: &[u8], out: &mut W) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = [prefix, entry.file_name().as_bytes()].concat();
        let meta = fs::symlink_metadata(entry.path())?;
        let mode = meta.permissions().mode();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(entry.path())?;
            let target = target.as_os_str().as_bytes();
            write_entry(out, &name, 0o777, 0, b'2', target)?;
        } else if meta.is_dir() {
            let name = [name.as_slice(), b"/"].concat();
            write_entry(out, &name, mode, 0, b'5', b"")?;
            pack_into(&entry.path(), &name, out)?;
        } else if meta.is_file() {
            write_entry(out, &name, mode, meta.len(), b'0', b"")?;
            let copied = io::copy(&mut fs::File::open(entry.path())?.take(meta.len()), out)?;
            if copied < meta.len() {
                let missing = (meta.len() - copied) as usize;
                out.write_all(&vec![0u8; missing])?;
            }
            out.write_all(&vec![0u8; (BLOCK - meta.len() as usize % BLOCK) % BLOCK])?;
        }
    }
    Ok(())
}

fn skip_padding<R: Read>(input: &mut R, size: u64) -> io::Result<()> {
    let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    io::copy(&mut input.by_ref().take(pad), &mut io::sink()).map(|_| ())
}

/// Longest name or link target a long-name record may carry (Linux `PATH_MAX`).
const MAX_LONG_NAME: u64 = 4096;

/// The kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Directory,
    Symlink,
    Other(u8),
}

/// One entry's header, long names applied.
#[derive(Debug)]
pub(crate) struct Header {
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub size: u64,
    pub kind: Kind,
}

fn malformed(reason: impl Into<String>) -> TarError {
    TarError::Malformed {
        reason: reason.into(),
    }
}

/// A numeric field: octal, or GNU base-256 when the high bit of the first byte is set.
fn parse_number(field: &[u8]) -> Result<u64, TarError> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = u64::from(field[0] & 0x7F);
        for &byte in &field[1..] {
            value = value
                .checked_mul(256)
                .map(|v| v + u64::from(byte))
                .ok_or_else(|| malformed("number field overflows"))?;
        }
        return Ok(value);
    }
    let text = field
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ');
    let mut value: u64 = 0;
    for &byte in text {
        if !(b'0'..=b'7').contains(&byte) {
            return Err(malformed(format!("bad octal digit {:?}", char::from(byte))));
        }
        value = value
            .checked_mul(8)
            .map(|v| v + u64::from(byte - b'0'))
            .ok_or_else(|| malformed("number field overflows"))?;
    }
    Ok(value)
}

fn field_bytes(field: &[u8]) -> Vec<u8> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    field[..end].to_vec()
}

fn check_sum(h: &[u8; BLOCK]) -> Result<(), TarError> {
    let recorded = parse_number(&h[148..156])?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != recorded {
        return Err(malformed("header checksum mismatch"));
    }
    Ok(())
}

/// The body of a long-name (`L`) or long-link (`K`) record of `size` bytes
/// (which `count` is told as an entry without data).
fn read_long_name<R: Read>(
    input: &mut R,
    size: u64,
    count: &mut dyn FnMut(u64) -> Result<(), TarError>,
) -> Result<Vec<u8>, TarError> {
    if size > MAX_LONG_NAME {
        return Err(malformed(format!("long name of {size} bytes")));
    }
    count(0)?;
    let mut body = vec![0u8; size as usize];
    input.read_exact(&mut body)?;
    skip_padding(input, size)?;
    Ok(field_bytes(&body))
}

/// Reads the next entry's header (long-name records folded in); `None` at the end of the
/// archive. `count` is told every header's declared size before any of its data is read.
pub(crate) fn read_header<R: Read>(
    input: &mut R,
    count: &mut dyn FnMut(u64) -> Result<(), TarError>,
) -> Result<Option<Header>, TarError> {
    let (mut long_name, mut long_link) = (None, None);
    loop {
        let mut h = [0u8; BLOCK];
        input.read_exact(&mut h)?;
        if h.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        check_sum(&h)?;
        let size = parse_number(&h[124..136])?;
        let kind = h[156];
        if kind == b'L' || kind == b'K' {
            let slot = if kind == b'L' {
                &mut long_name
            } else {
                &mut long_link
            };
            *slot = Some(read_long_name(input, size, count)?);
            continue;
        }
        let kind = match kind {
            b'0' | 0 | b'7' => Kind::File,
            b'5' => Kind::Directory,
            b'2' => Kind::Symlink,
            other => Kind::Other(other),
        };
        if kind != Kind::File && size != 0 {
            return Err(malformed(format!("{kind:?} entry declares {size} bytes")));
        }
        count(size)?;
        return Ok(Some(Header {
            name: long_name.take().unwrap_or_else(|| field_bytes(&h[..100])),
            link: long_link
                .take()
                .unwrap_or_else(|| field_bytes(&h[157..257])),
            mode: parse_number(&h[100..108])? as u32,
            size,
            kind,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn numbers_past_the_octal_field_use_base_256() {
        for value in [0, 0o7777, 8 << 30, (8 << 30) + 1, 1 << 40, u64::MAX >> 8] {
            let mut field = [0u8; 12];
            number(&mut field, value);
            assert_eq!(parse_number(&field).unwrap(), value, "{value}");
        }
    }

    #[test]
    fn directory_tree_round_trips_with_modes_and_symlinks() {
        let base = std::env::temp_dir().join(format!("firerunner-tar-{}", std::process::id()));
        let source = base.join("src");
        let long = "d".repeat(120);
        fs::create_dir_all(source.join("sub").join(&long)).unwrap();
        fs::write(source.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(source.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(
            source.join("sub").join(&long).join("data.bin"),
            vec![7u8; 1000],
        )
        .unwrap();
        symlink("../script.sh", source.join("sub").join("link")).unwrap();
        let mut stream = Vec::new();
        pack(&source, &mut stream).unwrap();
        let dest = base.join("dest");
        unpack(
            &mut stream.as_slice(),
            &dest,
            &UnpackOptions::hostile(Limits::default()),
        )
        .unwrap();
        let mode = fs::metadata(dest.join("script.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read(dest.join("sub").join(&long).join("data.bin")).unwrap(),
            vec![7u8; 1000]
        );
        assert_eq!(
            fs::read_link(dest.join("sub/link")).unwrap(),
            Path::new("../script.sh")
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn entries_escaping_the_directory_are_refused() {
        let mut stream = Vec::new();
        write_entry(&mut stream, b"../evil", 0o644, 0, b'0', b"").unwrap();
        stream.extend_from_slice(&[0u8; BLOCK * 2]);
        let dest = std::env::temp_dir().join(format!("firerunner-tar-evil-{}", std::process::id()));
        let options = UnpackOptions::hostile(Limits::default());
        assert!(unpack(&mut stream.as_slice(), &dest, &options).is_err());
        fs::remove_dir_all(&dest).unwrap();
    }
}
