//! Fuzzing kernels.yaml parsing (proptest): random YAML-ish text and mutations of
//! the real kernels.yaml must never panic, and every error must say where (file:
//! line:column) or, for the few errors that have no single place, be a clear
//! sentence naming the file. Failing cases proptest finds are kept in
//! `tests/config_fuzz.proptest-regressions` (committed) and replayed first.
use std::path::{Path, PathBuf};

use kernel_matrix::config::{ConfigError, MatrixConfig};
use proptest::prelude::*;

fn real_yaml() -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernels.yaml")).unwrap()
}

/// Parses and checks the error's shape; returns the error text for more checks.
fn check(text: &str) -> Option<String> {
    let path = Path::new("fuzz/kernels.yaml");
    let r = std::panic::catch_unwind(|| MatrixConfig::parse(text, path));
    let r = match r {
        Ok(r) => r,
        Err(_) => panic!("MatrixConfig::parse panicked on:\n{text}"),
    };
    match r {
        Ok(cfg) => {
            // Whatever parses is valid: every kernel has exactly one source.
            for k in &cfg.kernels {
                let _ = k.source();
            }
            None
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz/kernels.yaml"), "error does not name the file: {msg:?}");
            match &e {
                ConfigError::Syntax { line, column, message, .. } => {
                    assert!(*line >= 1 && *column >= 1, "syntax error without a location: {msg:?} for:\n{text}");
                    assert!(!message.trim().is_empty(), "empty message: {msg:?}");
                }
                ConfigError::Invalid { message, .. } => {
                    assert!(message.len() > 10, "unclear message: {msg:?}");
                }
                ConfigError::Io { .. } => panic!("parse does no I/O: {msg:?}"),
            }
            assert!(!msg.contains('\0'));
            Some(msg)
        }
    }
}

/// Text built from YAML's building blocks and the keys kernels.yaml knows.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("kernels:".to_string()),
        Just("  - name: ".to_string()),
        Just("    debian: { suite: sid, series: ".to_string()),
        Just("    host: true".to_string()),
        Just("    local: { kernel: ./bzImage }".to_string()),
        Just("timeout_secs: ".to_string()),
        Just("memory_mb: ".to_string()),
        Just("expected_failures:".to_string()),
        Just("  - { kernel: '*', trial: x::y, reason: r }".to_string()),
        Just("mirror: ".to_string()),
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("- ".to_string()),
        Just(": ".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!str ".to_string()),
        Just("<<: *a".to_string()),
        Just("---\n".to_string()),
        Just("#".to_string()),
        Just("\t".to_string()),
        "[0-9]{1,20}",
        "-?[0-9]{1,3}\\.[0-9]{0,3}",
        "[a-z.\\-]{0,12}",
        any::<String>(),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

/// The real file with a few edits: bytes deleted, duplicated, replaced, lines swapped.
fn mutated_real() -> impl Strategy<Value = String> {
    let edit = (0usize..4, any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<char>());
    proptest::collection::vec(edit, 1..6).prop_map(|edits| {
        let mut s: Vec<char> = real_yaml().chars().collect();
        for (kind, a, b, c) in edits {
            if s.is_empty() {
                break;
            }
            let i = a.index(s.len());
            match kind {
                0 => {
                    let j = (i + 1 + b.index(8)).min(s.len());
                    s.drain(i..j);
                }
                1 => {
                    let j = (i + 1 + b.index(16)).min(s.len());
                    let dup: Vec<char> = s[i..j].to_vec();
                    s.splice(i..i, dup);
                }
                2 => s[i] = c,
                _ => {
                    let text: String = s.iter().collect();
                    let mut lines: Vec<&str> = text.lines().collect();
                    let (x, y) = (a.index(lines.len()), b.index(lines.len()));
                    lines.swap(x, y);
                    s = lines.join("\n").chars().collect();
                }
            }
        }
        s.into_iter().collect()
    })
}

proptest! {
    // Integration tests have no lib.rs/main.rs for proptest's default persistence to
    // find, so the regressions file is named here (cargo runs tests in harness/).
    #![proptest_config(ProptestConfig {
        cases: 1500,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct("tests/config_fuzz.proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn yamlish_text_never_panics(text in yamlish()) {
        check(&text);
    }

    #[test]
    fn mutated_kernels_yaml_never_panics(text in mutated_real()) {
        check(&text);
    }
}

#[test]
fn the_real_file_parses() {
    assert_eq!(check(&real_yaml()), None);
}

/// Errors that proptest found once, kept as plain cases too: each with the place
/// and words its error must have (`None`: it parses).
#[test]
fn known_nasty_inputs() {
    let cases: &[(&str, Option<&str>)] = &[
        (
            "kernels:\n---\n<<: *a    debian: { suite: sid, series: <<: *a",
            Some(":2:1: deserializing from YAML containing more than one document"),
        ),
        ("kernels: []\n---\n", Some(":2:1: deserializing from YAML containing more than one document")),
        ("---\n---\n", Some(":2:1: missing field `kernels`")),
        ("", Some(":1:1: missing field `kernels`")),
        ("\0", Some(":1:1: control characters are not allowed")),
        ("kernels:", None),
        ("kernels: ~", Some(":1:10: kernels: invalid type: unit value, expected a sequence")),
        ("kernels: [", Some(":2:1: did not find expected node content")),
        ("- a", Some(":1:1: invalid type: sequence")),
        ("kernels:\n  - name: \"\"\n    host: true\n", Some(":2:5: kernel name \"\" must be non-empty")),
        ("kernels:\n  - &a {name: x, host: true}\n  - *a\n", Some(": kernel \"x\" is listed twice")),
        ("timeout_secs: 0\nkernels: []\n", Some(": timeout_secs must be positive")),
        ("timeout_secs: 99999999999999999999999\nkernels: []\n", Some(":1:15: timeout_secs: invalid type: integer")),
    ];
    for (text, want) in cases {
        match (check(text), want) {
            (None, None) => {}
            (Some(got), Some(want)) => {
                assert!(got.starts_with(&format!("fuzz/kernels.yaml{want}")), "{text:?}: got {got:?}, want {want:?}")
            }
            (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
        }
    }
}
