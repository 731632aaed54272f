//! Minimal streaming tar (ustar with GNU long names) for directories: regular files,
//! directories and symlinks with their permission bits.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

const BLOCK: usize = 512;

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{:0width$o}", value, width = digits);
    field[..digits].copy_from_slice(text.as_bytes());
}

fn header(name: &[u8], mode: u32, size: u64, kind: u8, link: &[u8]) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode & 0o7777));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar ");
    h[263..265].copy_from_slice(b" \0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    h
}

fn write_entry<W: Write>(
    out: &mut W,
    name: &str,
    mode: u32,
    size: u64,
    kind: u8,
    link: &str,
) -> io::Result<()> {
    for (text, long_kind) in [(name, b'L'), (link, b'K')] {
        if text.len() >= 100 {
            let body = [text.as_bytes(), b"\0"].concat();
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
    let short = |t: &str| t.as_bytes()[..t.len().min(99)].to_vec();
    out.write_all(&header(&short(name), mode, size, kind, &short(link)))
}

fn write_padded<W: Write>(out: &mut W, data: &[u8]) -> io::Result<()> {
    out.write_all(data)?;
    out.write_all(&vec![0u8; (BLOCK - data.len() % BLOCK) % BLOCK])
}

/// Writes a tar stream of the contents of `dir` (paths relative to it) to `out`.
pub fn pack<W: Write>(dir: &Path, out: &mut W) -> io::Result<()> {
    pack_into(dir, "", out)?;
    out.write_all(&[0u8; BLOCK * 2])
}

fn pack_into<W: Write>(dir: &Path, prefix: &str, out: &mut W) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let meta = fs::symlink_metadata(entry.path())?;
        let mode = meta.permissions().mode();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(entry.path())?;
            write_entry(out, &name, 0o777, 0, b'2', &target.to_string_lossy())?;
        } else if meta.is_dir() {
            write_entry(out, &format!("{name}/"), mode, 0, b'5', "")?;
            pack_into(&entry.path(), &format!("{name}/"), out)?;
        } else if meta.is_file() {
            write_entry(out, &name, mode, meta.len(), b'0', "")?;
            let copied = io::copy(&mut fs::File::open(entry.path())?, out)?;
            out.write_all(&vec![0u8; (BLOCK - copied as usize % BLOCK) % BLOCK])?;
        }
    }
    Ok(())
}

fn parse_octal(field: &[u8]) -> io::Result<u64> {
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text.trim(), 8).map_err(|_| invalid("bad octal field"))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

fn field_text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Unpacks a tar stream into `dir`, refusing entries that would escape it.
pub fn unpack<R: Read>(input: &mut R, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let (mut long_name, mut long_link) = (None, None);
    loop {
        let mut h = [0u8; BLOCK];
        input.read_exact(&mut h)?;
        if h.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let size = parse_octal(&h[124..136])?;
        let mode = parse_octal(&h[100..108])? as u32;
        let kind = h[156];
        if kind == b'L' || kind == b'K' {
            let mut body = vec![0u8; size as usize];
            input.read_exact(&mut body)?;
            skip_padding(input, size)?;
            let text = field_text(&body);
            if kind == b'L' {
                long_name = Some(text);
            } else {
                long_link = Some(text);
            }
            continue;
        }
        let name = long_name.take().unwrap_or_else(|| field_text(&h[..100]));
        let link = long_link.take().unwrap_or_else(|| field_text(&h[157..257]));
        let relative = Path::new(name.trim_end_matches('/'));
        if relative.is_absolute() || relative.components().any(|c| c.as_os_str() == "..") {
            return Err(invalid("tar entry escapes the target directory"));
        }
        let target = dir.join(relative);
        match kind {
            b'5' => {
                fs::create_dir_all(&target)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
            }
            b'2' => {
                let _ = fs::remove_file(&target);
                symlink(&link, &target)?;
            }
            b'0' | 0 => {
                let mut file = fs::File::create(&target)?;
                io::copy(&mut input.by_ref().take(size), &mut file)?;
                skip_padding(input, size)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
            }
            _ => {
                io::copy(&mut input.by_ref().take(size), &mut io::sink())?;
                skip_padding(input, size)?;
            }
        }
    }
}

fn skip_padding<R: Read>(input: &mut R, size: u64) -> io::Result<()> {
    let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    io::copy(&mut input.by_ref().take(pad), &mut io::sink()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        unpack(&mut stream.as_slice(), &dest).unwrap();
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
        write_entry(&mut stream, "../evil", 0o644, 0, b'0', "").unwrap();
        stream.extend_from_slice(&[0u8; BLOCK * 2]);
        let dest = std::env::temp_dir().join(format!("firerunner-tar-evil-{}", std::process::id()));
        assert!(unpack(&mut stream.as_slice(), &dest).is_err());
        fs::remove_dir_all(&dest).unwrap();
    }
}
