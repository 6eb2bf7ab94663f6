//! A program a user brought, as the guest agent receives it: resolved on the host
//! from the manifest (see the harness's `config::manifest`), objects by file name.
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
    pub name: String,
    pub program: String,
    pub prog_type: ProgType,
    pub needs: Vec<String>,
    /// File name of the object inside the guest's BYO directory.
    pub object_file: String,
    pub packets: Vec<GuestPacket>,
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
