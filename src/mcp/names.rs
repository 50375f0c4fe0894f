//! Model-facing tool names: `<server>__<tool>`, within the 64 characters of `[a-zA-Z0-9_-]`
//! that OpenAI and Anthropic accept, unique across all servers.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The longest tool name the model APIs accept.
pub const MAX_NAME_LEN: usize = 64;
const SEPARATOR: &str = "__";
/// `_` plus 8 hex digits.
const SUFFIX_LEN: usize = 9;

/// Replaces every character outside `[a-zA-Z0-9_-]` with `_`.
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

/// A short, stable fingerprint of the original pair, so cut or clashing names stay distinct
/// and do not depend on which other tools exist.
fn suffix(server: &str, tool: &str) -> String {
    let digest =
        Sha256::new().chain_update(server.as_bytes()).chain_update([0u8]).chain_update(tool.as_bytes()).finalize();
    format!("_{}", hex::encode(&digest[..4]))
}

fn with_suffix(base: &str, server: &str, tool: &str) -> String {
    let mut name: String = base.chars().take(MAX_NAME_LEN - SUFFIX_LEN).collect();
    name.push_str(&suffix(server, tool));
    name
}

/// Model-facing names for `(server, tool)` pairs, deterministic whatever their order.
///
/// A name that fits and clashes with no other is `<server>__<tool>` (sanitised). A name that
/// is too long, or that clashes after sanitising, is cut and given a suffix hashed from the
/// original pair, so every member of a clash is renamed the same way whichever came first.
pub fn assign(pairs: &[(String, String)]) -> BTreeMap<(String, String), String> {
    let bases: Vec<String> =
        pairs.iter().map(|(server, tool)| format!("{}{SEPARATOR}{}", sanitize(server), sanitize(tool))).collect();
    let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
    for base in &bases {
        *uses.entry(base.as_str()).or_default() += 1;
    }
    pairs
        .iter()
        .zip(&bases)
        .map(|((server, tool), base)| {
            let name = if base.len() > MAX_NAME_LEN || uses[base.as_str()] > 1 {
                with_suffix(base, server, tool)
            } else {
                base.clone()
            };
            ((server.clone(), tool.clone()), name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(server: &str, tool: &str) -> (String, String) {
        (server.to_owned(), tool.to_owned())
    }

    fn valid(name: &str) -> bool {
        name.len() <= MAX_NAME_LEN
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn plain_names_are_server_and_tool() {
        let names = assign(&[pair("demo", "sum")]);
        assert_eq!(names[&pair("demo", "sum")], "demo__sum");
    }

    #[test]
    fn clashes_after_sanitising_get_distinct_stable_names() {
        let pairs = [pair("calc.a", "sum"), pair("calc_a", "sum")];
        let names = assign(&pairs);
        let first = &names[&pairs[0]];
        let second = &names[&pairs[1]];
        assert_ne!(first, second);
        assert!(valid(first) && valid(second));
        let reversed = assign(&[pairs[1].clone(), pairs[0].clone()]);
        assert_eq!(&reversed[&pairs[0]], first);
    }

    #[test]
    fn long_names_are_cut_and_distinct() {
        let server = "s".repeat(40);
        let pairs =
            [pair(&server, &format!("{}one", "t".repeat(40))), pair(&server, &format!("{}two", "t".repeat(40)))];
        let names = assign(&pairs);
        assert!(valid(&names[&pairs[0]]), "{}", names[&pairs[0]]);
        assert_ne!(names[&pairs[0]], names[&pairs[1]]);
    }

    #[test]
    fn unicode_is_replaced() {
        let names = assign(&[pair("démo", "ad/d")]);
        assert_eq!(names[&pair("démo", "ad/d")], "d_mo__ad_d");
    }
}
