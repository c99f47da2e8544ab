//! The web dashboard's files, embedded in the binary and served at `/` and
//! `/web/...` by the same listener as the API.
//!
//! The files hold no data: the page asks the API for everything with the
//! secret the user gives it, so they are open without one (see
//! [`super::auth`]). Only the files named in [`ASSETS`] are served; any
//! other path under `/web/` is not a route.

/// One embedded file.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// Every file of the dashboard. `/` serves the first.
pub static ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../assets/web/index.html"),
    },
    Asset {
        path: "/web/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/web/app.js"),
    },
    Asset {
        path: "/web/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/web/api.js"),
    },
    Asset {
        path: "/web/charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/web/charts.js"),
    },
    Asset {
        path: "/web/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/web/style.css"),
    },
    Asset {
        path: "/web/icon.png",
        content_type: "image/png",
        body: include_bytes!("../../assets/icon.png"),
    },
];

/// The page may load only its own files and talk only to its own origin;
/// no frame may embed it, and it sends no referrer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The embedded file served at `path` (without its query), if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// The headers every dashboard file is sent with, besides its type.
pub fn headers(asset: &Asset) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", asset.content_type.to_owned()),
        // Small files: the browser checks each time, so a new binary's
        // page is never mixed with an old script.
        ("Cache-Control", "no-cache".to_owned()),
        ("X-Content-Type-Options", "nosniff".to_owned()),
        ("Referrer-Policy", "no-referrer".to_owned()),
        (
            "Content-Security-Policy",
            CONTENT_SECURITY_POLICY.to_owned(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_path_and_a_body() {
        let mut paths: Vec<&str> = ASSETS.iter().map(|asset| asset.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len());
        assert!(ASSETS.iter().all(|asset| !asset.body.is_empty()));
        assert_eq!(
            find("/").map(|a| a.content_type),
            Some("text/html; charset=utf-8")
        );
        assert!(find("/web/nope.js").is_none());
        assert!(find("/web/../secret").is_none());
    }

    #[test]
    fn the_page_names_only_embedded_scripts_and_styles() {
        let page = std::str::from_utf8(find("/").map_or(&[][..], |a| a.body)).expect("UTF-8");
        let references: Vec<&str> = page
            .split(['"', '\''])
            .filter(|s| s.starts_with("web/"))
            .collect();
        assert!(!references.is_empty());
        for reference in references {
            assert!(
                find(&format!("/{reference}")).is_some(),
                "{reference} is not embedded"
            );
        }
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
