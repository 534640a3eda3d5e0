//! "Did you mean": the known word nearest a mistyped one, for the messages that refuse a value.

/// The one of `known` that `word` most likely meant: at most two edits away (one for words of up
/// to four letters), or a word it starts with (`warning`: `warn`), compared without case; `None`
/// when nothing is that near.
pub fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let allowed = if word.chars().count() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|candidate| {
            let candidate_lower = candidate.to_ascii_lowercase();
            let edits = match candidate_lower.len() >= 3 && word.starts_with(&candidate_lower) {
                true => 1,
                false => distance(&word, &candidate_lower),
            };
            (edits, *candidate)
        })
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, with a swap of two neighbours counting as one edit.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_find_the_word_and_far_ones_nothing() {
        let levels = ["trace", "debug", "info", "warn", "error", "off"];
        assert_eq!(did_you_mean("inof", &levels), Some("info"));
        assert_eq!(did_you_mean("INFO", &levels), Some("info"));
        assert_eq!(did_you_mean("warning", &levels), Some("warn"));
        assert_eq!(did_you_mean("eror", &levels), Some("error"));
        assert_eq!(did_you_mean("verbose", &levels), None);
        let params = ["sslmode", "sslrootcert", "application_name"];
        assert_eq!(did_you_mean("sslmod", &params), Some("sslmode"));
        assert_eq!(did_you_mean("ssl_mode", &params), Some("sslmode"));
        assert_eq!(
            did_you_mean("applicationname", &params),
            Some("application_name")
        );
        assert_eq!(did_you_mean("xyz", &params), None);
    }
}
