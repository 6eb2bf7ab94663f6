//! "That version is not there; these are": the versions a source does have that
//! are nearest to the one asked for, for every source's "no such kernel" error.
use std::cmp::Ordering;

/// How many versions an error lists.
const SHOWN: usize = 5;

/// The leading numbers of a version (`6.12.117+deb12` -> 6, 12, 117).
fn numbers(v: &str) -> [u64; 3] {
    let mut out = [0; 3];
    let digits = v.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    for (slot, part) in out.iter_mut().zip(digits) {
        *slot = part.parse().unwrap_or(u64::MAX);
    }
    out
}

/// The versions among `have` nearest to `want` (by major, then minor, then patch
/// distance), at most [`SHOWN`], in version order.
pub fn nearest<'a>(want: &str, have: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let w = numbers(want);
    let distance = |v: &str| {
        let n = numbers(v);
        [w[0].abs_diff(n[0]), w[1].abs_diff(n[1]), w[2].abs_diff(n[2])]
    };
    let mut all: Vec<&str> = have.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    all.sort_by_key(|v| distance(v));
    all.truncate(SHOWN);
    all.sort_by(|a, b| crate::images::debian::compare_versions(a, b).then(Ordering::Equal));
    all.into_iter().map(str::to_string).collect()
}

/// `"; nearest there: a, b, c"`, or `"; it has none"` when `have` is empty: the
/// tail of a "no such version" message.
pub fn said<'a>(want: &str, have: impl IntoIterator<Item = &'a str>) -> String {
    let near = nearest(want, have);
    if near.is_empty() {
        "; it has none of this kind".to_string()
    } else {
        format!("; nearest there: {}", near.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_by_major_then_minor_then_patch() {
        let have = ["4.18.0", "5.4.0-91", "5.15.0-91", "5.15.0-92", "6.8.0-50", "6.5.0-1", "6.1.0"];
        assert_eq!(nearest("5.10", have), ["5.4.0-91", "5.15.0-91", "5.15.0-92", "6.5.0-1", "6.8.0-50"]);
        assert_eq!(nearest("6.6", have), ["5.4.0-91", "5.15.0-91", "6.1.0", "6.5.0-1", "6.8.0-50"]);
        assert_eq!(said("6.6", []), "; it has none of this kind");
        assert!(said("6.6", ["6.8.0-50"]).ends_with("nearest there: 6.8.0-50"));
    }
}
