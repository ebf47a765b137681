//! Bearer-token auth with scopes. With no token configured everything is open (the
//! out-of-the-box default on loopback); with any, every route but `/-/healthy`, `/-/ready`
//! and the login page needs a token whose scopes cover it: 401 when there is no token or an
//! unknown one, 403 when a known token lacks the scope.
//!
//! Tokens are held only as SHA-256 digests. A presented token is digested and compared with
//! every configured digest in constant time (no early exit, equal lengths), so neither its
//! bytes nor its length leak through timing. Browsers log in once through a form: the cookie
//! holds the token's digest, never the token, and is `Secure; HttpOnly; SameSite=Strict`.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use crate::ApiError;
use crate::dashboard::Layout;

/// The cookie a logged-in browser carries: the hex SHA-256 digest of its token.
pub const SESSION_COOKIE: &str = "vigil_session";

/// What a token may do. `admin` includes the other two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send telemetry: OTLP, remote write, text import, drift values and references.
    Ingest,
    /// Read: queries, SLOs, alerts, the dashboard, `/metrics`.
    Read,
    /// Change: reload, silences.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        [Scope::Ingest, Scope::Read, Scope::Admin]
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| format!("unknown scope {text:?}; one of ingest, read, admin"))
    }
}

/// One configured token, as the config gives it.
pub struct TokenSpec {
    pub name: String,
    pub secret: String,
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSpec").field("name", &self.name).field("secret", &"<redacted>").field("scopes", &self.scopes).finish()
    }
}

type Digest = [u8; 32];

fn digest(secret: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret).as_ref());
    out
}

struct Token {
    name: String,
    digest: Digest,
    scopes: Vec<Scope>,
}

impl Token {
    fn grants(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|&s| s == scope || s == Scope::Admin)
    }
}

/// The configured tokens. Empty: auth is off.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: Arc<[Token]>,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No credential at all (401).
    Missing,
    /// A credential no configured token matches (401).
    Unknown,
    /// A known token without the scope (403).
    Forbidden { token: String, scope: Scope },
}

impl Denied {
    /// Counts the refusal in `vigil_auth_refusals_total{reason}`.
    fn count(&self) {
        let reason = match self {
            Denied::Missing => "missing",
            Denied::Unknown => "unknown",
            Denied::Forbidden { .. } => "forbidden",
        };
        metrics::counter!("vigil_auth_refusals_total", "reason" => reason).increment(1);
    }

    pub fn message(&self, scope: Scope) -> (String, String) {
        let hint = format!("send `Authorization: Bearer <token>` with a token of scope {} (auth.tokens in the config)", scope.as_str());
        match self {
            Denied::Missing => ("this endpoint needs a bearer token".into(), hint),
            Denied::Unknown => ("the bearer token is not one of the configured tokens".into(), hint),
            Denied::Forbidden { token, scope } => {
                (format!("token {token:?} lacks the {} scope", scope.as_str()), format!("use a token with the {} (or admin) scope", scope.as_str()))
            }
        }
    }
}

impl Auth {
    pub fn new(specs: Vec<TokenSpec>) -> Auth {
        let tokens: Vec<Token> = specs.into_iter().map(|s| Token { digest: digest(s.secret.as_bytes()), name: s.name, scopes: s.scopes }).collect();
        Auth { tokens: tokens.into() }
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The token with this digest, looked at in constant time over all tokens.
    fn find(&self, presented: &Digest) -> Option<&Token> {
        let mut found = None;
        for token in self.tokens.iter() {
            if bool::from(token.digest.ct_eq(presented)) {
                found = Some(token);
            }
        }
        found
    }

    /// Checks a raw token (from a header or the login form) for `scope`.
    pub fn check_secret(&self, secret: &str, scope: Scope) -> Result<(), Denied> {
        self.check_digest(&digest(secret.as_bytes()), scope)
    }

    fn check_digest(&self, presented: &Digest, scope: Scope) -> Result<(), Denied> {
        match self.find(presented) {
            None => Err(Denied::Unknown),
            Some(token) if token.grants(scope) => Ok(()),
            Some(token) => Err(Denied::Forbidden { token: token.name.clone(), scope }),
        }
    }

    /// Checks a request's headers. The cookie counts only where `cookie_allowed`: pages and
    /// read endpoints, and the dashboard's forms (which carry their own CSRF token).
    pub fn check_headers(&self, headers: &HeaderMap, scope: Scope, cookie_allowed: bool) -> Result<(), Denied> {
        // A header from any client, or the login cookie of a browser (which holds the digest).
        let presented = bearer(headers)
            .map(|secret| digest(secret.as_bytes()))
            .or_else(|| if cookie_allowed { cookie(headers, SESSION_COOKIE).and_then(hex_digest) } else { None });
        match presented {
            None => Err(Denied::Missing),
            Some(presented) => self.check_digest(&presented, scope),
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, as RFC 6750 reads).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A cookie's value by name.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

fn hex_digest(text: &str) -> Option<Digest> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

fn hex(digest: &Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a group of routes requires.
#[derive(Clone)]
pub struct Guard {
    pub auth: Auth,
    pub scope: Scope,
    pub cookie_allowed: bool,
}

/// Middleware: lets the request through, or answers 401/403 (a login page for browsers).
pub async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if !guard.auth.enabled() {
        return next.run(request).await;
    }
    match guard.auth.check_headers(request.headers(), guard.scope, guard.cookie_allowed) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            denied.count();
            let browser = guard.cookie_allowed && request.method() == Method::GET && wants_html(request.headers());
            if browser {
                let next = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
                return login_page(&denied, guard.scope, &next);
            }
            refusal(&denied, guard.scope)
        }
    }
}

/// The JSON refusal: 401 with `WWW-Authenticate`, or 403.
pub fn refusal(denied: &Denied, scope: Scope) -> Response {
    let (error, hint) = denied.message(scope);
    match denied {
        Denied::Forbidden { .. } => ApiError::new(StatusCode::FORBIDDEN, error, hint).into_response(),
        Denied::Missing | Denied::Unknown => {
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, error, hint).into_response();
            let challenge = if *denied == Denied::Unknown { r#"Bearer realm="vigil", error="invalid_token""# } else { r#"Bearer realm="vigil""# };
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            response
        }
    }
}

/// The gRPC refusal: `UNAUTHENTICATED` or `PERMISSION_DENIED`, with the same message.
pub fn grpc_refusal(denied: &Denied, scope: Scope) -> Response {
    let (error, hint) = denied.message(scope);
    let message = format!("{error}; {hint}");
    let status = match denied {
        Denied::Forbidden { .. } => tonic::Status::permission_denied(message),
        Denied::Missing | Denied::Unknown => tonic::Status::unauthenticated(message),
    };
    status.into_http::<axum::body::Body>()
}

/// Middleware for the OTLP/gRPC listener: every call needs an ingest token.
pub async fn grpc_guard(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    if !auth.enabled() {
        return next.run(request).await;
    }
    match auth.check_headers(request.headers(), Scope::Ingest, false) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            denied.count();
            grpc_refusal(&denied, Scope::Ingest)
        }
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    layout: Layout,
    message: &'a str,
    next: &'a str,
}

fn login_page(denied: &Denied, scope: Scope, next: &str) -> Response {
    let (status, message) = match denied {
        Denied::Missing => (StatusCode::UNAUTHORIZED, "Vigil needs a token to show this page.".to_string()),
        Denied::Unknown => (StatusCode::UNAUTHORIZED, "That token is not one of Vigil's tokens.".to_string()),
        Denied::Forbidden { token, .. } => (StatusCode::FORBIDDEN, format!("Token {token:?} lacks the {} scope this needs.", scope.as_str())),
    };
    login_response(status, message, next)
}

fn login_response(status: StatusCode, message: String, next: &str) -> Response {
    let mut layout = Layout::new("Log in", "");
    layout.refresh_seconds = 0;
    let page = LoginPage { layout, message: &message, next: safe_next(next) };
    let body = page.render().unwrap_or(message);
    let mut response = (status, Html(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="vigil""#));
    }
    response
}

/// Only a path on this server: never `//host` or `https://...`, which would make the login
/// form an open redirect.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") { next } else { "/" }
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// `GET /-/login`: the form.
pub async fn login_form(Query(query): Query<LoginQuery>) -> Response {
    login_response(StatusCode::OK, "Log in with a token that has the read scope.".into(), &query.next)
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /-/login`: a token with the read scope gets the session cookie and goes on to
/// where it was headed.
pub async fn login(State(auth): State<Auth>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    if let Err(denied) = auth.check_secret(token, Scope::Read) {
        denied.count();
        return login_page(&denied, Scope::Read, &form.next);
    }
    let cookie = format!("{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=2592000", hex(&digest(token.as_bytes())));
    let mut response = Redirect::to(safe_next(&form.next)).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /-/logout`: forgets the session cookie.
pub async fn logout() -> Response {
    let mut response = Redirect::to("/-/login").into_response();
    let cookie = format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec![
            TokenSpec { name: "collector".into(), secret: "ingest-secret".into(), scopes: vec![Scope::Ingest] },
            TokenSpec { name: "grafana".into(), secret: "read-secret".into(), scopes: vec![Scope::Read] },
            TokenSpec { name: "ops".into(), secret: "admin-secret".into(), scopes: vec![Scope::Admin] },
        ])
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn scopes_are_granted_and_admin_includes_the_others() {
        let auth = auth();
        assert_eq!(auth.check_secret("ingest-secret", Scope::Ingest), Ok(()));
        assert_eq!(auth.check_secret("ingest-secret", Scope::Read), Err(Denied::Forbidden { token: "collector".into(), scope: Scope::Read }));
        assert_eq!(auth.check_secret("read-secret", Scope::Admin), Err(Denied::Forbidden { token: "grafana".into(), scope: Scope::Admin }));
        for scope in [Scope::Ingest, Scope::Read, Scope::Admin] {
            assert_eq!(auth.check_secret("admin-secret", scope), Ok(()));
        }
        assert_eq!(auth.check_secret("admin-secret ", Scope::Read), Err(Denied::Unknown));
        assert_eq!(auth.check_secret("", Scope::Read), Err(Denied::Unknown));
    }

    #[test]
    fn headers_carry_bearer_tokens_and_cookies_only_where_allowed() {
        let auth = auth();
        assert_eq!(auth.check_headers(&headers(&[]), Scope::Read, true), Err(Denied::Missing));
        assert_eq!(auth.check_headers(&headers(&[("authorization", "Bearer read-secret")]), Scope::Read, false), Ok(()));
        assert_eq!(auth.check_headers(&headers(&[("authorization", "bearer read-secret")]), Scope::Read, false), Ok(()));
        assert_eq!(auth.check_headers(&headers(&[("authorization", "Basic cmVhZC1zZWNyZXQ=")]), Scope::Read, false), Err(Denied::Missing));
        assert_eq!(auth.check_headers(&headers(&[("authorization", "Bearer nope")]), Scope::Read, false), Err(Denied::Unknown));
        let session = format!("other=1; {SESSION_COOKIE}={}", hex(&digest(b"read-secret")));
        assert_eq!(auth.check_headers(&headers(&[("cookie", &session)]), Scope::Read, true), Ok(()));
        assert_eq!(auth.check_headers(&headers(&[("cookie", &session)]), Scope::Read, false), Err(Denied::Missing));
        // The cookie holds the digest: the raw token in it is not a credential.
        let raw = format!("{SESSION_COOKIE}=read-secret");
        assert_eq!(auth.check_headers(&headers(&[("cookie", &raw)]), Scope::Read, true), Err(Denied::Missing));
        let wrong = format!("{SESSION_COOKIE}={}", hex(&digest(b"guess")));
        assert_eq!(auth.check_headers(&headers(&[("cookie", &wrong)]), Scope::Read, true), Err(Denied::Unknown));
    }

    #[test]
    fn login_redirects_stay_on_this_server() {
        assert_eq!(safe_next("/slos/checkout?x=1"), "/slos/checkout?x=1");
        for bad in ["//evil.example", "https://evil.example/", "/\\evil.example", "", "javascript:alert(1)"] {
            assert_eq!(safe_next(bad), "/", "{bad}");
        }
    }

    #[test]
    fn with_no_tokens_auth_is_off() {
        assert!(!Auth::default().enabled());
        assert!(auth().enabled());
    }
}
