//! The coordinator's HTTP port:
//!
//! | path | auth | what |
//! |---|---|---|
//! | `/healthz` | open | liveness: the process answers |
//! | `/readyz` | open | readiness: state rebuilt, leases handed out |
//! | `/` | token | the live dashboard (embedded, no external resources) |
//! | `/login` | — | `GET ?token=…` or `POST token=…`: sets the session cookie |
//! | `/api/state` | token | the dashboard's state: counts, models, workers, failures, ETA |
//! | `/api/figures` | token | the report's figures as data, refreshed as cells complete |
//! | `/api/workers/{id}/readmit` | workers' token | `POST`: lift a worker's quarantine |
//! | `/status` | token | JSON progress (leases, failures, unplaceable cells) |
//! | `/metrics` | token | Prometheus exposition |
//!
//! Every worker-provided string is bounded and control-free in the views
//! (`state::views::shown`); the dashboard inserts them as text, never markup.

mod auth;

pub(crate) use auth::HttpAuth;

use crate::shared::{unix_ms, Shared};
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The dashboard page (one self-contained file).
const DASHBOARD: &str = include_str!("dashboard.html");

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    auth: HttpAuth,
    /// The workers' token: only it may change state (re-admit a worker).
    admin: HttpAuth,
}

/// The `/status` body.
#[derive(serde::Serialize)]
struct Status {
    sweep: String,
    done: bool,
    store: String,
    #[serde(flatten)]
    snapshot: crate::state::Snapshot,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(app): State<App>) -> (StatusCode, &'static str) {
    // The server only listens once the state is rebuilt, so the one way to be
    // unready is shutting down.
    if app.shared.is_leasing() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    }
}

fn unauthorised() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong token: send `Authorization: Bearer <token>`, or log in at /login",
    )
        .into_response()
}

async fn status(State(app): State<App>, headers: HeaderMap) -> Response {
    if !app.auth.allows(&headers) {
        return unauthorised();
    }
    let s = app.shared.sched.lock().expect("scheduler lock");
    Json(Status {
        sweep: app.shared.sweep.clone(),
        done: s.done(),
        store: app.shared.store_url_shown.clone(),
        snapshot: s.snapshot(Instant::now()),
    })
    .into_response()
}

/// The dashboard's state panel.
#[derive(serde::Serialize)]
struct ApiState {
    sweep: String,
    done: bool,
    now_unix_ms: u64,
    started_unix_ms: u64,
    #[serde(flatten)]
    view: crate::state::Dashboard,
    eta_seconds: Option<f64>,
    report: ReportState,
}

#[derive(serde::Serialize)]
struct ReportState {
    cells: usize,
    updated_unix_ms: u64,
}

async fn api_state(State(app): State<App>, headers: HeaderMap) -> Response {
    if !app.auth.allows(&headers) {
        return unauthorised();
    }
    let (view, done) = {
        let s = app.shared.sched.lock().expect("scheduler lock");
        (s.dashboard(Instant::now()), s.done())
    };
    let c = view.counts;
    // Time per finished cell so far, the running cells' fractions counted.
    let partial: f64 = view
        .workers
        .iter()
        .filter_map(|w| Some(w.examples_done? as f64 / w.examples_total.filter(|t| *t > 0)? as f64))
        .sum();
    let progressed = (c.completed + c.failed) as f64 + partial;
    let elapsed = app.shared.started.elapsed().as_secs_f64();
    let eta_seconds = (!done && progressed > 0.05)
        .then(|| elapsed / progressed * (c.total as f64 - progressed).max(0.0));
    let (_, updated, cells) = *app.shared.figures.read().expect("figures lock");
    Json(ApiState {
        sweep: app.shared.sweep.clone(),
        done,
        now_unix_ms: unix_ms(),
        started_unix_ms: app.shared.started_unix_ms,
        view,
        eta_seconds,
        report: ReportState {
            cells,
            updated_unix_ms: updated,
        },
    })
    .into_response()
}

async fn api_figures(State(app): State<App>, headers: HeaderMap) -> Response {
    if !app.auth.allows(&headers) {
        return unauthorised();
    }
    let json = app.shared.figures.read().expect("figures lock").0.clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
        .into_response()
}

async fn readmit(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !app.admin.allows(&headers) {
        return unauthorised();
    }
    let known = app
        .shared
        .sched
        .lock()
        .expect("scheduler lock")
        .readmit(&id);
    if known {
        tracing::info!(worker = %crate::state::views::shown(&id), "worker re-admitted by an operator");
        (StatusCode::OK, "re-admitted").into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such worker").into_response()
    }
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    if !app.auth.allows(&headers) {
        return unauthorised();
    }
    let (counts, view) = {
        let s = app.shared.sched.lock().expect("scheduler lock");
        (s.counts(), s.dashboard(Instant::now()))
    };
    let body = app
        .shared
        .metrics
        .render(counts, &view, app.shared.started.elapsed().as_secs_f64());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn dashboard(State(app): State<App>, headers: HeaderMap) -> Response {
    if !app.auth.allows(&headers) {
        return Redirect::to("login").into_response();
    }
    ([(header::CACHE_CONTROL, "no-store")], Html(DASHBOARD)).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    token: Option<String>,
}

const LOGIN_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>concept-depth: log in</title><style>body{font-family:system-ui,sans-serif;max-width:28em;margin:6em auto;color:#1f2937}input{font:inherit;padding:.4em;width:100%;box-sizing:border-box;margin:.5em 0}button{font:inherit;padding:.4em 1.2em}</style></head><body><h1>concept-depth</h1><p>The dashboard needs the coordinator's token (or its read-only dashboard token).</p><form method=\"post\" action=\"login\"><input type=\"password\" name=\"token\" placeholder=\"token\" autofocus><button type=\"submit\">Open the dashboard</button></form></body></html>";

fn login_with(app: &App, token: Option<String>) -> Response {
    match token {
        Some(t) if app.auth.accepts(&t) => (
            StatusCode::SEE_OTHER,
            [
                (
                    header::SET_COOKIE,
                    format!("{}={t}; HttpOnly; SameSite=Strict; Path=/", auth::COOKIE),
                ),
                (header::LOCATION, "./".to_string()),
            ],
        )
            .into_response(),
        Some(_) => (StatusCode::UNAUTHORIZED, Html(LOGIN_PAGE)).into_response(),
        None => Html(LOGIN_PAGE).into_response(),
    }
}

async fn login_get(State(app): State<App>, Query(q): Query<TokenForm>) -> Response {
    login_with(&app, q.token)
}

async fn login_post(State(app): State<App>, Form(f): Form<TokenForm>) -> Response {
    login_with(&app, f.token)
}

/// Serve until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    auth: HttpAuth,
    admin: HttpAuth,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard))
        .route("/login", get(login_get).post(login_post))
        .route("/api/state", get(api_state))
        .route("/api/figures", get(api_figures))
        .route("/api/workers/{id}/readmit", post(readmit))
        .with_state(App {
            shared,
            auth,
            admin,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}
