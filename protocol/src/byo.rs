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
    /// Map name -> max_entries to set before loading (maps the object leaves at 0,
    /// and the manifest's `maps:`).
    #[serde(default)]
    pub max_entries: BTreeMap<String, u32>,
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
