//! The console's web side (axum): the page (embedded), the fleet picture as JSON, its
//! changes as server-sent events, and commands. Every route sits behind the auth check
//! when `--auth` is given.
//!
//! | Route | |
//! |---|---|
//! | `GET /`, `/console.js`, `/console.css` | the page |
//! | `GET /api/fleet` | the whole picture (`FleetView`) |
//! | `GET /api/live` | server-sent events: `fleet` (the whole picture, first and after a gap), then `update` (one box or the broker link) |
//! | `POST /api/command` | `{"device_id", "op", "args"}` → the box's reply (`ReplyNote`), or `{"error"}` |
//! | `GET /api/config` | `{"janus": url or null}` |
//! | `GET /javascript/…` | with `--janus`: Debian's janus.js and adapter.js |

use std::convert::Infallible;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::auth::Users;
use super::fleet::{CommandError, FleetHandle};

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/console.js");
const STYLE: &str = include_str!("web/console.css");

/// What the handlers share.
pub struct AppState {
    pub fleet: FleetHandle,
    pub users: Option<Users>,
    pub janus: Option<String>,
    /// Where Debian's JavaScript libraries are (`/usr/share/javascript`).
    pub javascript: PathBuf,
    pub shutdown: CancellationToken,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console.js",
            get(|| async { page("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console.css",
            get(|| async { page("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/fleet", get(fleet))
        .route("/api/live", get(live))
        .route("/api/config", get(config))
        .route("/api/command", post(command))
        .route("/javascript/{*path}", get(javascript))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Auth, a same-origin check for commands, and headers that keep the page to itself.
async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(users) = &state.users {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !users.allows(header) {
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"roomcast console\", charset=\"UTF-8\""),
                )],
                "roomcast console: log in with a user of the console's --auth file\n",
            )
                .into_response();
        }
    }
    if request.method() == axum::http::Method::POST && !same_origin(request.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "roomcast console: commands are only taken from the console's own page\n",
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A browser names the page a request comes from in `Origin`: it must be this console.
/// (Requests without it, from scripts, pass: they had to log in like anyone else.)
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok().map(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
            .unwrap_or(o)
    });
    matches!((origin, host), (Some(o), Some(h)) if o == h)
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "the console is shutting down"})),
    )
        .into_response()
}

async fn fleet(State(state): State<Arc<AppState>>) -> Response {
    match state.fleet.picture().await {
        Some(picture) => Json(picture).into_response(),
        None => unavailable(),
    }
}

async fn config(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"janus": state.janus}))
}

fn event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("error").data("unserializable"))
}

async fn live(State(state): State<Arc<AppState>>) -> Response {
    let Some((picture, updates)) = state.fleet.subscribe().await else {
        return unavailable();
    };
    let first = event("fleet", &picture);
    let stream = updates_stream(first, updates, state.fleet.clone(), state.shutdown.clone());
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The first picture, then every update; after a gap (the page fell behind) the whole
/// picture again. Ends when the console stops.
fn updates_stream(
    first: Event,
    updates: tokio::sync::broadcast::Receiver<super::fleet::Update>,
    fleet: FleetHandle,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let rest = futures::stream::unfold(
        (updates, fleet, shutdown),
        |(mut updates, fleet, shutdown)| async move {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return None,
                received = updates.recv() => received,
            };
            let next = match received {
                Ok(update) => event("update", &update),
                Err(RecvError::Lagged(_)) => event("fleet", &fleet.picture().await?),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(next), (updates, fleet, shutdown)))
        },
    );
    futures::StreamExt::chain(futures::stream::once(async move { Ok(first) }), rest)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRequest {
    device_id: String,
    op: String,
    #[serde(default)]
    args: Option<Value>,
}

async fn command(
    State(state): State<Arc<AppState>>,
    Json(request): Json<CommandRequest>,
) -> Response {
    let args = request.args.unwrap_or_else(|| json!({}));
    match state
        .fleet
        .command(request.device_id, request.op, args)
        .await
    {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => {
            let status = match e {
                CommandError::UnknownOp(_) | CommandError::BadDevice(_) | CommandError::BadArgs => {
                    StatusCode::BAD_REQUEST
                }
                CommandError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                CommandError::NotConnected(_) | CommandError::Busy | CommandError::Stopped => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            (status, Json(json!({"error": e.to_string()}))).into_response()
        }
    }
}

/// The two libraries the preview needs, and nothing else from that folder.
const LIBRARIES: &[&str] = &["janus-gateway/janus.js", "webrtc-adapter/adapter.js"];

async fn javascript(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Response {
    let relative = Path::new(&path);
    if state.janus.is_none()
        || !LIBRARIES.contains(&path.as_str())
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    let file = state.javascript.join(relative);
    match tokio::fs::read(&file).await {
        Ok(body) => ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], body).into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            format!(
                "{}: {e}; install Debian's libjs-janus-gateway and libjs-webrtc-adapter for the preview\n",
                file.display()
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_must_be_this_console() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("10.0.0.5:8090"));
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://10.0.0.5:8090"),
        );
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&headers));
    }
}
