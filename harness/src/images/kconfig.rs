//! Kernel build configurations (`.config`, `/boot/config-*`, config fragments).
use std::collections::BTreeMap;

/// The `CONFIG_X=value` lines of a kernel config, as option -> value (`y`, `m`, a
/// number, a string without its quotes); `# CONFIG_X is not set` lines and
/// comments are left out.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}
