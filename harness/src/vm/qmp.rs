//! QEMU's machine protocol (QMP) by hand: JSON lines on a Unix socket, where a QMP
//! client crate would bring QEMU's whole generated schema for the three commands
//! the harness sends (`dump-guest-memory`, `migrate`, `query-migrate`, besides
//! `stop` and `quit`).
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context as _};

/// A QMP session, past its greeting and capabilities negotiation.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to the socket of `-qmp unix:PATH,server=on,wait=off`; a reply that
    /// takes longer than `timeout` is an error.
    pub fn connect(socket: &Path, timeout: Duration) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting to QEMU's QMP socket {}", socket.display()))?;
        stream.set_read_timeout(Some(timeout))?;
        let mut qmp = Qmp { reader: BufReader::new(stream.try_clone()?), writer: stream };
        let mut greeting = String::new();
        qmp.reader.read_line(&mut greeting).context("QMP greeting")?;
        qmp.execute("qmp_capabilities", serde_json::Value::Null)?;
        Ok(qmp)
    }

    /// Runs `command` (with `arguments` unless null) and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let mut msg = serde_json::json!({ "execute": command });
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        writeln!(self.writer, "{msg}")?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).with_context(|| format!("QMP {command}: no reply"))? == 0 {
                bail!("QEMU closed QMP during {command}");
            }
            let mut v: serde_json::Value = serde_json::from_str(&line).context("QMP said something not JSON")?;
            // Events (STOP, DUMP_COMPLETED, MIGRATION, ...) come between; a
            // command's reply is `return` or `error`.
            if let Some(e) = v.get("error") {
                bail!("QMP {command}: {e}");
            }
            if let Some(r) = v.get_mut("return") {
                return Ok(r.take());
            }
        }
    }
}
