//! TOML text nested too deep to parse safely. The TOML parser refuses values nested more
//! than 80 deep, but its error recovery can lose count: a `[` where an inline table expects
//! a key is skipped up to its `]` as if an array had closed, so `a = { [b] c = { [b] …`
//! recurses once per `{` without bound, and a few thousand overflow the stack. Text is
//! therefore measured with the parser's own tokens before it is parsed.

use toml_parser::lexer::TokenKind;

/// Most `[` and `{` a text may hold open at once (more than any text the parser accepts).
pub const MAX_NESTING: usize = 100;

/// Where the first `[` or `{` beyond [`MAX_NESTING`] open ones is (a byte offset), if any.
///
/// A closing bracket closes the innermost open one only when it is of its kind, as the
/// parser's own values close: the count never falls below the parser's depth, and in text
/// that parses it is the nesting itself.
pub fn too_deep(text: &str) -> Option<usize> {
    let mut open: Vec<TokenKind> = Vec::new();
    for token in toml_parser::Source::new(text).lex() {
        let kind = token.kind();
        match kind {
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => {
                open.push(kind);
                if open.len() > MAX_NESTING {
                    return Some(token.span().start());
                }
            }
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                let opener = match kind {
                    TokenKind::RightSquareBracket => TokenKind::LeftSquareBracket,
                    _ => TokenKind::LeftCurlyBracket,
                };
                if open.last() == Some(&opener) {
                    open.pop();
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_are_counted_as_the_parser_nests_them() {
        assert_eq!(too_deep("a = [[1], { b = [2] }]\n[t]\n[[u]]\n"), None);
        // In strings and comments they are text.
        assert_eq!(
            too_deep(&format!(
                "a = \"{}\" # {}\n",
                "[".repeat(500),
                "{".repeat(500)
            )),
            None
        );
        let deep = format!("a = {}{}", "[".repeat(101), "]".repeat(101));
        assert_eq!(too_deep(&deep), Some(4 + 100));
        assert_eq!(
            too_deep(&format!("a = {}{}", "[".repeat(100), "]".repeat(100))),
            None
        );
        // A `]` that closes no `[` closes nothing: inline tables left open still count.
        let recovering = format!("x = {}", "p = { [s]\n".repeat(1000));
        assert!(too_deep(&recovering).is_some());
        let mismatched = "a = [{]}".repeat(200);
        assert!(too_deep(&mismatched).is_some());
    }

    #[test]
    fn text_the_parser_recovers_from_without_limit_is_refused_first() {
        let text = format!("x = {}", "p = { [s]\n".repeat(10_000));
        let at = too_deep(&text).expect("refused");
        assert!(at < 2000, "{at}");
    }
}
