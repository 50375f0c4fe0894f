//! Text shortening shared by layers that do not know each other: the MCP layer cuts tool
//! output for the model, the chat service cuts it further for the client's preview.

/// Cuts `text` to `max_chars` characters, saying how many were cut.
pub fn truncate(text: String, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text;
    }
    let kept: String = text.chars().take(max_chars).collect();
    format!("{kept}\n[output cut: {} of {total} characters omitted]", total - max_chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_by_characters_and_says_how_many() {
        assert_eq!(truncate("abc".into(), 3), "abc");
        assert_eq!(truncate("abcdef".into(), 2), "ab\n[output cut: 4 of 6 characters omitted]");
        assert_eq!(truncate("äöüß".into(), 1), "ä\n[output cut: 3 of 4 characters omitted]");
    }
}
