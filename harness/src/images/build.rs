//! `build:` kernels: built from a source tarball or a kernel tree by the harness,
//! with `make tinyconfig` + the BPF-ready fragment (`vm-images/bpf.config`) + the
//! user's fragments, then cached like any other kernel image.
//!
//! The cache key is the source's digest (a tarball's sha256; a tree's file names,
//! sizes and modification times), every fragment's text and the compiler's
//! version: a second run with the same inputs builds nothing. The build runs out
//! of tree (`O=`) in `cache/builds/<key>/`, its output in `build.log` there.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _};
use sha2::{Digest as _, Sha256};

use crate::{config::BuildSource, images::KernelImage};

/// The fragment every `build:` kernel gets (see its comments).
pub const BPF_CONFIG: &str = include_str!("../../../vm-images/bpf.config");

/// What building a kernel needs on the host, by the Debian package that has it.
pub const BUILD_TOOLS: &[(&str, &str)] =
    &[("make", "make"), ("gcc", "gcc"), ("flex", "flex"), ("bison", "bison"), ("bc", "bc"), ("pahole", "dwarves")];

/// The image of `b` if the cache holds it (builds nothing).
pub fn cached(
    cache: &Path,
    b: &BuildSource,
    resolve: impl Fn(&Path) -> PathBuf,
) -> anyhow::Result<Option<KernelImage>> {
    let key = cache_key(&digest(b, &resolve)?, &fragments(b, &resolve)?)?;
    super::read_entry(&cache.join("kernels").join(format!("build-{key}")))
}

/// The cache entries of `b`'s build (paths under the cache), for `cache` to keep.
/// A git source's key is the commit its ref names now (`git ls-remote`).
pub fn cache_entries(b: &BuildSource, resolve: impl Fn(&Path) -> PathBuf) -> anyhow::Result<Vec<String>> {
    let d = digest(b, &resolve)?;
    let key = cache_key(&d, &fragments(b, &resolve)?)?;
    let mut out = vec![format!("kernels/build-{key}"), format!("builds/{key}")];
    if b.url().is_some() {
        out.push(format!("sources/{d}"));
    }
    Ok(out)
}

/// The source's digest: a URL's declared sha256 (so a cached build needs no
/// download), else [`source_digest`], held to `sha256:` where one is given.
fn digest(b: &BuildSource, resolve: &impl Fn(&Path) -> PathBuf) -> anyhow::Result<String> {
    if let Some(url) = &b.git {
        return Ok(format!("git {}", git_commit(url, b.git_ref.as_deref().unwrap_or("HEAD"))?));
    }
    if let (Some(_), Some(sha)) = (b.url(), &b.sha256) {
        return Ok(sha.to_lowercase());
    }
    let source = resolve(b.source.as_deref().context("`build:` without a source")?);
    let d = source_digest(&source)?;
    if let Some(want) = &b.sha256 {
        anyhow::ensure!(
            d.eq_ignore_ascii_case(want),
            "build source {}: sha256 {d}, but `sha256:` says {want}",
            source.display()
        );
    }
    Ok(d)
}

/// A tarball at a URL, in the cache as `sources/<sha256>`, downloaded (and
/// verified against its `sha256:`) only when it is not there yet.
pub fn fetch_source(cache: &Path, url: &str, sha256: &str, progress: impl FnMut(u64)) -> anyhow::Result<PathBuf> {
    let dir = cache.join("sources");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::images::cache_gc::remove_stale(&dir);
    let dest = dir.join(sha256.to_lowercase());
    let name = url.rsplit('/').next().unwrap_or(url);
    crate::images::fetch::fetch_verified(url, name, &sha256.to_lowercase(), &dest, progress)?;
    Ok(dest)
}

/// The image of `b` from the cache, built first if it is not there.
pub fn ensure_built(
    cache: &Path,
    b: &BuildSource,
    resolve: impl Fn(&Path) -> PathBuf,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<KernelImage> {
    let fragments = fragments(b, &resolve)?;
    let key = cache_key(&digest(b, &resolve)?, &fragments)?;
    let entry = cache.join("kernels").join(format!("build-{key}"));
    if let Some(img) = super::read_entry(&entry)? {
        return Ok(img);
    }
    missing_tools()?;
    let work = cache.join("builds").join(&key);
    let (src, obj) = (work.join("src"), work.join("obj"));
    fs::create_dir_all(&obj).with_context(|| format!("creating {}", obj.display()))?;
    let source = match (b.url(), &b.sha256, &b.git) {
        (_, _, Some(url)) => {
            let rev = b.git_ref.as_deref().unwrap_or("HEAD");
            progress(&format!("fetching {rev} of {url}"));
            git_checkout(url, rev, &src)?;
            src.clone()
        }
        (Some(url), Some(sha), _) => {
            progress(&format!("downloading {url}"));
            fetch_source(cache, url, sha, |_| {})?
        }
        _ => resolve(b.source.as_deref().context("`build:` without a source")?),
    };
    let tree = if source.is_dir() {
        source.clone()
    } else {
        progress(&format!("unpacking {}", source.display()));
        unpack(&source, &src)?;
        src
    };
    let log = work.join("build.log");
    let start = Instant::now();
    progress(&format!("configuring (tinyconfig + vm-images/bpf.config{})", user_note(b)));
    configure(&tree, &obj, &fragments, &log)?;
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    progress(&format!("building bzImage with {jobs} jobs (log: {})", log.display()));
    make(&tree, &obj, &[&format!("-j{jobs}"), "bzImage"], &log)?;
    let release = make_output(&tree, &obj, "kernelrelease")?;
    let bzimage = fs::read(obj.join("arch/x86/boot/bzImage")).context("reading the built bzImage")?;
    let config = fs::read(obj.join(".config")).context("reading the built .config")?;
    progress(&format!("built {release} in {:.0} s", start.elapsed().as_secs_f64()));
    let img = super::make_entry(&entry, &release, &bzimage, Some(&config))?;
    // The tree and objects are large (GBs with debug info); the image is kept.
    let _ = fs::remove_dir_all(&work);
    Ok(img)
}

/// The commit `rev` names in the repository `url`: itself when it is a full
/// commit id, else what `git ls-remote` says the branch or tag points at.
pub fn git_commit(url: &str, rev: &str) -> anyhow::Result<String> {
    if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(rev.to_lowercase());
    }
    let peeled = format!("{rev}^{{}}");
    let out =
        Command::new("git").args(["ls-remote", "--", url, rev, &peeled]).output().context("running git ls-remote")?;
    if !out.status.success() {
        bail!("git ls-remote {url}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // A tag's peeled commit (`refs/tags/v6.6^{}`) where there is one, else the ref's own.
    let lines: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('\t')).collect();
    let pick = lines.iter().find(|(_, r)| r.ends_with("^{}")).or_else(|| lines.first());
    match pick {
        Some((commit, _)) => Ok(commit.to_string()),
        None => bail!("{url} has no branch or tag {rev:?}"),
    }
}

/// A shallow checkout of `rev` of `url` in `dest` (made anew), which must be the
/// commit [`git_commit`] resolved: a branch that moved in between is an error,
/// not a silently different kernel.
fn git_checkout(url: &str, rev: &str, dest: &Path) -> anyhow::Result<()> {
    let want = git_commit(url, rev)?;
    let _ = fs::remove_dir_all(dest);
    fs::create_dir_all(dest)?;
    let git = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("git").arg("-C").arg(dest).args(args).output().context("running git")?;
        if !out.status.success() {
            bail!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    git(&["init", "-q"])?;
    // By name where it is one (servers need not serve arbitrary commits).
    let what = if rev == want { want.as_str() } else { rev };
    git(&["fetch", "-q", "--depth", "1", "--", url, what])?;
    let got = git(&["rev-parse", "FETCH_HEAD^{commit}"])?;
    anyhow::ensure!(got == want, "{url} {rev} moved from {want} to {got} while fetching; run again");
    git(&["checkout", "-q", "FETCH_HEAD"])?;
    Ok(())
}

fn user_note(b: &BuildSource) -> String {
    if b.config.is_empty() {
        String::new()
    } else {
        format!(" + {} fragment(s) of yours", b.config.len())
    }
}

/// Ours first, then the user's, each as (name, text).
fn fragments(b: &BuildSource, resolve: &impl Fn(&Path) -> PathBuf) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = vec![("vm-images/bpf.config".to_string(), BPF_CONFIG.to_string())];
    for f in &b.config {
        let p = resolve(f);
        let text = fs::read_to_string(&p).with_context(|| format!("reading config fragment {}", p.display()))?;
        out.push((p.display().to_string(), text));
    }
    Ok(out)
}

/// (source digest, fragments, compiler) as 32 hex digits.
fn cache_key(source_digest: &str, fragments: &[(String, String)]) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    h.update(source_digest.as_bytes());
    for (_, text) in fragments {
        h.update(b"\0fragment\0");
        h.update(text.as_bytes());
    }
    let cc = Command::new("gcc").arg("--version").output().context("running gcc --version")?;
    h.update(&cc.stdout);
    Ok(hex::encode(h.finalize())[..32].to_string())
}

/// A tarball's sha256, or for a tree every file's path, size and modification
/// time (cheap on a kernel tree, and changed by any edit), `.git` and build
/// output left out.
fn source_digest(source: &Path) -> anyhow::Result<String> {
    if source.is_file() {
        return crate::images::fetch::sha256_file(source).with_context(|| format!("reading {}", source.display()));
    }
    if !source.join("Makefile").is_file() || !source.join("Kconfig").is_file() {
        bail!("build source {}: neither a tarball nor a kernel tree (no Makefile and Kconfig)", source.display());
    }
    let mut h = Sha256::new();
    let mut stack = vec![source.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
            let name = e.file_name();
            if name == ".git" || name.to_string_lossy().ends_with(".o") {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                files.push((e.path(), m.len(), mtime.map(|d| d.as_nanos()).unwrap_or(0)));
            }
        }
    }
    files.sort();
    for (p, len, mtime) in files {
        h.update(format!("{}\0{len}\0{mtime}\n", p.strip_prefix(source).unwrap_or(&p).display()).as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

fn missing_tools() -> anyhow::Result<()> {
    let missing: Vec<String> = BUILD_TOOLS
        .iter()
        .filter(|(tool, _)| Command::new(tool).arg("--version").output().is_err())
        .map(|(tool, package)| format!("{tool} (package {package})"))
        .collect();
    if !missing.is_empty() {
        bail!("building a kernel needs {} (`cargo xtask setup` installs them)", missing.join(", "));
    }
    Ok(())
}

/// Unpacks a kernel tarball into `dest` (its top directory stripped).
fn unpack(tarball: &Path, dest: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(dest);
    fs::create_dir_all(dest)?;
    // tar picks the decompressor (xz, gzip, bzip2, zstd) from the file itself.
    let out = Command::new("tar")
        .arg("-xf")
        .arg(tarball)
        .arg("-C")
        .arg(dest)
        .arg("--strip-components=1")
        .output()
        .context("running tar")?;
    if !out.status.success() {
        bail!("unpacking {}: {}", tarball.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// tinyconfig, the fragments merged (the kernel's own merge_config.sh), then
/// olddefconfig; every option a fragment asks for must be in the result.
fn configure(tree: &Path, obj: &Path, fragments: &[(String, String)], log: &Path) -> anyhow::Result<()> {
    make(tree, obj, &["tinyconfig"], log)?;
    let mut paths = Vec::new();
    for (i, (_, text)) in fragments.iter().enumerate() {
        let p = obj.join(format!("km-fragment-{i}.config"));
        fs::write(&p, text)?;
        paths.push(p);
    }
    let merge = tree.join("scripts/kconfig/merge_config.sh");
    let out = Command::new("sh")
        .arg(&merge)
        .args(["-m", "-O"])
        .arg(obj)
        .arg(obj.join(".config"))
        .args(&paths)
        .output()
        .with_context(|| format!("running {}", merge.display()))?;
    append_log(log, &out.stdout, &out.stderr);
    if !out.status.success() {
        bail!("merging the config fragments failed; log: {}", log.display());
    }
    make(tree, obj, &["olddefconfig"], log)?;
    let got = super::kconfig::parse(&fs::read_to_string(obj.join(".config"))?);
    let mut unmet = Vec::new();
    for (name, text) in fragments {
        for (k, v) in super::kconfig::parse(text) {
            if got.get(&k) != Some(&v) {
                let now = got.get(&k).map(|g| format!("{k}={g}")).unwrap_or_else(|| format!("{k} unset"));
                unmet.push(format!(
                    "{k}={v} ({name}; the config has {now}: a dependency is missing or this kernel has no such option)"
                ));
            }
        }
    }
    if !unmet.is_empty() {
        bail!("the kernel's configuration lacks what was asked for:\n  {}", unmet.join("\n  "));
    }
    Ok(())
}

fn append_log(log: &Path, out: &[u8], err: &[u8]) {
    use std::io::Write as _;
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = f.write_all(out);
        let _ = f.write_all(err);
    }
}

/// `make -C tree O=obj ARGS`, its output appended to `log` as it comes (follow it
/// with `tail -f` during a long build); a failure shows the log's tail and where
/// the whole log is.
fn make(tree: &Path, obj: &Path, args: &[&str], log: &Path) -> anyhow::Result<()> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let status = Command::new("make")
        .arg("-C")
        .arg(tree)
        .arg(format!("O={}", obj.display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .context("running make")?;
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        bail!(
            "make {} failed; the log's tail ({}):\n{}",
            args.join(" "),
            log.display(),
            crate::escape::tail(&text, 30)
        );
    }
    Ok(())
}

fn make_output(tree: &Path, obj: &Path, target: &str) -> anyhow::Result<String> {
    let out = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(tree)
        .arg(format!("O={}", obj.display()))
        .arg(target)
        .output()
        .context("running make")?;
    if !out.status.success() {
        bail!("make {target}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_refs_resolve_to_commits_and_check_out() {
        let dir = std::env::temp_dir().join(format!("km-build-git-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let repo = dir.join("repo");
        fs::create_dir_all(&repo).unwrap();
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["-c", "user.name=km", "-c", "user.email=km@invalid"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git(&["init", "-q", "-b", "main"]);
        fs::write(repo.join("Makefile"), "one\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "one"]);
        git(&["tag", "-a", "v1", "-m", "v1"]);
        let first = git(&["rev-parse", "HEAD"]);
        fs::write(repo.join("Makefile"), "two\n").unwrap();
        git(&["commit", "-q", "-am", "two"]);
        let second = git(&["rev-parse", "HEAD"]);
        let url = repo.display().to_string();
        assert_eq!(git_commit(&url, "main").unwrap(), second);
        assert_eq!(git_commit(&url, "v1").unwrap(), first, "an annotated tag names its commit");
        assert_eq!(git_commit(&url, &first).unwrap(), first);
        let e = git_commit(&url, "bpf-next").unwrap_err().to_string();
        assert!(e.contains("no branch or tag \"bpf-next\""), "{e}");
        let out = dir.join("out");
        git_checkout(&url, "v1", &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("Makefile")).unwrap(), "one\n");
        git_checkout(&url, "main", &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("Makefile")).unwrap(), "two\n");
        git_checkout(&url, &first, &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("Makefile")).unwrap(), "one\n", "a commit by its id");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_bpf_fragment_asks_for_btf_pvh_and_trampolines() {
        let c = crate::images::kconfig::parse(BPF_CONFIG);
        for k in ["CONFIG_DEBUG_INFO_BTF", "CONFIG_PVH", "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS", "CONFIG_BPF_JIT"] {
            assert_eq!(c.get(k).map(String::as_str), Some("y"), "{k}");
        }
        assert_eq!(c.get("CONFIG_SERIAL_8250_NR_UARTS").map(String::as_str), Some("4"));
    }

    #[test]
    fn a_tree_that_is_no_kernel_is_refused() {
        let d = std::env::temp_dir().join(format!("km-build-notree-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let e = source_digest(&d).unwrap_err().to_string();
        assert!(e.contains("neither a tarball nor a kernel tree"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }
}
