//! Where a credential sits on a `/ws/chat` upgrade (SPEC §8).

/// Browsers cannot set headers on a WebSocket, so they offer the credential as the subprotocol
/// `bearer.<credential>` beside `mcp-platform.v1`; the server selects `mcp-platform.v1` and so
/// never echoes the credential.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The credential of an upgrade request: from `Authorization: Bearer <credential>`, else from a
/// `bearer.<credential>` subprotocol offer. `authorization` is the `Authorization` header's
/// value; `protocol_offers` are the values of the `Sec-WebSocket-Protocol` header lines, each a
/// comma-separated list. An `Authorization` header of another scheme is not a bearer
/// credential and is passed over.
pub fn presented_credential<'a>(
    authorization: Option<&'a str>,
    protocol_offers: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    authorization.and_then(bearer_token).or_else(|| {
        protocol_offers
            .into_iter()
            .flat_map(|offers| offers.split(','))
            .filter_map(|offer| offer.trim().strip_prefix(BEARER_PROTOCOL_PREFIX))
            .find(|credential| !credential.is_empty())
    })
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authorization_bearer_header_presents_its_token() {
        assert_eq!(presented_credential(Some("Bearer abc.def.ghi"), []), Some("abc.def.ghi"));
        assert_eq!(presented_credential(Some("bearer   key-1 "), []), Some("key-1"));
        assert_eq!(presented_credential(Some("BEARER key-1"), ["mcp-platform.v1"]), Some("key-1"));
    }

    #[test]
    fn a_browser_presents_it_as_a_subprotocol_beside_the_protocol() {
        assert_eq!(presented_credential(None, ["mcp-platform.v1, bearer.key-1"]), Some("key-1"));
        assert_eq!(presented_credential(None, ["mcp-platform.v1", "bearer.a.b.c"]), Some("a.b.c"));
        assert_eq!(presented_credential(None, ["bearer.,mcp-platform.v1, bearer.key-2"]), Some("key-2"));
    }

    #[test]
    fn the_header_wins_over_a_subprotocol() {
        assert_eq!(presented_credential(Some("Bearer from-header"), ["bearer.from-protocol"]), Some("from-header"));
    }

    #[test]
    fn anything_else_presents_nothing() {
        assert_eq!(presented_credential(None, []), None);
        assert_eq!(presented_credential(None, ["mcp-platform.v1"]), None);
        assert_eq!(presented_credential(None, ["bearer."]), None);
        assert_eq!(presented_credential(None, ["Bearer.key"]), None, "subprotocol names are case-sensitive");
        assert_eq!(presented_credential(Some("Bearer"), []), None);
        assert_eq!(presented_credential(Some("Bearer   "), []), None);
        assert_eq!(presented_credential(Some("Basic YWxpY2U6cHc="), []), None);
        assert_eq!(presented_credential(Some("Basic YWxpY2U6cHc="), ["bearer.key-1"]), Some("key-1"));
        assert_eq!(presented_credential(Some("Bearerkey"), []), None);
    }
}
