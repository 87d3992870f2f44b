//! The dashboard page: the same markup, style and script for the served
//! page and the self-contained file. Nothing is loaded from elsewhere (an
//! ICS network is often air-gapped): no CDN, no font, no remote script.
//!
//! Served, the script and style are the server's own files and the data
//! comes from `/api/data`; the policy allows only them (and `blob:`, the
//! page's own CSV downloads, which only hold what the page made). As one file, they
//! are inline, and its policy names exactly their SHA-256 hashes, so no
//! other inline script can run even if one got into the page.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// What the dashboard and the fleet console share (`page.js`), loaded
/// before either's own script.
pub const COMMON: &str = include_str!("../../assets/page.js");
pub const SCRIPT: &str = include_str!("../../assets/dashboard.js");
pub const STYLE: &str = include_str!("../../assets/dashboard.css");
const BODY: &str = include_str!("../../assets/dashboard-body.html");

/// The served page's Content-Security-Policy (an HTTP header).
pub const SERVED_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page the server serves; its data comes from `/api/data`. `query`
/// is what its own links carry (see [`super::serve::token_query`]).
pub fn served(query: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>modbus-detect</title><link rel=\"stylesheet\" href=\"app.css{query}\"></head><body>\n{BODY}<script src=\"page.js{query}\"></script><script src=\"app.js{query}\"></script></body></html>\n"
    )
}

/// One self-contained file: style, data and script inline, allowed by
/// their hashes alone.
pub fn standalone(data_json: &str) -> String {
    let policy = format!(
        "default-src 'none'; script-src '{}' '{}'; style-src '{}'; img-src data:; connect-src blob:; base-uri 'none'; form-action 'none'",
        hash(COMMON),
        hash(SCRIPT),
        hash(STYLE)
    );
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\"><meta name=\"viewport\" content=\"width=device-width\"><title>modbus-detect</title><style>{STYLE}</style></head><body>\n{BODY}<script id=\"data\" type=\"application/json\">{}</script><script>{COMMON}</script><script>{SCRIPT}</script></body></html>\n",
        script_safe(data_json)
    )
}

/// `'sha256-…'` of an inline block, as CSP names it.
fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// JSON that cannot end the `<script>` element it sits in: `<`, `>` and
/// `&` only occur inside JSON strings, where their `\u` escapes mean the
/// same.
pub fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_data_cannot_close_its_script() {
        let json = serde_json::json!({"name": "</script><script>alert(1)</script>&"}).to_string();
        let page = standalone(&json);
        assert_eq!(
            page.matches("</script>").count(),
            3,
            "data and the two scripts only"
        );
        let back: serde_json::Value = serde_json::from_str(&script_safe(&json)).expect("JSON");
        assert_eq!(back["name"], "</script><script>alert(1)</script>&");
    }

    #[test]
    fn the_policy_names_the_inline_scripts_and_style() {
        let page = standalone("{}");
        assert!(page.contains(&hash(COMMON)) && page.contains(&hash(SCRIPT)));
        assert!(page.contains(&hash(STYLE)));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "nothing remote"
        );
    }
}
