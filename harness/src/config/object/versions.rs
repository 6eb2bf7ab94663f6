//! The first kernel version of each BPF helper, map type and program type, so
//! `explain` can say which kernels lack what an object needs without booting one.
//!
//! The versions are facts taken from bcc's `docs/kernel-versions.md` (Apache-2.0);
//! `kernel_versions.tsv` beside this file holds them, one `kind<TAB>name<TAB>version`
//! a line, and its header says where and when they were read and how bcc's names
//! were mapped to the ones here. Names are those of [`super::tables`]: helpers by
//! function name (`bpf_map_lookup_elem`), map and program types as libbpf spells
//! them (`perf_event_array`, `sched_cls`).
use std::{collections::HashMap, sync::OnceLock};

use km_protocol::KernelVersion;

/// Where the versions come from, for a reader of `explain`'s output.
pub const SOURCE: &str = "bcc docs/kernel-versions.md";

/// The kinds the table knows, as `since` takes them.
pub const KINDS: [&str; 3] = ["helper", "map_type", "prog_type"];

const TSV: &str = include_str!("kernel_versions.tsv");

type Table = HashMap<(&'static str, &'static str), KernelVersion>;

/// The first mainline kernel with `name` of `kind` (`"helper"`, `"map_type"` or
/// `"prog_type"`); `None` when bcc's table does not list it.
pub fn since(kind: &str, name: &str) -> Option<KernelVersion> {
    let table: &HashMap<(&str, &str), KernelVersion> = table();
    table.get(&(kind, name)).copied()
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| parse(TSV).unwrap_or_else(|e| panic!("kernel_versions.tsv: {e}")))
}

/// Parses the table: `#` lines and blank lines are comments; every other line is
/// `kind<TAB>name<TAB>major.minor`, each (kind, name) once.
fn parse(text: &'static str) -> Result<Table, String> {
    let mut table = Table::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [kind, name, version] = fields[..] else {
            return Err(format!("line {n}: {line:?} is not kind<TAB>name<TAB>version"));
        };
        if !KINDS.contains(&kind) {
            return Err(format!("line {n}: unknown kind {kind:?} (one of {KINDS:?})"));
        }
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("line {n}: bad name {name:?}"));
        }
        let major_minor = version.split_once('.').is_some_and(|(major, minor)| {
            [major, minor].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        });
        if !major_minor {
            return Err(format!("line {n}: version {version:?} is not major.minor"));
        }
        let version = version.parse::<KernelVersion>().map_err(|e| format!("line {n}: {e}"))?;
        if table.insert((kind, name), version).is_some() {
            return Err(format!("line {n}: {kind} {name} is listed twice"));
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::{super::tables, *};

    fn v(major: u16, minor: u16) -> Option<KernelVersion> {
        Some(KernelVersion::new(major, minor, 0))
    }

    #[test]
    fn known_versions() {
        assert_eq!(since("helper", "bpf_map_update_elem"), v(3, 19));
        assert_eq!(since("helper", "bpf_loop"), v(5, 17));
        assert_eq!(since("helper", "bpf_cgrp_storage_delete"), v(6, 2));
        assert_eq!(since("map_type", "perf_event_array"), v(4, 3));
        assert_eq!(since("map_type", "hash"), v(3, 19));
        assert_eq!(since("map_type", "ringbuf"), v(5, 8));
        assert_eq!(since("prog_type", "kprobe"), v(4, 1));
        assert_eq!(since("prog_type", "sched_cls"), v(4, 1));
        assert_eq!(since("prog_type", "tracing"), v(5, 5));
    }

    #[test]
    fn unknown_names_and_kinds_have_no_version() {
        assert_eq!(since("helper", "bpf_no_such_helper"), None);
        assert_eq!(since("map_type", "bpf_map_update_elem"), None, "a helper is not a map type");
        assert_eq!(since("kfunc", "bpf_loop"), None);
        assert_eq!(since("prog_type", "netfilter"), None, "not in bcc's table");
    }

    #[test]
    fn the_table_parses_and_bad_lines_are_refused() {
        assert!(table().len() > 250, "{}", table().len());
        assert_eq!(parse("# c\n\nhelper\tbpf_x\t4.10\n").unwrap()[&("helper", "bpf_x")], KernelVersion::new(4, 10, 0));
        for bad in [
            "helper bpf_x 4.1",
            "helper\tbpf_x",
            "helper\tbpf_x\t4",
            "helper\tbpf_x\t4.1.2",
            "helper\tbpf_x\t4.1-rc1",
            "kfunc\tbpf_x\t4.1",
            "helper\t\t4.1",
            "helper\tbpf_x\t4.1\nhelper\tbpf_x\t4.2",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    /// Every name in the table is one libbpf knows, so none is a typo that never matches.
    #[test]
    fn every_name_is_one_of_the_tables() {
        for &(kind, name) in table().keys() {
            let known = match kind {
                "helper" => tables::HELPERS.iter().any(|(_, n)| *n == name),
                "map_type" => tables::MAP_TYPES.contains(&name),
                "prog_type" => tables::PROG_TYPES.contains(&name),
                _ => false,
            };
            assert!(known, "{kind} {name} is in kernel_versions.tsv but not in tables.rs");
        }
    }

    /// Coverage of libbpf's names. bcc lists every helper up to id 211
    /// (bpf_cgrp_storage_delete); the types it does not list are named here, so a
    /// new libbpf type shows up as a failure to look its version up.
    #[test]
    fn coverage_of_the_libbpf_tables() {
        let missing_helpers: Vec<_> =
            tables::HELPERS.iter().filter(|(_, n)| since("helper", n).is_none()).map(|&(id, n)| (id, n)).collect();
        let missing_maps: Vec<_> =
            tables::MAP_TYPES.iter().copied().filter(|n| since("map_type", n).is_none()).collect();
        let missing_progs: Vec<_> =
            tables::PROG_TYPES.iter().copied().filter(|n| since("prog_type", n).is_none()).collect();
        eprintln!(
            "helpers {}/{} (missing {missing_helpers:?}), map types {}/{} (missing {missing_maps:?}), \
             program types {}/{} (missing {missing_progs:?})",
            tables::HELPERS.len() - missing_helpers.len(),
            tables::HELPERS.len(),
            tables::MAP_TYPES.len() - missing_maps.len(),
            tables::MAP_TYPES.len(),
            tables::PROG_TYPES.len() - missing_progs.len(),
            tables::PROG_TYPES.len(),
        );
        let old_missing: Vec<_> = missing_helpers.iter().filter(|(id, _)| *id <= 211).collect();
        assert!(old_missing.is_empty(), "bcc lists these helpers, kernel_versions.tsv does not: {old_missing:?}");
        assert_eq!(missing_maps, ["unspec", "cgrp_storage", "arena", "insn_array"]);
        assert_eq!(missing_progs, ["unspec", "netfilter"]);
    }
}
