//! Pulls the uncompressed `vmlinux` ELF out of a `bzImage`.
//!
//! Under TCG the in-kernel decompressor costs seconds per boot; QEMU can boot the
//! ELF directly through its PVH entry point, so we decompress once and cache.
//! Written here because no maintained crate does this; the x86 boot protocol gives
//! the payload's offset and length in the setup header (Documentation/arch/x86/boot.rst).
use std::io::Read;

use anyhow::{bail, Context as _};

/// Returns the decompressed ELF image.
pub fn extract_vmlinux(bzimage: &[u8]) -> anyhow::Result<Vec<u8>> {
    if bzimage.len() < 0x250 || &bzimage[0x202..0x206] != b"HdrS" {
        bail!("not a bzImage (no HdrS setup header)");
    }
    let setup_sects = match bzimage[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let payload_offset = u32::from_le_bytes(bzimage[0x248..0x24c].try_into()?) as usize;
    let payload_length = u32::from_le_bytes(bzimage[0x24c..0x250].try_into()?) as usize;
    let start = (setup_sects + 1) * 512 + payload_offset;
    let payload = bzimage.get(start..start + payload_length).context("payload lies outside the file")?;
    let elf = decompress(payload)?;
    if !elf.starts_with(b"\x7fELF") {
        bail!("decompressed payload is not an ELF image");
    }
    Ok(elf)
}

/// The release a bzImage announces (`6.1.0-50-cloud-amd64`): the first word of the
/// version string the setup header points at (`kernel_version`, boot protocol 2.00+).
pub fn release(bzimage: &[u8]) -> Option<String> {
    if bzimage.len() < 0x210 || &bzimage[0x202..0x206] != b"HdrS" {
        return None;
    }
    let at = u16::from_le_bytes([bzimage[0x20e], bzimage[0x20f]]) as usize + 0x200;
    let text = bzimage.get(at..)?;
    let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len()).min(256)];
    let word = std::str::from_utf8(text).ok()?.split_whitespace().next()?;
    (!word.is_empty()).then(|| word.to_string())
}

/// The release an uncompressed kernel image names (an arm64 `Image`, a vmlinux):
/// the word after its `Linux version ` banner.
pub fn release_in_banner(image: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let at = image.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
    let rest = &image[at..image.len().min(at + 128)];
    let word: Vec<u8> = rest.iter().copied().take_while(|b| b.is_ascii_graphic()).collect();
    (!word.is_empty()).then(|| String::from_utf8_lossy(&word).into_owned())
}

/// Whether an x86 ELF kernel carries the PVH entry point note (`Xen` note of type
/// XEN_ELFNOTE_PHYS32_ENTRY, 18; CONFIG_PVH), without which QEMU will not boot it
/// as an uncompressed kernel. Other ELF files (and non-x86 ones) count as bootable.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    use object::{read::elf::ProgramHeader as _, Endianness};
    let Ok(file) = object::read::elf::ElfFile64::<Endianness>::parse(elf) else { return true };
    if file.elf_header().e_machine.get(file.endian()) != object::elf::EM_X86_64 {
        return true;
    }
    let endian = file.endian();
    file.elf_program_headers().iter().any(|ph| {
        let Ok(Some(mut notes)) = ph.notes(endian, elf) else { return false };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"Xen" && note.n_type(endian) == 18 {
                return true;
            }
        }
        false
    })
}

fn decompress(p: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(p.len() * 4);
    if p.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        // The kernel appends the uncompressed size after the xz stream; stop at stream end.
        let mut stream = liblzma::stream::Stream::new_stream_decoder(u64::MAX, 0)?;
        let mut input = p;
        loop {
            if out.len() == out.capacity() {
                out.reserve(1 << 22);
            }
            let before_in = stream.total_in();
            let status = stream.process_vec(input, &mut out, liblzma::stream::Action::Run)?;
            input = &input[(stream.total_in() - before_in) as usize..];
            if status == liblzma::stream::Status::StreamEnd {
                break;
            }
            if input.is_empty() && out.len() < out.capacity() {
                bail!("xz payload ended before the end of its stream");
            }
        }
    } else if p.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(p)?.single_frame().read_to_end(&mut out)?;
    } else if p.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(p).read_to_end(&mut out)?;
    } else if p.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        out = lz4_legacy(&p[4..])?;
    } else {
        bail!("unsupported kernel compression (magic {:02x?})", &p[..p.len().min(6)]);
    }
    Ok(out)
}

/// The LZ4 "legacy" frame the kernel uses: blocks of (u32 LE length, data), each
/// decompressing to at most 8 MiB, ended by the file end or the size trailer.
fn lz4_legacy(mut p: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    while p.len() >= 4 {
        let len = u32::from_le_bytes(p[..4].try_into()?) as usize;
        if len == 0x184c2102 || len + 4 > p.len() {
            break; // next legacy magic, or the trailing size word
        }
        let block = &p[4..4 + len];
        let mut buf = vec![0u8; 8 << 20];
        let n = lz4_flex::block::decompress_into(block, &mut buf).context("lz4 block")?;
        out.extend_from_slice(&buf[..n]);
        p = &p[4 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_from_banners() {
        let image = b"\0\0junk Linux version 6.6.60 (builder@ci) #1 SMP\0".to_vec();
        assert_eq!(release_in_banner(&image).as_deref(), Some("6.6.60"));
        assert_eq!(release_in_banner(b"no banner here"), None);
        assert_eq!(release(b"too short"), None);
    }

    #[test]
    fn rejects_non_bzimage() {
        assert!(extract_vmlinux(&[0u8; 4096]).unwrap_err().to_string().contains("HdrS"));
    }

    #[test]
    fn decompresses_each_supported_format() {
        let elf = b"\x7fELF and the rest of a kernel".repeat(100);
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            e.write_all(&elf).unwrap();
        }
        assert_eq!(decompress(&gz).unwrap(), elf);
        let zs = zstd::encode_all(&elf[..], 1).unwrap();
        assert_eq!(decompress(&zs).unwrap(), elf);
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&elf[..], 1).read_to_end(&mut xz).unwrap();
        xz.extend_from_slice(&(elf.len() as u32).to_le_bytes()); // the kernel's size trailer
        assert_eq!(decompress(&xz).unwrap(), elf);
        let block = lz4_flex::block::compress(&elf);
        let mut lz = vec![0x02, 0x21, 0x4c, 0x18];
        lz.extend_from_slice(&(block.len() as u32).to_le_bytes());
        lz.extend_from_slice(&block);
        lz.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        assert_eq!(decompress(&lz).unwrap(), elf);
    }
}
