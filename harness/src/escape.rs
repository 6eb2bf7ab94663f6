//! Text made fit for where it goes: one shell quoter ([`shell_word`]), one HTML
//! escaper ([`html`]), one terminal escaper ([`terminal`]) and the last lines of
//! a log ([`tail`]).
//!
//! A leaf module: it uses nothing of the crate, so every folder may use it (the
//! guest root's `/km-exec/run.sh` as well as the reports' rerun lines).

/// `s` as one word of a POSIX shell command: as it is when every character is one
/// the shell takes literally (ASCII letters and digits, `-_./=:,+@%`), else in
/// single quotes, each `'` written `'\''`. The empty string is `''`.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `s` for HTML text or a double-quoted attribute value: `&`, `<`, `>` and `"` as
/// entities (`&` first, so nothing is escaped twice); everything else as it is.
pub fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `s` for a terminal: control characters but line breaks written as escapes
/// (`\0`, `\u{1b}`). Error messages quote their input, and a YAML `"\0"` or
/// `"\e"` would otherwise put a raw NUL or an escape sequence on the user's
/// terminal (found by config_fuzz).
pub fn terminal(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\n' { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// The last `n` lines of `text` (a console, a build log).
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_control_characters_but_line_breaks() {
        assert_eq!(terminal("a\0b\x1b[1m\tc\nd é"), "a\\u{0}b\\u{1b}[1m\\tc\nd é");
    }

    #[test]
    fn shell_word_quotes_only_what_needs_it() {
        // Left alone: the characters no POSIX shell treats specially.
        assert_eq!(shell_word("6.1::x::load"), "6.1::x::load");
        assert_eq!(shell_word("/t/prog"), "/t/prog");
        assert_eq!(shell_word("KM_X=a,b+c@d%e"), "KM_X=a,b+c@d%e");
        // Quoted: anything else, the empty word and non-ASCII included.
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("~"), "'~'");
        assert_eq!(shell_word("$HOME;*"), "'$HOME;*'");
        assert_eq!(shell_word("café"), "'café'");
        // A single quote closes the quotes, is escaped, and reopens them.
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("'"), "''\\'''");
    }

    #[test]
    fn html_escapes_the_four_specials_once() {
        assert_eq!(html("report <x>"), "report &lt;x&gt;");
        assert_eq!(html("bad <verdict> & | pipes"), "bad &lt;verdict&gt; &amp; | pipes");
        assert_eq!(html("say \"hi\""), "say &quot;hi&quot;");
        assert_eq!(html("&lt;"), "&amp;lt;", "an entity in the text is text");
        assert_eq!(html("it's 6.1::x"), "it's 6.1::x");
    }
}
