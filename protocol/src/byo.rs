//! A program a user brought, as the guest agent receives it: resolved on the host
//! from the manifest (see the harness's `config::manifest`), objects by file name.
//! One `GuestProgram` is one program of an object: its trials are
//! `<kernel>::<name>::load` (and `::attach`, `::test_run`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgType {
    Xdp,
    Tc,
    SocketFilter,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestProgram {
    /// Trial prefix after the kernel: `entry` or `entry::program`.
    pub name: String,
    /// The program (function) name inside the object.
    pub program: String,
    /// Only for naming test-run verdicts; libbpf's section decides the type.
    #[serde(default)]
    pub prog_type: Option<ProgType>,
    /// Feature ids from features.yaml the program cannot run without (gates).
    pub needs: Vec<String>,
    /// File name of the object inside the guest's BYO directory.
    pub object_file: String,
    pub packets: Vec<GuestPacket>,
    /// What the program needs from a kernel, decoded on the host from its
    /// instructions; probed in the guest when a load fails.
    #[serde(default)]
    pub requires: Vec<Need>,
    /// libbpf's program type id for the section (helper probes run in it).
    #[serde(default)]
    pub prog_type_id: u32,
    /// Map name -> the sizes to set before loading, as a real loader does: the
    /// manifest's `maps:`, `max_entries` for maps the object leaves at 0, a stack
    /// trace map's `value_size` when the object leaves it at 0.
    #[serde(default)]
    pub maps: BTreeMap<String, MapSizes>,
    /// The attach target to set before loading (`attach_to:`), as
    /// `bpf_program__set_attach_target` does: fentry/fexit/fmod_ret, lsm, tp_btf.
    #[serde(default)]
    pub attach_to: Option<String>,
    /// `.rodata` patches: (offset, bytes), validated against the object's BTF.
    #[serde(default)]
    pub rodata: Vec<(u32, Vec<u8>)>,
    /// A BTF file (inside the BYO directory) for CO-RE on kernels without their own.
    #[serde(default)]
    pub btf_file: Option<String>,
    /// Also attach the program the way its section says (`::attach` trial).
    #[serde(default)]
    pub attach: bool,
}

/// Where a need's version comes from when features.yaml has no entry for it.
pub const VERSIONS_SOURCE: &str = "bcc docs/kernel-versions.md";

/// Sizes of one map that the loader sets (each only when given); also what a
/// manifest's `maps: { NAME: { key_size, value_size, max_entries } }` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapSizes {
    #[serde(default)]
    pub key_size: Option<u32>,
    #[serde(default)]
    pub value_size: Option<u32>,
    #[serde(default)]
    pub max_entries: Option<u32>,
}

/// What stopped a load, by what happened (a failed `::load` trial's `cause`).
/// "Verifier" only when the verifier said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadCause {
    /// The kernel lacks a helper, kfunc, map or program type the instructions use.
    MissingNeed,
    /// A BTF-attached program's target is not in this kernel's BTF.
    AttachTarget,
    /// A map of the object could not be created.
    MapCreate,
    /// The verifier rejected the program (its log says why).
    Verifier,
    /// Anything else, with its errno and libbpf's message.
    Other,
}

impl LoadCause {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadCause::MissingNeed => "missing_need",
            LoadCause::AttachTarget => "attach_target",
            LoadCause::MapCreate => "map_create",
            LoadCause::Verifier => "verifier",
            LoadCause::Other => "other",
        }
    }
}

impl std::fmt::Display for LoadCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `value_size` a real loader gives a stack trace map the object leaves at 0:
/// `perf_event_max_stack` (127 by default) frames of 8 bytes.
pub const STACK_TRACE_VALUE_SIZE: u32 = 127 * 8;

/// Map types whose `max_entries` must stay 0 (local storage: sk, inode, task,
/// cgroup), and whose slots libbpf sizes itself (perf_event_array: one per CPU).
pub const MAX_ENTRIES_STAYS_0: &[u32] = &[4, 24, 28, 29, 32];
/// Map types the kernel creates only with a 4-byte key (an index).
const INDEX_KEYED: &[u32] = &[2, 3, 4, 6, 7, 8, 12, 14, 16, 17];

/// Why the kernel refuses a map of type `map_type` (libbpf's numbering) with these
/// sizes, as far as its rules are plain (`None`: nothing known wrong). The host
/// checks `maps:` overrides with it; the agent names the parameter of a map that
/// failed to create.
pub fn map_size_problem(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> Option<String> {
    let ring = matches!(map_type, 27 | 31);
    if ring {
        // libbpf rounds a ring buffer's size up to a power of two pages itself.
        if max_entries == 0 {
            return Some("max_entries 0: a ring buffer needs a size (its loader sets it)".into());
        }
        if key_size != 0 || value_size != 0 {
            return Some(format!("key_size {key_size}, value_size {value_size}: a ring buffer takes neither (0)"));
        }
        return None;
    }
    if max_entries == 0 && !MAX_ENTRIES_STAYS_0.contains(&map_type) && map_type != 26 {
        return Some("max_entries 0: the kernel creates no map without entries".into());
    }
    if max_entries != 0 && MAX_ENTRIES_STAYS_0[1..].contains(&map_type) {
        return Some(format!("max_entries {max_entries}: a local storage map must have max_entries 0"));
    }
    if INDEX_KEYED.contains(&map_type) && key_size != 4 {
        return Some(format!("key_size {key_size}: this map type is indexed by a 4-byte key"));
    }
    match map_type {
        7 if value_size == 0 || !value_size.is_multiple_of(8) || value_size > STACK_TRACE_VALUE_SIZE => Some(format!(
            "value_size {value_size}: a stack trace map's value is 8 bytes a frame, 1 to perf_event_max_stack (127 by default) frames: its loader sets it at run time (bpf_map__set_value_size), e.g. {STACK_TRACE_VALUE_SIZE}"
        )),
        4 if value_size != 4 => Some(format!("value_size {value_size}: a perf_event_array holds 4-byte fds")),
        1 | 5 | 9 | 10 | 13 | 18 if key_size == 0 => {
            Some("key_size 0: a hash map needs a key (its loader sets key_size)".into())
        }
        1 | 2 | 5 | 6 | 9 | 10 | 22 | 23 | 24 | 28 | 29 | 32 if value_size == 0 => {
            Some("value_size 0: this map type needs a value (its loader sets value_size)".into())
        }
        _ => None,
    }
}

/// One thing a program needs from a kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Need {
    /// `prog_type` | `helper` | `kfunc` | `map_type` | `feature` (a catalogue probe).
    pub kind: String,
    /// Helper, map type or program type id.
    pub id: u32,
    /// Helper/kfunc/map type/program type name, or the catalogue feature id.
    pub name: String,
    /// How a reader is told: `calls bpf_loop (helper 181)`.
    pub text: String,
    /// The features.yaml entry that covers it, and its `since`.
    #[serde(default)]
    pub feature: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestPacket {
    pub name: String,
    pub data: Vec<u8>,
    pub expect: u32,
}

/// Guest directory holding `manifest.json` and the objects.
pub const GUEST_DIR: &str = "/byo";
pub const MANIFEST_JSON: &str = "manifest.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_sizes_the_kernel_refuses_are_named() {
        assert!(map_size_problem(7, 4, 0, 1024).unwrap().starts_with("value_size 0: a stack trace map"));
        assert_eq!(map_size_problem(7, 4, STACK_TRACE_VALUE_SIZE, 1024), None);
        assert!(map_size_problem(7, 4, 12, 1024).is_some(), "not 8 bytes a frame");
        assert!(map_size_problem(1, 4, 8, 0).unwrap().starts_with("max_entries 0"));
        assert_eq!(map_size_problem(29, 4, 8, 0), None, "task storage stays at 0");
        assert!(map_size_problem(29, 4, 8, 16).is_some());
        assert_eq!(map_size_problem(27, 0, 0, 4096 * 3), None, "libbpf rounds it up");
        assert!(map_size_problem(27, 0, 0, 0).is_some());
        assert!(map_size_problem(2, 8, 8, 1).unwrap().starts_with("key_size 8"));
        assert_eq!(map_size_problem(4, 4, 4, 0), None, "libbpf sizes perf_event_array");
    }
}
