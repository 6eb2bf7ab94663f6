//! The one glob matcher of the harness: kernel names (`-k 6.*`, `expected_failures:`
//! `kernel:`) and program names (a manifest's `programs: [handle_*]`).
//!
//! Shell-style, over characters (not bytes): `*` matches any run of characters,
//! the empty one too; `?` matches exactly one character; every other character,
//! `[`, `]` and `\` included, matches only itself. There are no `[...]` classes
//! and no escapes: kernel and program names have no use for them, and a pattern is
//! never malformed, so matching cannot fail.
//!
//! Hand-written rather than the `glob` crate's `Pattern`: that crate is not among
//! our dependencies, and its `Pattern` brings `[...]` classes, `**` path rules and
//! a parse error for patterns such as `[`, none of which these names want.
//!
//! A leaf module: it uses nothing of the crate, so every folder may use it.

/// Whether `s` matches `pattern` (see the module's rules).
///
/// Greedy with one backtrack point (the last `*`), so its time is at most
/// `pattern.len() * s.len()` steps, never exponential.
pub fn matches(pattern: &str, s: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    // `star`: the last `*` seen; `mark`: where in `n` its run currently ends.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some(st) = star {
            // Let the last `*` take one more character and retry after it.
            pi = st + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn star_is_any_run_question_mark_one_char_the_rest_literal() {
        // `*`: any run, the empty one too, anywhere in the pattern.
        assert!(matches("*", "anything") && matches("*", ""));
        assert!(matches("**", "") && matches("a**", "a"));
        assert!(matches("6.*", "6.12") && matches("6.*", "6."));
        assert!(!matches("6.*", "7.2"));
        assert!(matches("*-rc", "7.3-rc"));
        assert!(matches("unlink_*", "unlink_at") && !matches("unlink_*", "do_unlink"));
        assert!(matches("a*b*c", "aXbYbZc") && !matches("a*b", "ab_"));
        assert!(matches("*b", "*xb"), "a `*` in the pattern is a wildcard even facing a '*'");
        // `?`: exactly one character (a character, not a byte).
        assert!(matches("6.1?", "6.12") && !matches("6.1?", "6.1") && !matches("6.1?", "6.123"));
        assert!(matches("caf?", "café") && matches("?", "é"));
        // Everything else is literal and the whole name must match.
        assert!(matches("host", "host") && !matches("host", "hostx") && !matches("host", "xhost"));
        assert!(matches("6.1", "6.1") && !matches("6.1", "6x1"), "'.' is literal");
        assert!(matches("", "") && !matches("", "a"));
        // No `[...]` classes and no escapes: brackets and backslashes are themselves.
        assert!(matches("a[12]", "a[12]") && !matches("a[12]", "a1"));
        assert!(matches("[", "[") && matches("a\\*", "a\\bc") && !matches("a\\*", "a*"));
    }

    #[test]
    fn backtracking_stays_linear_in_practice() {
        let s = "a".repeat(2000);
        let p = format!("{}b", "*a".repeat(50));
        let t = std::time::Instant::now();
        assert!(!matches(&p, &s));
        assert!(matches(&"*a".repeat(50), &s));
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
