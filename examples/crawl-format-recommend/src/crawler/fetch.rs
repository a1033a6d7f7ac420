//! Reading a feed's bytes: HTTP(S) with `ureq` (rustls, Mozilla's root
//! certificates, gzip) or a local file, both capped at a byte limit. Blocking:
//! the crawler calls it on tokio's blocking pool.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::source::Location;

/// Why a feed's bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server answered with a 4xx or 5xx status.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// No answer: connection refused, unknown host, timeout, TLS or protocol failure.
    #[error("{url}: unreachable: {reason}")]
    Unreachable {
        /// The URL requested.
        url: String,
        /// What went wrong, as the HTTP client said it.
        reason: String,
    },
    /// The feed is larger than the configured limit.
    #[error("{location}: larger than the {max_bytes}-byte limit")]
    TooLarge {
        /// The URL or path.
        location: String,
        /// The limit.
        max_bytes: u64,
    },
    /// A local file could not be read.
    #[error("{}: {source}", path.display())]
    File {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Reads feeds; holds one HTTP agent (and its connection pool) for all of them.
#[derive(Debug, Clone)]
pub struct Fetcher {
    agent: ureq::Agent,
    max_bytes: u64,
}

impl Fetcher {
    /// A fetcher whose HTTP requests time out after `timeout` (whole request,
    /// connect to last byte) and that refuses feeds over `max_bytes`.
    pub fn new(timeout: Duration, max_bytes: u64) -> Fetcher {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .user_agent(concat!("eddy-crawler/", env!("CARGO_PKG_VERSION")))
            .http_status_as_error(true)
            .build();
        Fetcher { agent: ureq::Agent::new_with_config(config), max_bytes }
    }

    /// The bytes of the feed at `location`, undecoded (the feed parser reads
    /// the XML prolog's encoding). Blocks.
    pub fn fetch(&self, location: &Location) -> Result<Vec<u8>, FetchError> {
        match location {
            Location::Http(url) => self.fetch_http(url),
            Location::File(path) => self.read_file(path),
        }
    }

    fn fetch_http(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let mut response = self.agent.get(url).call().map_err(|e| http_error(url, e))?;
        response.body_mut().with_config().limit(self.max_bytes).read_to_vec().map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => {
                FetchError::TooLarge { location: url.to_string(), max_bytes: self.max_bytes }
            }
            e => http_error(url, e),
        })
    }

    fn read_file(&self, path: &Path) -> Result<Vec<u8>, FetchError> {
        let file_error = |source| FetchError::File { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(file_error)?;
        let mut bytes = Vec::new();
        // One byte over the limit tells a file at the limit from a larger one.
        file.take(self.max_bytes.saturating_add(1)).read_to_end(&mut bytes).map_err(file_error)?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(FetchError::TooLarge { location: path.display().to_string(), max_bytes: self.max_bytes });
        }
        Ok(bytes)
    }
}

fn http_error(url: &str, e: ureq::Error) -> FetchError {
    match e {
        ureq::Error::StatusCode(status) => FetchError::Status { url: url.to_string(), status },
        e => FetchError::Unreachable { url: url.to_string(), reason: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.xml");
        std::fs::write(&path, b"0123456789").unwrap();
        let fetch = |max| Fetcher::new(Duration::from_secs(1), max).fetch(&Location::File(path.clone()));
        assert_eq!(fetch(10).unwrap(), b"0123456789");
        assert!(matches!(fetch(9), Err(FetchError::TooLarge { max_bytes: 9, .. })));
        let missing = Fetcher::new(Duration::from_secs(1), 10).fetch(&Location::File(dir.path().join("nope")));
        assert!(matches!(missing, Err(FetchError::File { .. })));
    }

    #[test]
    fn refused_connections_are_unreachable() {
        // Bind and drop a listener: the port is then (almost surely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = Fetcher::new(Duration::from_secs(5), 1 << 20)
            .fetch(&Location::Http(format!("http://127.0.0.1:{port}/feed.xml")))
            .unwrap_err();
        assert!(matches!(err, FetchError::Unreachable { .. }), "{err}");
    }
}
