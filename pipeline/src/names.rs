//! Names in pipeline files: which are valid, and "did you mean" for a misspelt one.

/// Longest stage id, in bytes: an id names the stage's folder in the run directory, and a file
/// name holds at most 255 bytes.
pub const MAX_STAGE_ID: usize = 200;

/// Most character pairs one "did you mean" compares: Jaro-Winkler compares every character of
/// the misspelt name with those of each candidate, so a long name against thousands of
/// candidates would cost their product. Candidates past this are left out.
const MAX_SUGGESTION_WORK: usize = 1 << 18;

/// A name: letters, digits, `_` and `-` (pipeline names, output names, template names).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// "did you mean" for a misspelt name: the closest candidate among those compared within
/// [`MAX_SUGGESTION_WORK`] (the rest are not looked at).
pub(crate) fn suggest<S: AsRef<str>>(
    wrong: &str,
    candidates: impl IntoIterator<Item = S>,
) -> String {
    let least = wrong.len().max(1);
    let mut work_left = MAX_SUGGESTION_WORK;
    let mut best: Option<(f64, S)> = None;
    for candidate in candidates {
        if work_left < least {
            break;
        }
        let c = candidate.as_ref();
        let work = least.saturating_mul(c.len().max(1));
        if work > work_left {
            continue;
        }
        work_left -= work;
        let score = strsim::jaro_winkler(wrong, c);
        if score > 0.8 && best.as_ref().is_none_or(|(b, _)| score >= *b) {
            best = Some((score, candidate));
        }
    }
    match best {
        Some((_, c)) => format!(" (did you mean `{}`?)", c.as_ref()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_compare_what_the_work_allows() {
        assert_eq!(
            suggest("emitt", ["emit", "concat"]),
            " (did you mean `emit`?)"
        );
        // A name too long to compare with a long candidate is not compared with it, but
        // still with the short ones after it.
        let long = "e".repeat(1 << 10);
        let candidates = [long.as_str(), "emit"];
        assert_eq!(suggest(&"e".repeat(1 << 9), candidates), "");
        assert_eq!(suggest("emitt", candidates), " (did you mean `emit`?)");
    }
}
