//! The shared libraries of a binary built for another architecture (the arm64
//! agent). The host's `ldd` runs the binary's own dynamic loader, which cannot run
//! a foreign binary, so the dependencies are read from the ELF itself (`PT_INTERP`
//! and `DT_NEEDED`, recursively) and found in Debian's directories for that
//! architecture: multiarch (`libelf1:arm64`, ...) and the cross toolchain's libc.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use km_protocol::Arch;
use object::read::elf::{FileHeader as _, ProgramHeader as _};

/// `(path in the guest, file on the host)` for the loader and every library
/// `bin` needs, directly or through another library.
pub fn libraries(bin: &Path, arch: Arch) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let triple = match arch {
        Arch::X86_64 => "x86_64-linux-gnu",
        Arch::Arm64 => "aarch64-linux-gnu",
    };
    let dirs = [format!("/lib/{triple}"), format!("/usr/lib/{triple}"), format!("/usr/{triple}/lib")];
    let mut out = BTreeMap::new();
    let first = needs(bin, arch)?;
    if let Some(interp) = &first.interpreter {
        let name = Path::new(interp).file_name().context("interpreter without a file name")?.to_string_lossy();
        let host = find(&dirs, &name).with_context(|| {
            format!("{}: its loader {interp} is not installed for {arch} (in {})", bin.display(), dirs.join(", "))
        })?;
        out.insert(interp.trim_start_matches('/').to_string(), host);
    }
    let mut todo = first.needed;
    while let Some(lib) = todo.pop() {
        // Libraries go where the guest's loader looks first: /lib/<triple>.
        let guest = format!("lib/{triple}/{lib}");
        if out.contains_key(&guest) {
            continue;
        }
        let host = find(&dirs, &lib).with_context(|| {
            format!("{}: library {lib} is not installed for {arch} (looked in {})", bin.display(), dirs.join(", "))
        })?;
        todo.extend(needs(&host, arch)?.needed);
        out.insert(guest, host);
    }
    Ok(out.into_iter().collect())
}

struct Needs {
    interpreter: Option<String>,
    needed: Vec<String>,
}

fn needs(path: &Path, arch: Arch) -> anyhow::Result<Needs> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let data = &data[..];
    let header = object::elf::FileHeader64::<object::Endianness>::parse(data)
        .with_context(|| format!("{}: not a 64-bit ELF file", path.display()))?;
    let endian = header.endian()?;
    let machine = header.e_machine(endian);
    if machine != arch.elf_machine() {
        bail!("{}: built for ELF machine {machine}, not {arch} ({})", path.display(), arch.elf_machine());
    }
    let mut interpreter = None;
    for ph in header.program_headers(endian, data)? {
        if let Some(i) = ph.interpreter(endian, data)? {
            interpreter = Some(String::from_utf8_lossy(i).into_owned());
        }
    }
    let table = header.sections(endian, data)?.dynamic_table(endian, data)?;
    let mut needed = Vec::new();
    for d in table.iter() {
        if d.tag == object::elf::DT_NEEDED {
            needed.push(String::from_utf8_lossy(table.string(d)?).into_owned());
        }
    }
    Ok(Needs { interpreter, needed })
}

fn find(dirs: &[String], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| Path::new(d).join(name)).find(|p| p.exists())
}
