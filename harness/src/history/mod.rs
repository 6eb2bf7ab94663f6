//! The results history: every run's cells, kernel builds and numbers in one SQLite
//! file (`--history FILE` / `KM_HISTORY`), and what changed between runs
//! ([`diff`]). The last stage of the pipeline: it stores what [`crate::report`]
//! made of a run and reads nothing else of the crate.
//!
//! One file, WAL-journalled, a versioned schema migrated forward in one
//! transaction; each run is written in one `BEGIN IMMEDIATE` transaction, so a
//! run killed mid-write leaves nothing and two runs writing at once take turns
//! (the second waits up to [`BUSY_WAIT`]). A file that is not a history, is
//! corrupt, or comes from a newer kernel-matrix is refused before anything is
//! written to it.
pub mod command;
pub mod diff;
pub mod trends;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension as _, TransactionBehavior};

use crate::{
    images::lock::Lock,
    report::results::{Outcome, RunOutputs, RunResults},
    run::Matrix,
};

/// How long a run waits for another run's write to finish.
pub const BUSY_WAIT: Duration = Duration::from_secs(60);

/// The schema, one migration per version: `MIGRATIONS[i]` takes a file from
/// version `i` to `i + 1` (`PRAGMA user_version`). Append, never edit.
const MIGRATIONS: &[&str] = &[
    // 1: runs, the kernels each ran (their exact build), cells, their numbers, and
    // the BPF objects the programs came from.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started INTEGER NOT NULL,          -- Unix seconds
        commit_id TEXT,                    -- the repository under test, when there is one
        matrix TEXT NOT NULL,              -- the matrix file
        tool TEXT NOT NULL,                -- kernel-matrix <version>
        label TEXT                         -- free text (--label)
    );
    CREATE TABLE kernels (
        run INTEGER NOT NULL REFERENCES runs(id),
        kernel TEXT NOT NULL,
        release TEXT,                      -- uname -r
        accel TEXT NOT NULL,
        build TEXT,                        -- the pinned package version (the lock)
        checksum TEXT,                     -- its sha256 (or OCI digest)
        failure TEXT,
        PRIMARY KEY (run, kernel)
    );
    CREATE TABLE cells (
        run INTEGER NOT NULL REFERENCES runs(id),
        kernel TEXT NOT NULL,
        trial TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'fail', 'ignored')),
        cause TEXT,
        reason TEXT,
        secs REAL,
        PRIMARY KEY (run, kernel, trial)
    );
    CREATE TABLE metrics (
        run INTEGER NOT NULL REFERENCES runs(id),
        kernel TEXT NOT NULL,
        trial TEXT NOT NULL,
        name TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (run, kernel, trial, name)
    );
    CREATE TABLE objects (
        run INTEGER NOT NULL REFERENCES runs(id),
        program TEXT NOT NULL,             -- entry::program
        sha256 TEXT NOT NULL,
        PRIMARY KEY (run, program)
    );",
    // 2: a cell's attempts under --retries, `FP` style (earlier ones first, the
    // recorded verdict last); NULL when it ran once.
    "ALTER TABLE cells ADD COLUMN attempts TEXT;",
];

/// The schema version this kernel-matrix writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Why a history file cannot be used; the file is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{0}: no results history here yet (`run --history FILE` or KM_HISTORY records one)")]
    Missing(PathBuf),
    #[error(
        "{0}: not a kernel-matrix history (not an SQLite database, or a corrupt one): {1}; the file was left untouched"
    )]
    NotAHistory(PathBuf, String),
    #[error("{path}: written by a newer kernel-matrix (schema {found}); this one reads schema {SCHEMA_VERSION} and older; the file was left untouched")]
    Newer { path: PathBuf, found: i64 },
    #[error("{0}: {1}")]
    Sqlite(PathBuf, #[source] rusqlite::Error),
}

/// What a run was, beside its cells: where it came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMeta {
    /// Unix seconds.
    pub started: i64,
    pub commit: Option<String>,
    pub matrix: String,
    pub label: Option<String>,
    /// kernel -> (package version, checksum) from the lock; absent for kernels
    /// the lock does not pin (the host, `local:`, `build:`).
    pub builds: BTreeMap<String, (String, String)>,
    /// `entry::program` -> sha256 of its object file.
    pub objects: BTreeMap<String, String>,
}

/// Which run: what a comparison names its two runs by.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRef {
    pub id: i64,
    /// `YYYY-MM-DD HH:MM:SS` (UTC).
    pub started: String,
    pub commit: Option<String>,
    pub matrix: String,
    pub label: Option<String>,
}

/// One run as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRun {
    pub run: RunRef,
    pub kernels: BTreeMap<String, KernelBuild>,
    /// (kernel, trial) -> cell.
    pub cells: BTreeMap<(String, String), RecordedCell>,
    pub objects: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KernelBuild {
    pub release: Option<String>,
    pub accel: String,
    pub build: Option<String>,
    pub checksum: Option<String>,
}

impl KernelBuild {
    /// `6.1.0-50-cloud-amd64 (6.1.158-1, sha256 0123abcd…)`.
    pub fn describe(&self) -> String {
        let release = self.release.as_deref().unwrap_or("-");
        match (&self.build, &self.checksum) {
            (Some(b), Some(c)) => format!("{release} ({b}, {})", short(c)),
            _ => release.to_string(),
        }
    }
}

/// A digest's (or commit's) first 12 characters, for display.
pub fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCell {
    pub verdict: Outcome,
    pub reason: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    /// Every attempt under `--retries` (`FP`: failed, then passed), the recorded
    /// verdict last; `None` for a cell that ran once.
    pub attempts: Option<String>,
}

pub struct History {
    path: PathBuf,
    conn: Connection,
}

impl History {
    /// Opens (creating it if absent) a history to record into, migrating an older
    /// schema forward.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        let h = Self::connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        h.check_schema()?;
        let err = |e| HistoryError::Sqlite(path.to_path_buf(), e);
        // Only now, with the file known to be ours (or empty), is anything written.
        h.conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        h.migrate().map_err(err)?;
        Ok(h)
    }

    /// Opens an existing history to read.
    pub fn open_read(path: &Path) -> Result<Self, HistoryError> {
        if !path.exists() {
            return Err(HistoryError::Missing(path.to_path_buf()));
        }
        let h = Self::connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let version = h.check_schema()?;
        if version == 0 {
            return Err(HistoryError::Missing(path.to_path_buf()));
        }
        if version < SCHEMA_VERSION {
            // Reading an older file would need its migration, which writes: say so.
            return Err(HistoryError::Sqlite(
                path.to_path_buf(),
                rusqlite::Error::InvalidParameterName(format!(
                    "schema {version} is older than {SCHEMA_VERSION}; the next recorded run migrates it"
                )),
            ));
        }
        Ok(h)
    }

    fn connect(path: &Path, flags: OpenFlags) -> Result<Self, HistoryError> {
        let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| HistoryError::Sqlite(path.to_path_buf(), e))?;
        conn.busy_timeout(BUSY_WAIT).map_err(|e| HistoryError::Sqlite(path.to_path_buf(), e))?;
        Ok(Self { path: path.to_path_buf(), conn })
    }

    /// The file's schema version, refusing what is not ours. Reads only.
    fn check_schema(&self) -> Result<i64, HistoryError> {
        let not_ours = |e: rusqlite::Error| HistoryError::NotAHistory(self.path.clone(), e.to_string());
        let version: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(not_ours)?;
        if version > SCHEMA_VERSION {
            return Err(HistoryError::Newer { path: self.path.clone(), found: version });
        }
        let check: String = self.conn.pragma_query_value(None, "quick_check", |r| r.get(0)).map_err(not_ours)?;
        if check != "ok" {
            return Err(HistoryError::NotAHistory(self.path.clone(), check));
        }
        if version == 0 {
            // A database without our version: only an empty one becomes a history.
            let tables: i64 =
                self.conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(not_ours)?;
            if tables > 0 {
                return Err(HistoryError::NotAHistory(
                    self.path.clone(),
                    format!("an SQLite database with {tables} other tables and no kernel-matrix schema"),
                ));
            }
        }
        Ok(version)
    }

    fn migrate(&self) -> rusqlite::Result<()> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        // Read again inside the lock: another run may have migrated meanwhile.
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        tx.commit()
    }

    fn err(&self, e: rusqlite::Error) -> HistoryError {
        HistoryError::Sqlite(self.path.clone(), e)
    }

    /// Records one run whole (or, if anything fails or the process dies, not at
    /// all); returns its id.
    pub fn record(&mut self, r: &RunResults, meta: &RunMeta) -> Result<i64, HistoryError> {
        let path = self.path.clone();
        let err = |e| HistoryError::Sqlite(path.clone(), e);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        tx.execute(
            "INSERT INTO runs (started, commit_id, matrix, tool, label) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![meta.started, meta.commit, meta.matrix, r.tool, meta.label],
        )
        .map_err(err)?;
        let run = tx.last_insert_rowid();
        for k in &r.kernels {
            let (build, checksum) = meta.builds.get(&k.kernel).cloned().unzip();
            tx.execute(
                "INSERT INTO kernels (run, kernel, release, accel, build, checksum, failure) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![run, k.kernel, k.release, k.accel, build, checksum, k.failure],
            )
            .map_err(err)?;
            for c in &k.cells {
                let cause = c.cause.map(|c| c.as_str());
                tx.execute(
                    "INSERT INTO cells (run, kernel, trial, verdict, cause, reason, secs, attempts)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![run, k.kernel, c.trial, c.verdict.as_str(), cause, c.reason, c.secs, c.attempt_letters()],
                )
                .map_err(err)?;
                for (name, value) in c.metrics.iter().filter(|(_, v)| v.is_finite()) {
                    tx.execute(
                        "INSERT INTO metrics (run, kernel, trial, name, value) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![run, k.kernel, c.trial, name, value],
                    )
                    .map_err(err)?;
                }
            }
        }
        for (program, sha) in &meta.objects {
            tx.execute("INSERT INTO objects (run, program, sha256) VALUES (?1, ?2, ?3)", params![run, program, sha])
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(run)
    }

    /// Run ids, oldest first.
    pub fn run_ids(&self) -> Result<Vec<i64>, HistoryError> {
        let mut st = self.conn.prepare("SELECT id FROM runs ORDER BY id").map_err(|e| self.err(e))?;
        let ids = st.query_map([], |r| r.get(0)).and_then(|rows| rows.collect()).map_err(|e| self.err(e))?;
        Ok(ids)
    }

    /// The last run started before `date` (anything SQLite's `unixepoch()` reads:
    /// `2026-12-01`, `2026-12-01 06:00`).
    pub fn last_before(&self, date: &str) -> Result<Option<i64>, HistoryError> {
        let epoch: Option<i64> =
            self.conn.query_row("SELECT unixepoch(?1)", [date], |r| r.get(0)).map_err(|e| self.err(e))?;
        let Some(epoch) = epoch else {
            return Err(self.err(rusqlite::Error::InvalidParameterName(format!(
                "{date:?} is neither a run id nor a date (YYYY-MM-DD[ HH:MM[:SS]])"
            ))));
        };
        self.conn
            .query_row("SELECT id FROM runs WHERE started < ?1 ORDER BY id DESC LIMIT 1", [epoch], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// One run, whole.
    pub fn run(&self, id: i64) -> Result<RecordedRun, HistoryError> {
        let e = |e| self.err(e);
        let mut run = self
            .conn
            .query_row(
                "SELECT id, datetime(started, 'unixepoch'), commit_id, matrix, label FROM runs WHERE id = ?1",
                [id],
                |r| {
                    Ok(RecordedRun {
                        run: RunRef {
                            id: r.get(0)?,
                            started: r.get(1)?,
                            commit: r.get(2)?,
                            matrix: r.get(3)?,
                            label: r.get(4)?,
                        },
                        kernels: BTreeMap::new(),
                        cells: BTreeMap::new(),
                        objects: BTreeMap::new(),
                    })
                },
            )
            .map_err(e)?;
        let mut st = self
            .conn
            .prepare("SELECT kernel, release, accel, build, checksum FROM kernels WHERE run = ?1")
            .map_err(e)?;
        let rows = st.query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                KernelBuild { release: r.get(1)?, accel: r.get(2)?, build: r.get(3)?, checksum: r.get(4)? },
            ))
        });
        run.kernels = rows.and_then(|r| r.collect()).map_err(e)?;
        let mut st = self
            .conn
            .prepare("SELECT kernel, trial, verdict, reason, attempts FROM cells WHERE run = ?1")
            .map_err(e)?;
        let rows = st.query_map([id], |r| {
            let verdict: String = r.get(2)?;
            let verdict = match verdict.as_str() {
                "pass" => Outcome::Pass,
                "fail" => Outcome::Fail,
                _ => Outcome::Ignored,
            };
            let cell = RecordedCell { verdict, reason: r.get(3)?, metrics: BTreeMap::new(), attempts: r.get(4)? };
            Ok(((r.get(0)?, r.get(1)?), cell))
        });
        run.cells = rows.and_then(|r| r.collect()).map_err(e)?;
        let mut st = self.conn.prepare("SELECT kernel, trial, name, value FROM metrics WHERE run = ?1").map_err(e)?;
        let rows = st
            .query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?))
            })
            .and_then(|r| r.collect::<Result<Vec<(String, String, String, f64)>, _>>())
            .map_err(e)?;
        for (kernel, trial, name, value) in rows {
            if let Some(c) = run.cells.get_mut(&(kernel, trial)) {
                c.metrics.insert(name, value);
            }
        }
        let mut st = self.conn.prepare("SELECT program, sha256 FROM objects WHERE run = ?1").map_err(e)?;
        let rows = st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)));
        run.objects = rows.and_then(|r| r.collect()).map_err(e)?;
        Ok(run)
    }
}

impl RunMeta {
    /// What is known of a run of `m` now: the time, the commit of the repository
    /// holding the matrix file (`GITHUB_SHA` in Actions), each pinned kernel's
    /// build from the lock, and a digest of each manifest program's object.
    pub fn of(m: &Matrix, label: Option<String>) -> Self {
        let started =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let config = m.config.path.canonicalize().unwrap_or_else(|_| m.config.path.clone());
        let commit = std::env::var("GITHUB_SHA").ok().filter(|s| !s.is_empty()).or_else(|| git_head(&config));
        // A matrix without a lock (the host, local kernels) pins no builds.
        let lock = Lock::load(&Lock::path_for(&m.config.path)).unwrap_or_default();
        let builds = lock
            .kernels
            .iter()
            .filter_map(|(name, k)| {
                let first = k.files.first()?;
                Some((name.clone(), (first.version.clone(), k.digest.clone().unwrap_or_else(|| first.sha256.clone()))))
            })
            .collect();
        let objects = m
            .byo
            .iter()
            .filter_map(|p| Some((p.guest.name.clone(), crate::images::fetch::sha256_file(&p.object_path).ok()?)))
            .collect();
        Self { started, commit, matrix: config.display().to_string(), label, builds, objects }
    }
}

/// `git rev-parse HEAD` of the repository holding `file`, if it is in one.
fn git_head(file: &Path) -> Option<String> {
    let dir = file.parent()?;
    let out = std::process::Command::new("git")
        .args(["-C", &dir.to_string_lossy(), "rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Records a finished run in `--history`/`KM_HISTORY`, when one is named.
pub fn record_run(out: &RunOutputs, m: &Matrix, r: &RunResults) -> anyhow::Result<()> {
    if let Some(path) = &out.history {
        record(path, r, &RunMeta::of(m, out.history_label.clone()))?;
    }
    Ok(())
}

/// Records a finished run into the history at `path`; prints where.
pub fn record(path: &Path, r: &RunResults, meta: &RunMeta) -> anyhow::Result<i64> {
    let id = History::open(path)?.record(r, meta)?;
    eprintln!(
        "history: recorded as run {id} in {} (`kernel-matrix history --history {}` shows what changed)",
        path.display(),
        crate::escape::shell_word(&path.to_string_lossy())
    );
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(verdict: Outcome) -> RunResults {
        let mut k = crate::report::results::tests::sample("6.1");
        k.cells.truncate(1);
        k.cells[0].verdict = verdict;
        RunResults::new(vec![k])
    }

    #[test]
    fn records_and_reads_back_a_run() {
        let dir = tempdir();
        let path = dir.join("h.sqlite");
        let mut h = History::open(&path).unwrap();
        let meta = RunMeta {
            started: 1_764_900_000,
            commit: Some("abc".into()),
            matrix: "kernels.yaml".into(),
            builds: [("6.1".to_string(), ("6.1.158-1".to_string(), "00ff".to_string()))].into(),
            ..Default::default()
        };
        let id = h.record(&results(Outcome::Fail), &meta).unwrap();
        let h = History::open_read(&path).unwrap();
        let run = h.run(id).unwrap();
        assert_eq!(run.run.started, "2025-12-05 02:00:00");
        assert_eq!(run.kernels["6.1"].build.as_deref(), Some("6.1.158-1"));
        let cell = run.cells.values().next().unwrap();
        assert_eq!(cell.verdict, Outcome::Fail);
        assert_eq!(cell.metrics.get("insns"), Some(&12.0));
        assert_eq!(h.run_ids().unwrap(), vec![id]);
        assert_eq!(h.last_before("2025-12-06").unwrap(), Some(id));
        assert_eq!(h.last_before("2025-12-05").unwrap(), None);
        assert!(h.last_before("last tuesday").is_err());
    }

    /// A file written by schema 1 (before `attempts`) is migrated in place: its
    /// runs read back, and new runs record their attempts.
    #[test]
    fn migrates_a_schema_1_file() {
        let dir = tempdir();
        let path = dir.join("v1.sqlite");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.execute_batch(
            "INSERT INTO runs VALUES (1, 1764900000, NULL, 'kernels.yaml', 'kernel-matrix 0.1', NULL);
             INSERT INTO cells VALUES (1, '6.1', 'x::load', 'fail', NULL, 'why', 1.0);",
        )
        .unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        drop(c);
        let mut h = History::open(&path).unwrap();
        let old = h.run(1).unwrap();
        assert_eq!(old.cells[&("6.1".to_string(), "x::load".to_string())].attempts, None);
        let mut r = results(Outcome::Pass);
        r.kernels[0].cells[0].attempts =
            vec![crate::report::results::Attempt { verdict: Outcome::Fail, reason: Some("timed out".into()) }];
        let id = h.record(&r, &RunMeta { started: 1_764_990_000, ..Default::default() }).unwrap();
        let new = h.run(id).unwrap();
        assert_eq!(new.cells.values().next().unwrap().attempts.as_deref(), Some("FP"));
        let version: i64 = h.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn refuses_what_is_not_a_history_and_leaves_it_untouched() {
        let dir = tempdir();
        let junk = dir.join("junk");
        std::fs::write(&junk, b"not a database, just some text that is long enough to have a header").unwrap();
        let before = std::fs::read(&junk).unwrap();
        let e = History::open(&junk).err().unwrap();
        assert!(matches!(e, HistoryError::NotAHistory(..)), "{e}");
        assert!(e.to_string().contains("left untouched"), "{e}");
        assert_eq!(std::fs::read(&junk).unwrap(), before);

        let newer = dir.join("newer.sqlite");
        let c = Connection::open(&newer).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(c);
        let before = std::fs::read(&newer).unwrap();
        let e = History::open(&newer).err().unwrap();
        assert!(matches!(e, HistoryError::Newer { .. }), "{e}");
        assert_eq!(std::fs::read(&newer).unwrap(), before);

        assert!(matches!(History::open_read(&dir.join("absent")), Err(HistoryError::Missing(_))));
    }

    fn tempdir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("km-history-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
