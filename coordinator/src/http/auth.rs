//! Who may read the coordinator's HTTP views. `/healthz` and `/readyz` are
//! open (Kubernetes probes); everything else needs a token: the workers'
//! token, or a separate read-only dashboard token. Programs send it as
//! `Authorization: Bearer <token>` (Prometheus, curl); browsers log in once
//! at `/login` (a form, or `/login?token=…` from a printed link), which sets
//! an HttpOnly, SameSite=Strict cookie.

use axum::http::HeaderMap;
use std::sync::Arc;

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "cd_dashboard";

/// The accepted tokens.
#[derive(Clone)]
pub struct HttpAuth {
    tokens: Arc<Vec<Vec<u8>>>,
}

/// Equal in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl HttpAuth {
    /// Accept the workers' token and, if given, a read-only one.
    pub fn new(token: &str, read_only: Option<&str>) -> HttpAuth {
        let mut tokens = vec![token.as_bytes().to_vec()];
        if let Some(ro) = read_only.filter(|t| !t.is_empty()) {
            tokens.push(ro.as_bytes().to_vec());
        }
        HttpAuth {
            tokens: Arc::new(tokens),
        }
    }

    /// Whether `token` is accepted.
    pub fn accepts(&self, token: &str) -> bool {
        !token.is_empty() && self.tokens.iter().any(|t| same(t, token.as_bytes()))
    }

    /// Whether the request carries an accepted token (bearer header or cookie).
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
            if let Some(t) = v.strip_prefix("Bearer ") {
                return self.accepts(t.trim());
            }
        }
        headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && self.accepts(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_or_cookie_with_either_token() {
        let auth = HttpAuth::new("worker-token", Some("read-only"));
        let mut h = HeaderMap::new();
        assert!(!auth.allows(&h));
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer read-only"),
        );
        assert!(auth.allows(&h));
        h.insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert!(!auth.allows(&h));
        let mut c = HeaderMap::new();
        c.insert(
            "cookie",
            HeaderValue::from_static("a=1; cd_dashboard=worker-token"),
        );
        assert!(auth.allows(&c));
        assert!(!HttpAuth::new("t", None).accepts(""));
    }
}
