//! Text shortening: the chat service cuts tool output for the model (head and tail) and
//! for the client's preview (head).

/// Cuts `text` to `max_chars` characters, saying how many were cut.
pub fn truncate(text: String, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text;
    }
    let kept: String = text.chars().take(max_chars).collect();
    format!("{kept}\n[output cut: {} of {total} characters omitted]", total - max_chars)
}

/// Keeps the head and the tail of `text` within `max_chars` characters, with a line between
/// them saying how much of the middle was cut: the end of a long output (a summary, an error)
/// matters as much as its start. `None` when the text fits.
pub fn head_and_tail(text: &str, max_chars: usize) -> Option<String> {
    let total = text.chars().count();
    if total <= max_chars {
        return None;
    }
    let head = max_chars.div_ceil(2);
    let tail = max_chars - head;
    let kept_head: String = text.chars().take(head).collect();
    let kept_tail: String = text.chars().skip(total - tail).collect();
    Some(format!(
        "{kept_head}\n[output cut: {} of {total} characters omitted from the middle]\n{kept_tail}",
        total - max_chars
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail_and_says_how_much_of_the_middle_went() {
        assert_eq!(head_and_tail("abcdef", 6), None);
        assert_eq!(
            head_and_tail("abcdefghij", 5).as_deref(),
            Some("abc\n[output cut: 5 of 10 characters omitted from the middle]\nij")
        );
        assert_eq!(
            head_and_tail("äöüßé", 2).as_deref(),
            Some("ä\n[output cut: 3 of 5 characters omitted from the middle]\né")
        );
    }

    #[test]
    fn cuts_by_characters_and_says_how_many() {
        assert_eq!(truncate("abc".into(), 3), "abc");
        assert_eq!(truncate("abcdef".into(), 2), "ab\n[output cut: 4 of 6 characters omitted]");
        assert_eq!(truncate("äöüß".into(), 1), "ä\n[output cut: 3 of 4 characters omitted]");
    }
}
