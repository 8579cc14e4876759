//! The demo target: a small web app shaped like a Phoenix LiveView page, for liveload's demo
//! and tests. Each page lives in its own module under `src/pages/`:
//!
//! - `home` — `GET /`: the live counter page, the one the demo and the end-to-end tests load. It
//!   opens a WebSocket, marks `<body>` with `phx-connected` once it is open, rewrites `#ticks`
//!   every second from server pushes, and has two forms:
//!   - `GET /live` — the WebSocket: one `{"tick": n}` text frame a second. It also answers
//!     `{"submit": name}` after 150 ms with `{"saved": name}`; the page's `#live-form` carries
//!     `phx-submit-loading` meanwhile, like a LiveView `phx-submit` form.
//!   - `POST /submit` — the plain form's target; answers with a page showing the submitted name.
//! - `about` — `GET /about`: a second, static page, for scenarios that navigate.
//! - `health` — `GET /health`: `ok`, to wait for the server without loading a page.
//! - `clicks` — `GET /clicks`: a counter button built like a component library's (ripple,
//!   server-rendered label swapped on every update, an in-flight overlay, a socket that connects
//!   after load); the server counts the clicks it receives (`GET /clicks/total`). The lost-click
//!   test clicks it under CPU load.
//! - `actionability` — `GET /actionability`: one element per way an element can be unready
//!   (hidden, moving, disabled, covered, read-only, late), for the element steps' checks.
//! - `table` — `GET /table`: a heavy page, 2,000 rows (`?rows=N`) re-rendered every second,
//!   for calibration: it costs a browser several times what the home page does.
//! - `probe` — `GET /probe`: a page making a known amount of traffic (fetches answered 200, 404
//!   and 500, a WebSocket exchange, a console error, an uncaught exception); the server counts
//!   what it served (`GET /probe/stats`), for tests of liveload's metrics.
//! - `seen` — `GET /seen?v=VALUE` records the value; `GET /seen/list` lists what was seen, one
//!   `MS VALUE` line each (ms since start): which data row, generated value or coordinated
//!   group reached the server, and when.
//! - `api` — `POST /api/login`, `GET /api/me`: a JSON API with a session cookie and a bearer
//!   token, for protocol users.
//! - `vitals` — `GET /vitals`: a page with a known largest paint, layout shift and slow
//!   interaction, for the Web Vitals metrics.
//! - `liveview` — `GET /lv`, `GET /lv/other`, the socket `GET /live/websocket`: Phoenix
//!   LiveView's wire protocol, which Phoenix's own JavaScript client (from npm) runs against
//!   in a browser and liveload's native LiveView client (`engine: liveview`) speaks; the
//!   server counts what it did (`GET /lv/stats`).
//!
//! To add a page: write `src/pages/NAME.rs` with its HTML as a `const`, its handlers, and a
//! `pub(crate) fn routes() -> Router` holding only its own paths; declare it in
//! `src/pages/mod.rs`; merge its `routes()` in [`app`]; list it above; and add its paths to the
//! `every_route_answers` test. The end-to-end tests read the existing pages' ids and text: change
//! those only together with the tests.

use std::net::SocketAddr;

use axum::Router;

mod pages;

/// The app's routes: every page's, merged.
pub fn app() -> Router {
    Router::new()
        .merge(pages::home::routes())
        .merge(pages::about::routes())
        .merge(pages::health::routes())
        .merge(pages::clicks::routes())
        .merge(pages::actionability::routes())
        .merge(pages::table::routes())
        .merge(pages::seen::routes())
        .merge(pages::probe::routes())
        .merge(pages::vitals::routes())
        .merge(pages::api::routes())
        .merge(pages::liveview::routes())
}

/// Serve the app on `addr` (port 0 picks a free port). Returns the bound address; the server
/// runs on the current tokio runtime until it is dropped with it.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app()).await;
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // Already in the tree through axum: calls the router directly, without a socket.
    use tower::ServiceExt as _;

    use super::pages::{about, actionability, clicks, home, vitals};

    /// The app's answer to `request`: status, `Content-Type`, body.
    async fn answer(request: Request<Body>) -> (StatusCode, String, String) {
        let response = super::app().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map_or(String::new(), |v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn every_route_answers() {
        let html = "text/html; charset=utf-8".to_string();
        let text = "text/plain; charset=utf-8".to_string();
        assert_eq!(
            answer(get("/")).await,
            (StatusCode::OK, html.clone(), home::PAGE.into())
        );
        assert_eq!(
            answer(get("/about")).await,
            (StatusCode::OK, html.clone(), about::ABOUT.into())
        );
        assert_eq!(
            answer(get("/health")).await,
            (StatusCode::OK, text.clone(), "ok".into())
        );
        assert_eq!(
            answer(get("/clicks")).await,
            (StatusCode::OK, html.clone(), clicks::CLICKS.into())
        );
        assert_eq!(
            answer(get("/clicks/total")).await,
            (StatusCode::OK, text.clone(), "0".into())
        );
        let (status, _, body) = answer(get("/api/me")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::UNAUTHORIZED, "log in first")
        );
        assert_eq!(
            answer(get("/vitals")).await,
            (StatusCode::OK, html.clone(), vitals::VITALS.into())
        );
        assert_eq!(
            answer(get("/actionability")).await,
            (
                StatusCode::OK,
                html.clone(),
                actionability::ACTIONABILITY.into()
            )
        );
        // The form's target keeps the name, minus anything that could be markup.
        let form = Request::post("/submit")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("name=Ada+%3Cb%3ELovelace%3C%2Fb%3E-1&agree=yes"))
            .unwrap();
        let (status, content_type, body) = answer(form).await;
        assert_eq!((status, content_type), (StatusCode::OK, html.clone()));
        assert!(body.contains("Thanks, Ada bLovelaceb-1!"), "{body}");
        // `/live` is there and wants a WebSocket upgrade (`live_pushes_ticks` does one).
        let (status, _, body) = answer(get("/live")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // The heavy table: its row count in the page, bounded.
        let (status, content_type, body) = answer(get("/table")).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, html.as_str())
        );
        assert!(body.contains("const rows = 2000,"), "the default");
        let (_, _, body) = answer(get("/table?rows=999999")).await;
        assert!(body.contains("const rows = 20000,"), "capped");
        let (status, _, body) = answer(get("/probe")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, super::pages::probe::PROBE)
        );
        let (_, _, stats) = answer(get("/probe/stats")).await;
        assert!(stats.contains("\"documents\":0"), "a fresh app: {stats}");
        // What `/seen` was opened with, listed in order; markup never reaches the page.
        let (_, _, body) = answer(get("/seen?v=a%3Cb%3E")).await;
        assert!(body.contains("seen ab"), "{body}");
        let list = super::app().oneshot(get("/seen/list")).await.unwrap();
        assert_eq!(list.status(), StatusCode::OK);
        assert_eq!(answer(get("/nowhere")).await.0, StatusCode::NOT_FOUND);
    }

    /// A real WebSocket handshake over TCP, and the first push: `{"tick":1}` at once.
    #[tokio::test]
    async fn live_pushes_ticks() {
        let addr = super::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /live HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let tick = b"{\"tick\":1}";
        let mut received = Vec::new();
        let read = async {
            // The 101 answer, then one unmasked text frame: FIN + text opcode, length, payload.
            while !received.ends_with(tick) {
                let mut buf = [0; 1024];
                let n = stream.read(&mut buf).await.unwrap();
                assert!(
                    n > 0,
                    "closed early: {}",
                    String::from_utf8_lossy(&received)
                );
                received.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("a tick within 5 s");
        let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(received.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        assert_eq!(
            received[head_end..],
            [&[0x81, tick.len() as u8][..], tick].concat()
        );
    }

    /// A click sent on `/clicks/live` is counted by the server and answered with the new count
    /// and label.
    #[tokio::test]
    async fn clicks_are_counted_and_answered() {
        let addr = super::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /clicks/live HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // A client frame must be masked: FIN + text, mask bit + length, the key, the payload
        // XORed with the key.
        let key = [1u8, 2, 3, 4];
        let payload: Vec<u8> = b"click"
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        let frame = [&[0x81, 0x80 | 5][..], &key, &payload].concat();
        stream.write_all(&frame).await.unwrap();
        let answer = br#"{"count":1,"label":"Clicked 1"}"#;
        let mut received = Vec::new();
        let read = async {
            while !received.ends_with(answer) {
                let mut buf = [0; 1024];
                let n = stream.read(&mut buf).await.unwrap();
                assert!(
                    n > 0,
                    "closed early: {}",
                    String::from_utf8_lossy(&received)
                );
                received.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("an answer within 5 s");
        let total = tokio::task::spawn_blocking(move || {
            use std::io::{Read as _, Write as _};
            let mut http = std::net::TcpStream::connect(addr).unwrap();
            write!(
                http,
                "GET /clicks/total HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut response = String::new();
            http.read_to_string(&mut response).unwrap();
            response
        })
        .await
        .unwrap();
        assert!(total.ends_with("\r\n\r\n1"), "{total}");
    }
}
