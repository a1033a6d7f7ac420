//! A tiny HTTP server on 127.0.0.1 that serves the files of one directory
//! (the bundled feeds), so the demo's crawler exercises its real HTTP fetch
//! path with no internet. GET and HEAD only; 404 for anything that is not a
//! file under the directory. One background thread serves requests in turn.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Request, Response, Server};
use tracing::{debug, warn};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum FeedServerError {
    /// The directory to serve does not exist or is not a directory.
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The listening socket could not be bound.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(String),
    /// The server thread could not be spawned.
    #[error("cannot spawn the server thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// A running feed server; stops when [`FeedServer::stop`] is called or it is dropped.
pub struct FeedServer {
    base_url: String,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for FeedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedServer").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl FeedServer {
    /// Serves `root` on 127.0.0.1 at a free port, from a background thread.
    pub fn start(root: impl Into<PathBuf>) -> Result<FeedServer, FeedServerError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(FeedServerError::NotADirectory(root));
        }
        let server = Arc::new(Server::http("127.0.0.1:0").map_err(|e| FeedServerError::Bind(e.to_string()))?);
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| FeedServerError::Bind("not bound to an IP address".to_string()))?;
        let requests = Arc::new(AtomicU64::new(0));
        let thread = {
            let (server, requests) = (server.clone(), requests.clone());
            std::thread::Builder::new()
                .name("feed-server".into())
                .spawn(move || {
                    // Ends when `unblock` is called.
                    for request in server.incoming_requests() {
                        requests.fetch_add(1, Ordering::Relaxed);
                        serve(&root, request);
                    }
                })
                .map_err(FeedServerError::Spawn)?
        };
        Ok(FeedServer { base_url: format!("http://{addr}"), server, thread: Some(thread), requests })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL of `relative` (a path under the served directory, `/`-separated).
    pub fn url(&self, relative: &str) -> String {
        format!("{}/{}", self.base_url, relative.trim_start_matches('/'))
    }

    /// Requests answered so far (any status).
    pub fn requests_served(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Stops accepting requests and waits for the server thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(root: &Path, request: Request) {
    let url = request.url().to_string();
    let result = match request.method() {
        Method::Get | Method::Head => match resolve(root, &url).and_then(|path| std::fs::File::open(path).ok()) {
            Some(file) => {
                let header = Header::from_bytes("Content-Type", content_type(&url)).expect("a valid header");
                request.respond(Response::from_file(file).with_header(header))
            }
            None => request.respond(Response::from_string("not found\n").with_status_code(404)),
        },
        _ => request.respond(Response::from_string("method not allowed\n").with_status_code(405)),
    };
    match result {
        Ok(()) => debug!(%url, "served"),
        Err(e) => warn!(%url, error = %e, "cannot answer a feed request"),
    }
}

/// The file under `root` that `url` names, if it is a plain relative path to
/// an existing file (no `..`, no query).
fn resolve(root: &Path, url: &str) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next().unwrap_or("").trim_start_matches('/');
    let relative = Path::new(path);
    if path.is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = root.join(relative);
    full.is_file().then_some(full)
}

fn content_type(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or("");
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("atom") => "application/atom+xml; charset=utf-8",
        Some("rss") => "application/rss+xml; charset=utf-8",
        Some("rdf") => "application/rdf+xml; charset=utf-8",
        Some("xml") => "application/xml; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::crawler::{FetchError, Fetcher, Location};

    #[test]
    fn serves_files_and_404s_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("feeds")).unwrap();
        std::fs::write(dir.path().join("feeds/a.xml"), "<rss/>").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
        let server = FeedServer::start(dir.path().join("feeds")).unwrap();
        assert!(server.base_url().starts_with("http://127.0.0.1:"));
        let fetcher = Fetcher::new(Duration::from_secs(5), 1 << 20);
        let get = |rel: &str| fetcher.fetch(&Location::Http(server.url(rel)));
        assert_eq!(get("a.xml").unwrap(), b"<rss/>");
        assert_eq!(get("/a.xml?x=1").unwrap(), b"<rss/>");
        for missing in ["b.xml", "", "../secret.txt", "%2e%2e/secret.txt"] {
            assert!(matches!(get(missing), Err(FetchError::Status { status: 404, .. })), "{missing}");
        }
        assert_eq!(server.requests_served(), 6);
        server.stop();
    }

    #[test]
    fn refuses_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(FeedServer::start(dir.path().join("nope")), Err(FeedServerError::NotADirectory(_))));
    }
}
