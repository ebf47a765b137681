//! Bearer-token auth with scopes. With no token configured everything is open (the
//! out-of-the-box default on loopback); with any, every route but `/-/healthy`, `/-/ready`
//! and the login page needs a token whose scopes cover it: 401 when there is no token or an
//! unknown one, 403 when a known token lacks the scope.
//!
//! Tokens are held only as SHA-256 digests. A presented token is digested and compared with
//! every configured digest in constant time (no early exit, equal lengths), so neither its
//! bytes nor its length leak through timing. Browsers log in once through a form: the cookie
//! holds the token's digest, never the token, and is `Secure; HttpOnly; SameSite=Strict`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{ConnectInfo, Form, FromRequest, Query, Request, State};
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

/// A scope name that is none of Vigil's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}; one of ingest, read, admin")]
pub struct UnknownScope(pub String);

impl std::str::FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<Scope, UnknownScope> {
        [Scope::Ingest, Scope::Read, Scope::Admin]
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| UnknownScope(text.to_string()))
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
        f.debug_struct("TokenSpec")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
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

/// Failed tokens one client may present per minute by default.
pub const DEFAULT_FAILURES_PER_MINUTE: u32 = 60;
/// How long a client that passed the failure limit is refused.
const THROTTLE_FOR: Duration = Duration::from_secs(60);
/// Clients remembered at most; past it the ones no longer throttled are forgotten.
const THROTTLE_CLIENTS: usize = 10_000;

/// Failed tokens per client address: past the limit within a minute, every request of the
/// client is refused with 429 for a minute (guessing tokens is then slow).
struct FailureThrottle {
    per_minute: u32,
    clients: parking_lot::Mutex<HashMap<IpAddr, Failures>>,
}

struct Failures {
    since: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

impl FailureThrottle {
    /// How long `client` is still refused, if it is.
    fn blocked(&self, client: IpAddr) -> Option<Duration> {
        let clients = self.clients.lock();
        let until = clients.get(&client)?.blocked_until?;
        until.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
    }

    fn record_failure(&self, client: IpAddr) {
        if self.per_minute == 0 {
            return;
        }
        let now = Instant::now();
        let mut clients = self.clients.lock();
        if clients.len() >= THROTTLE_CLIENTS {
            clients.retain(|_, f| {
                f.blocked_until.is_some_and(|until| until > now)
                    || now.duration_since(f.since) < Duration::from_secs(60)
            });
        }
        let failures = clients.entry(client).or_insert(Failures { since: now, count: 0, blocked_until: None });
        if now.duration_since(failures.since) >= Duration::from_secs(60) {
            *failures = Failures { since: now, count: 0, blocked_until: None };
        }
        failures.count += 1;
        if failures.count > self.per_minute {
            failures.blocked_until = Some(now + THROTTLE_FOR);
        }
    }
}

/// The configured tokens. Empty: auth is off.
#[derive(Clone)]
pub struct Auth {
    tokens: Arc<[Token]>,
    throttle: Arc<FailureThrottle>,
    /// Signs the dashboard forms' CSRF tokens; made at start (a restart asks for a reload).
    csrf_key: Arc<ring::hmac::Key>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth::new(Vec::new())
    }
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
        let hint = format!(
            "send `Authorization: Bearer <token>` with a token of scope {} (auth.tokens in the config)",
            scope.as_str()
        );
        match self {
            Denied::Missing => ("this endpoint needs a bearer token".into(), hint),
            Denied::Unknown => ("the bearer token is not one of the configured tokens".into(), hint),
            Denied::Forbidden { token, scope } => (
                format!("token {token:?} lacks the {} scope", scope.as_str()),
                format!("use a token with the {} (or admin) scope", scope.as_str()),
            ),
        }
    }
}

impl Auth {
    pub fn new(specs: Vec<TokenSpec>) -> Auth {
        let tokens: Vec<Token> = specs
            .into_iter()
            .map(|s| Token { digest: digest(s.secret.as_bytes()), name: s.name, scopes: s.scopes })
            .collect();
        let rng = ring::rand::SystemRandom::new();
        let csrf_key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, uuid::Uuid::new_v4().as_bytes()));
        Auth {
            tokens: tokens.into(),
            throttle: Arc::new(FailureThrottle {
                per_minute: DEFAULT_FAILURES_PER_MINUTE,
                clients: Default::default(),
            }),
            csrf_key: Arc::new(csrf_key),
        }
    }

    /// Failed tokens a client may present per minute (0: no throttling).
    pub fn with_failure_limit(mut self, per_minute: u32) -> Auth {
        self.throttle = Arc::new(FailureThrottle { per_minute, clients: Default::default() });
        self
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// The CSRF token of a browser session: an HMAC of the session's cookie, so a token is
    /// good for that session only and nobody without the server's key can make one.
    pub fn csrf_token(&self, session: &str) -> String {
        hex_bytes(ring::hmac::sign(&self.csrf_key, session.as_bytes()).as_ref())
    }

    /// Checks a form's CSRF token against its session, in constant time.
    pub fn check_csrf(&self, session: &str, token: &str) -> bool {
        let Some(tag) = hex_decode(token) else { return false };
        ring::hmac::verify(&self.csrf_key, session.as_bytes(), &tag).is_ok()
    }

    /// Refuses a client past the failure limit, before anything else is looked at.
    fn throttled(&self, client: Option<IpAddr>) -> Option<Response> {
        let left = self.throttle.blocked(client?)?;
        metrics::counter!("vigil_auth_refusals_total", "reason" => "throttled").increment(1);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests with unknown tokens from this address",
            format!("wait {} s and use a configured token", left.as_secs().max(1)),
        )
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(left.as_secs().max(1)));
        Some(response)
    }

    /// Counts a refusal, and an unknown token against its client.
    fn refused(&self, denied: &Denied, client: Option<IpAddr>) {
        denied.count();
        if let (Denied::Unknown, Some(client)) = (denied, client) {
            self.throttle.record_failure(client);
        }
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

/// True when the request carries a bearer token: a credential no other site can make a
/// browser send, so such a request needs no CSRF token.
pub(crate) fn has_bearer(headers: &HeaderMap) -> bool {
    bearer(headers).is_some()
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
    hex_bytes(digest)
}

fn hex_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// The client address of a request, as the listener saw it.
pub(crate) fn client_of(request: &Request) -> Option<IpAddr> {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())
}

/// True unless a browser says the request comes from another site: `Sec-Fetch-Site` when
/// it is sent (`same-origin`, or `none` for what the user typed), else an `Origin` naming
/// this host. A request with neither is no browser's cross-site form.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return matches!(site.trim(), "same-origin" | "none");
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
        }
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn cross_site_refusal() -> Response {
    metrics::counter!("vigil_auth_refusals_total", "reason" => "cross_site").increment(1);
    ApiError::new(
        StatusCode::FORBIDDEN,
        "this request came from another site",
        "submit the form from Vigil's own pages",
    )
    .into_response()
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
    // A form posted with the browser's cookie must come from Vigil's own pages, whether
    // or not tokens are configured.
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if guard.cookie_allowed && changes && bearer(request.headers()).is_none() && !same_origin(request.headers()) {
        return cross_site_refusal();
    }
    if !guard.auth.enabled() {
        return next.run(request).await;
    }
    let client = client_of(&request);
    if let Some(refusal) = guard.auth.throttled(client) {
        return refusal;
    }
    match guard.auth.check_headers(request.headers(), guard.scope, guard.cookie_allowed) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            guard.auth.refused(&denied, client);
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
            let challenge = if *denied == Denied::Unknown {
                r#"Bearer realm="vigil", error="invalid_token""#
            } else {
                r#"Bearer realm="vigil""#
            };
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
    let client = client_of(&request);
    if auth.throttled(client).is_some() {
        return tonic::Status::resource_exhausted(
            "too many requests with unknown tokens from this address; retry in a minute",
        )
        .into_http::<axum::body::Body>();
    }
    match auth.check_headers(request.headers(), Scope::Ingest, false) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            auth.refused(&denied, client);
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
        Denied::Forbidden { token, .. } => {
            (StatusCode::FORBIDDEN, format!("Token {token:?} lacks the {} scope this needs.", scope.as_str()))
        }
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

/// Only a path on this server: never `//host`, `https://...`, a backslash (browsers read it
/// as a slash) or whitespace and control characters (browsers drop them: `/\t/host` is
/// `//host`), which would make the login form an open redirect.
fn safe_next(next: &str) -> &str {
    let plain_path = next.starts_with('/')
        && !next.starts_with("//")
        && !next.chars().any(|c| c == '\\' || c.is_whitespace() || c.is_control());
    if plain_path { next } else { "/" }
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
pub async fn login(State(auth): State<Auth>, request: Request) -> Response {
    // Login CSRF: another site must not log a browser in with a token of its choosing.
    if !same_origin(request.headers()) {
        return cross_site_refusal();
    }
    let client = client_of(&request);
    if let Some(refusal) = auth.throttled(client) {
        return refusal;
    }
    let Ok(Form(form)) = Form::<LoginForm>::from_request(request, &()).await else {
        return login_response(StatusCode::BAD_REQUEST, "The form was incomplete.".into(), "/");
    };
    let token = form.token.trim();
    if let Err(denied) = auth.check_secret(token, Scope::Read) {
        auth.refused(&denied, client);
        return login_page(&denied, Scope::Read, &form.next);
    }
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=2592000",
        hex(&digest(token.as_bytes()))
    );
    let mut response = Redirect::to(safe_next(&form.next)).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /-/logout`: forgets the session cookie.
pub async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return cross_site_refusal();
    }
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
        assert_eq!(
            auth.check_secret("ingest-secret", Scope::Read),
            Err(Denied::Forbidden { token: "collector".into(), scope: Scope::Read })
        );
        assert_eq!(
            auth.check_secret("read-secret", Scope::Admin),
            Err(Denied::Forbidden { token: "grafana".into(), scope: Scope::Admin })
        );
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
        assert_eq!(
            auth.check_headers(&headers(&[("authorization", "Bearer read-secret")]), Scope::Read, false),
            Ok(())
        );
        assert_eq!(
            auth.check_headers(&headers(&[("authorization", "bearer read-secret")]), Scope::Read, false),
            Ok(())
        );
        assert_eq!(
            auth.check_headers(&headers(&[("authorization", "Basic cmVhZC1zZWNyZXQ=")]), Scope::Read, false),
            Err(Denied::Missing)
        );
        assert_eq!(
            auth.check_headers(&headers(&[("authorization", "Bearer nope")]), Scope::Read, false),
            Err(Denied::Unknown)
        );
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
        for bad in [
            "//evil.example",
            "https://evil.example/",
            "/\\evil.example",
            "",
            "javascript:alert(1)",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil",
            "/a\\b",
            "/\u{0}/x",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        assert!(same_origin(&headers(&[])), "no browser headers: not a cross-site form");
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "none")])));
        assert!(!same_origin(&headers(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://vigil:9400"),
            ("host", "vigil:9400")
        ])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[("origin", "http://vigil:9400"), ("host", "vigil:9400")])));
        assert!(!same_origin(&headers(&[("origin", "https://evil.example"), ("host", "vigil:9400")])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "vigil:9400")])));
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let auth = auth();
        let token = auth.csrf_token("session-a");
        assert!(auth.check_csrf("session-a", &token));
        assert!(!auth.check_csrf("session-b", &token), "another session's token");
        assert!(!auth.check_csrf("session-a", "session-a"), "the cookie's own value is no token");
        assert!(!auth.check_csrf("session-a", ""));
        assert!(!Auth::new(vec![]).check_csrf("session-a", &token), "another server's key");
    }

    #[test]
    fn unknown_tokens_throttle_their_client_only() {
        let auth = auth().with_failure_limit(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            auth.refused(&Denied::Unknown, Some(a));
        }
        assert!(auth.throttled(Some(a)).is_none(), "at the limit: not yet");
        auth.refused(&Denied::Missing, Some(a));
        assert!(auth.throttled(Some(a)).is_none(), "a missing token is no guess");
        auth.refused(&Denied::Unknown, Some(a));
        let refusal = auth.throttled(Some(a)).expect("past the limit");
        assert_eq!(refusal.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refusal.headers().contains_key(header::RETRY_AFTER));
        assert!(auth.throttled(Some(b)).is_none());
        assert!(auth.throttled(None).is_none());
    }

    #[test]
    fn with_no_tokens_auth_is_off() {
        assert!(!Auth::default().enabled());
        assert!(auth().enabled());
    }
}
