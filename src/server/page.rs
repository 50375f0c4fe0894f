//! `GET /`: the browser chat page (SPEC §9), served from files compiled into the binary.
//!
//! The page's files live in `web/` and are embedded with `include_bytes!`, so the binary needs
//! nothing beside it and `cargo build` needs no Node: the page has no build step. Assets are
//! served under `/assets/<version>/<file>`, where `<version>` is a hash of every asset. That
//! lets browsers keep them for a year (`immutable`) while the page's relative module imports
//! (`./connection.js`) work unchanged, and a new build changes every asset URL at once. The
//! HTML itself is `no-cache`: revalidated by its ETag on every load, so a browser picks up a
//! new version at once.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// No inline script or style, nothing from another origin; the socket and `/api` are same
/// origin. `img-src data:` admits the images tools return. Trusted Types confine `innerHTML`
/// to DOMPurify's output, the only HTML the page inserts.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types dompurify";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Stands for `/assets/<version>` in `web/index.html`.
const ASSET_BASE_PLACEHOLDER: &str = "{{assets}}";

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const SVG: &str = "image/svg+xml";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset { name: $name, content_type: $content_type, bytes: include_bytes!(concat!("../../web/", $name)) }
    };
}

/// Every file the page may load; `web/vendor/README.md` records where the vendored ones come from.
const ASSETS: &[Asset] = &[
    asset!("app.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("app.js", JAVASCRIPT),
    asset!("api.js", JAVASCRIPT),
    asset!("connection.js", JAVASCRIPT),
    asset!("markdown.js", JAVASCRIPT),
    asset!("transcript.js", JAVASCRIPT),
    asset!("questions.js", JAVASCRIPT),
    asset!("requests.js", JAVASCRIPT),
    asset!("dom.js", JAVASCRIPT),
    asset!("vendor/marked.esm.js", JAVASCRIPT),
    asset!("vendor/purify.min.js", JAVASCRIPT),
    asset!("vendor/marked.LICENSE", TEXT),
    asset!("vendor/dompurify.LICENSE", TEXT),
];

const INDEX_TEMPLATE: &str = include_str!("../../web/index.html");

/// The page as this binary serves it, computed once.
struct Page {
    version: String,
    index: String,
    index_etag: HeaderValue,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let mut hasher = Sha256::new();
    for asset in ASSETS {
        // The name is hashed too, so moving bytes between files also yields a new version.
        hasher.update(asset.name.as_bytes());
        hasher.update([0]);
        hasher.update(asset.bytes);
    }
    let version = hex::encode(&hasher.finalize()[..8]);
    let index = INDEX_TEMPLATE.replace(ASSET_BASE_PLACEHOLDER, &format!("/assets/{version}"));
    let index_etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&Sha256::digest(&index)[..8])))
        .expect("a quoted hex string is a valid header value");
    Page { version, index, index_etag }
});

/// `GET /`.
pub async fn index(request_headers: HeaderMap) -> Response {
    let page = &*PAGE;
    let mut headers = security_headers();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, page.index_etag.clone());
    if request_headers.get(header::IF_NONE_MATCH) == Some(&page.index_etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    (headers, page.index.clone()).into_response()
}

/// `GET /assets/{version}/{*file}`: only this build's version; an older page's asset URL is a
/// 404 rather than today's bytes cached for a year under yesterday's name.
pub async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    let found = ASSETS.iter().find(|asset| asset.name == file).filter(|_| version == PAGE.version);
    let mut headers = security_headers();
    let Some(asset) = found else {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let message = format!("no asset {file:?} in page version {version:?}; reload the page");
        return (StatusCode::NOT_FOUND, headers, message).into_response();
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (headers, asset.bytes).into_response()
}

fn security_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_references_only_embedded_assets_by_their_versioned_url() {
        let page = &*PAGE;
        assert!(!page.index.contains(ASSET_BASE_PLACEHOLDER));
        let prefix = format!("/assets/{}/", page.version);
        let referenced: Vec<&str> =
            page.index.match_indices(&prefix).map(|(at, _)| &page.index[at + prefix.len()..]).collect();
        assert!(!referenced.is_empty(), "the page loads its assets from {prefix}");
        for rest in referenced {
            let name = &rest[..rest.find('"').expect("a quoted URL")];
            assert!(ASSETS.iter().any(|asset| asset.name == name), "{name} is not embedded");
        }
    }
}
