//! The HTTP authentication and ACL callout (like NanoMQ's `auth_req`/`acl_req`): a small
//! HTTP/1.1 client on the reactor, and a bounded cache of ACL answers.
//!
//! One request per question, on a new connection (`Connection: close`), to a plain `http://`
//! URL. The parameters are a form (`name=%u&other=%c`) whose placeholders are replaced and
//! percent-encoded: `%u` user name, `%c` client id, `%a` peer IP address, `%P` password, `%t`
//! topic, `%A` access (`1` subscribe, `2` publish, as EMQX and NanoMQ number them); a
//! placeholder with no value for the request (the password in an ACL request) is empty. `GET`
//! puts the form in the query string, `POST` sends it as an
//! `application/x-www-form-urlencoded` body. Status 200 allows; any other status, a response
//! that is not HTTP, a connection error or the timeout denies.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::reactor::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};

/// `GET` or `POST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// Parameters in the query string.
    Get,
    /// Parameters in a form body.
    Post,
}

/// A plain `http://HOST:PORT/PATH` URL, resolved when the configuration is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Where to connect.
    pub address: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The path (with any query string), at least `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses and resolves `http://HOST[:PORT][/PATH]`. HTTPS is not supported.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!(
                "`{url}`: only http:// URLs are supported (the callout has no TLS)"
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) if rest[at..].starts_with('?') => (&rest[..at], format!("/{}", &rest[at..])),
            Some(at) => (&rest[..at], rest[at..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("`{url}`: expected http://HOST[:PORT][/PATH]"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let address = with_port
            .to_socket_addrs()
            .map_err(|e| format!("`{url}`: cannot resolve {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("`{url}`: {authority} has no address"))?;
        Ok(HttpUrl {
            address,
            host: authority.to_string(),
            path,
        })
    }
}

/// The `[http_auth]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAuthConfig {
    /// Asked at CONNECT when set (for clients the password file does not know).
    pub auth_url: Option<HttpUrl>,
    /// Asked for each PUBLISH and SUBSCRIBE filter when set.
    pub acl_url: Option<HttpUrl>,
    /// How the parameters are sent.
    pub method: HttpMethod,
    /// The form template, such as `username=%u&clientid=%c&password=%P`.
    pub params: String,
    /// How long a request may take before it counts as a denial.
    pub timeout: Duration,
    /// How long an ACL answer is reused.
    pub cache_ttl: Duration,
    /// ACL answers kept at most (0: no cache).
    pub cache_size: usize,
}

/// The default form template.
pub const DEFAULT_PARAMS: &str = "username=%u&clientid=%c&ipaddr=%a&password=%P&topic=%t&access=%A";

/// The values the placeholders stand for in one request.
#[derive(Debug, Clone, Default)]
pub struct Values<'a> {
    /// `%u`
    pub username: Option<&'a str>,
    /// `%c`
    pub client_id: &'a str,
    /// `%a`
    pub peer: Option<SocketAddr>,
    /// `%P`
    pub password: Option<&'a [u8]>,
    /// `%t`
    pub topic: Option<&'a str>,
    /// `%A`: 1 subscribe, 2 publish.
    pub access: Option<u8>,
}

fn percent_encode(out: &mut String, bytes: &[u8]) {
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The form with its placeholders replaced and percent-encoded.
pub fn fill_params(template: &str, values: &Values<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest[at + 1..].chars().next();
        let mut known = true;
        match code {
            Some('u') => percent_encode(&mut out, values.username.unwrap_or("").as_bytes()),
            Some('c') => percent_encode(&mut out, values.client_id.as_bytes()),
            Some('a') => {
                let ip = values.peer.map(|p| p.ip().to_string()).unwrap_or_default();
                percent_encode(&mut out, ip.as_bytes());
            }
            Some('P') => percent_encode(&mut out, values.password.unwrap_or(b"")),
            Some('t') => percent_encode(&mut out, values.topic.unwrap_or("").as_bytes()),
            Some('A') => {
                if let Some(access) = values.access {
                    let _ = write!(out, "{access}");
                }
            }
            _ => known = false,
        }
        if known {
            rest = &rest[at + 2..];
        } else {
            out.push('%');
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// The bytes of one request.
pub fn build_request(method: HttpMethod, url: &HttpUrl, form: &str) -> Vec<u8> {
    let mut request = String::with_capacity(128 + form.len());
    match method {
        HttpMethod::Get => {
            let separator = if url.path.contains('?') { '&' } else { '?' };
            let _ = write!(
                request,
                "GET {}{separator}{form} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                url.path, url.host
            );
        }
        HttpMethod::Post => {
            let _ = write!(
                request,
                "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
                url.path,
                url.host,
                form.len()
            );
        }
    }
    request.into_bytes()
}

/// What the start of a response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStart {
    /// The status line and headers are complete: the status code.
    Status(u16),
    /// More bytes are needed.
    Partial,
    /// Not an HTTP response.
    Invalid,
}

/// Parses the head of a response (only the status matters).
pub fn parse_response(bytes: &[u8]) -> ResponseStart {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => match response.code {
            Some(code) => ResponseStart::Status(code),
            None => ResponseStart::Invalid,
        },
        Ok(httparse::Status::Partial) => ResponseStart::Partial,
        // More headers than we keep room for: the status line was read, which is all we need.
        Err(httparse::Error::TooManyHeaders) => match response.code {
            Some(code) => ResponseStart::Status(code),
            None => ResponseStart::Invalid,
        },
        Err(_) => ResponseStart::Invalid,
    }
}

/// Longest response head read.
const MAX_HEAD: usize = 16 * 1024;

/// Sends `request` to `url` and returns whether the answer was 200 within `timeout`.
pub async fn ask(url: &HttpUrl, request: &[u8], timeout: Duration) -> bool {
    let exchange = async {
        let stream = Async::<TcpStream>::connect(url.address).await.ok()?;
        (&stream).write_all(request).await.ok()?;
        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        loop {
            let count = (&stream).read(&mut chunk).await.ok()?;
            if count == 0 {
                return None;
            }
            head.extend_from_slice(&chunk[..count]);
            match parse_response(&head) {
                ResponseStart::Status(code) => return Some(code),
                ResponseStart::Invalid => return None,
                ResponseStart::Partial if head.len() > MAX_HEAD => return None,
                ResponseStart::Partial => {}
            }
        }
    };
    let expired = async {
        Timer::after(timeout).await;
        None
    };
    matches!(future::or(exchange, expired).await, Some(200))
}

/// ACL answers by question, dropped after their time to live, the oldest first when full.
#[derive(Debug, Default)]
pub struct AclCache {
    answers: HashMap<String, (bool, Instant)>,
    order: VecDeque<String>,
}

impl AclCache {
    /// The key of a question.
    pub fn key(username: Option<&str>, client_id: &str, access: u8, topic: &str) -> String {
        format!(
            "{access}\0{}\0{client_id}\0{topic}",
            username.unwrap_or("\u{1}")
        )
    }

    /// The answer stored for `key` if it is younger than `ttl`.
    pub fn get(&mut self, key: &str, ttl: Duration, now: Instant) -> Option<bool> {
        let &(allowed, at) = self.answers.get(key)?;
        if now.duration_since(at) < ttl {
            Some(allowed)
        } else {
            self.answers.remove(key);
            None
        }
    }

    /// Stores an answer, keeping at most `size` of them.
    pub fn put(&mut self, key: String, allowed: bool, size: usize, now: Instant) {
        if size == 0 {
            return;
        }
        if self.answers.insert(key.clone(), (allowed, now)).is_none() {
            self.order.push_back(key);
        }
        // Every stored key is in `order` (keys that expired may be there too, even twice: the
        // oldest entry evicted can then be a live one, which only costs a new question).
        while self.order.len() > size {
            if let Some(oldest) = self.order.pop_front() {
                self.answers.remove(&oldest);
            }
        }
    }

    /// Forgets everything (on reload).
    pub fn clear(&mut self) {
        self.answers.clear();
        self.order.clear();
    }

    /// Answers stored.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(path: &str) -> HttpUrl {
        HttpUrl {
            address: "127.0.0.1:8080".parse().unwrap(),
            host: "127.0.0.1:8080".into(),
            path: path.into(),
        }
    }

    #[test]
    fn urls() {
        let parsed = HttpUrl::parse("http://127.0.0.1:9000/mqtt/auth?x=1").unwrap();
        assert_eq!(parsed.address, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(parsed.host, "127.0.0.1:9000");
        assert_eq!(parsed.path, "/mqtt/auth?x=1");
        let bare = HttpUrl::parse("http://127.0.0.1").unwrap();
        assert_eq!(bare.address.port(), 80);
        assert_eq!(bare.path, "/");
        assert_eq!(
            HttpUrl::parse("http://[::1]:81/a").unwrap().address.port(),
            81
        );
        assert!(
            HttpUrl::parse("https://127.0.0.1/")
                .unwrap_err()
                .contains("only http://")
        );
        assert!(HttpUrl::parse("http:///x").is_err());
    }

    #[test]
    fn placeholders_are_replaced_and_encoded() {
        let values = Values {
            username: Some("al ice&"),
            client_id: "c/1",
            peer: Some("10.0.0.7:5555".parse().unwrap()),
            password: Some(b"p=%w"),
            topic: Some("a/+/#"),
            access: Some(2),
        };
        assert_eq!(
            fill_params(DEFAULT_PARAMS, &values),
            "username=al%20ice%26&clientid=c%2F1&ipaddr=10.0.0.7&password=p%3D%25w&topic=a%2F%2B%2F%23&access=2"
        );
        // Unknown placeholders stay; missing values are empty.
        assert_eq!(
            fill_params("x=%z&p=%P&u=%u%", &Values::default()),
            "x=%z&p=&u=%"
        );
    }

    #[test]
    fn requests() {
        let get = build_request(HttpMethod::Get, &url("/auth"), "u=a");
        assert_eq!(
            String::from_utf8(get).unwrap(),
            "GET /auth?u=a HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
        );
        let get = build_request(HttpMethod::Get, &url("/auth?k=v"), "u=a");
        assert!(
            String::from_utf8(get)
                .unwrap()
                .starts_with("GET /auth?k=v&u=a HTTP/1.1\r\n")
        );
        let post = String::from_utf8(build_request(HttpMethod::Post, &url("/acl"), "t=x")).unwrap();
        assert!(post.starts_with("POST /acl HTTP/1.1\r\n"), "{post}");
        assert!(post.contains("Content-Type: application/x-www-form-urlencoded\r\n"));
        assert!(post.ends_with("Content-Length: 3\r\n\r\nt=x"), "{post}");
    }

    #[test]
    fn responses() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ResponseStart::Status(200)
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 403 Forbidden\r\n\r\nbody"),
            ResponseStart::Status(403)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nServer: x"),
            ResponseStart::Partial
        );
        assert_eq!(parse_response(b"HTTP/1.1 2"), ResponseStart::Partial);
        assert_eq!(
            parse_response(b"SSH-2.0-OpenSSH\r\n\r\n"),
            ResponseStart::Invalid
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_response(&many), ResponseStart::Status(200));
    }

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let mut cache = AclCache::default();
        let t0 = Instant::now();
        let ttl = Duration::from_millis(100);
        let key = AclCache::key(Some("u"), "c", 2, "t");
        cache.put(key.clone(), true, 2, t0);
        assert_eq!(
            cache.get(&key, ttl, t0 + Duration::from_millis(99)),
            Some(true)
        );
        assert_eq!(cache.get(&key, ttl, t0 + ttl), None);
        assert!(cache.is_empty());
        for i in 0..10 {
            cache.put(AclCache::key(None, "c", 1, &format!("t{i}")), false, 3, t0);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.get(&AclCache::key(None, "c", 1, "t9"), ttl, t0),
            Some(false)
        );
        assert_eq!(cache.get(&AclCache::key(None, "c", 1, "t0"), ttl, t0), None);
        // Anonymous and a user named like the placeholder are different keys.
        assert_ne!(
            AclCache::key(None, "c", 1, "t"),
            AclCache::key(Some(""), "c", 1, "t")
        );
        cache.put(key.clone(), true, 0, t0);
        cache.clear();
        assert!(cache.is_empty());
    }
}
