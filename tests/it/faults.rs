//! Object-store faults between a run and the loopback S3 server: a proxy on loopback
//! answers chosen requests itself with the errors a flaky or failing S3 gives, and
//! forwards the rest. Transient errors are retried and the run publishes; permanent ones
//! fail at once, naming the location, and the previous output stays.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{assert_fails, demo, text, S3};

const END: &str = "2026-06-30T00:00:00Z";

/// Which requests fail: given the method and path, the status to answer with.
type Rule = dyn Fn(&str, &str) -> Option<u16> + Send + Sync;

/// Every request seen: method, path and the status injected, if any.
type Log = Mutex<Vec<(String, String, Option<u16>)>>;

/// An HTTP/1.1 proxy in front of `upstream`, one request at a time per connection.
struct FaultyProxy {
    endpoint: String,
    log: Arc<Log>,
}

impl FaultyProxy {
    async fn start(upstream: &str, rule: Box<Rule>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let log = Arc::new(Mutex::new(vec![]));
        let (rule, shared) = (Arc::new(rule), log.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let (upstream, rule, log) = (upstream.clone(), rule.clone(), shared.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, rule.as_ref().as_ref(), &log).await;
                });
            }
        });
        Self { endpoint, log }
    }

    fn injected(&self) -> Vec<(String, String, Option<u16>)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, s)| s.is_some())
            .cloned()
            .collect()
    }

    fn requests(&self, fragment: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p, _)| p.contains(fragment))
            .count()
    }
}

/// Reads one message head (request or response) up to the blank line.
async fn head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = vec![];
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines[1..].iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn serve(client: TcpStream, upstream: &str, rule: &Rule, log: &Log) -> std::io::Result<()> {
    let (read, mut write) = client.into_split();
    let mut read = BufReader::new(read);
    while let Some(lines) = head(&mut read).await? {
        assert!(
            header(&lines, "transfer-encoding").is_none(),
            "chunked request"
        );
        let length: usize = header(&lines, "content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; length];
        read.read_exact(&mut body).await?;
        let mut parts = lines[0].split(' ');
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let status = rule(method, path);
        log.lock()
            .unwrap()
            .push((method.to_string(), path.to_string(), status));
        if let Some(status) = status {
            let (code, text) = match status {
                403 => ("AccessDenied", "Forbidden"),
                _ => ("SlowDown", "Slow Down"),
            };
            let xml = format!("<Error><Code>{code}</Code><Message>injected</Message></Error>");
            let response = format!(
                "HTTP/1.1 {status} {text}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                xml.len()
            );
            write.write_all(response.as_bytes()).await?;
            continue;
        }
        // Forwarded on a connection of its own, closed after the response: its end is
        // then the end of the stream, whatever framing the server chose.
        let mut server = TcpStream::connect(upstream).await?;
        let mut request: Vec<u8> = vec![];
        for line in lines
            .iter()
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        {
            request.extend(line.as_bytes());
            request.extend(b"\r\n");
        }
        request.extend(b"Connection: close\r\n\r\n");
        request.extend(&body);
        server.write_all(&request).await?;
        let mut response = vec![];
        server.read_to_end(&mut response).await?;
        let framed = {
            let text =
                String::from_utf8_lossy(&response[..response.len().min(4096)]).to_ascii_lowercase();
            text.contains("content-length:") || text.contains("transfer-encoding:")
        };
        write.write_all(&response).await?;
        if !framed {
            return Ok(());
        }
    }
    Ok(())
}

fn run_through(
    proxy: &FaultyProxy,
    s3: &S3,
    home: &std::path::Path,
    out: &str,
) -> std::process::Output {
    s3.c360(home)
        .env("AWS_ENDPOINT", &proxy.endpoint)
        .args(["run", "--as-of", END, "--output", out, "--project"])
        .arg(demo().join("c360.toml"))
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_store_errors_are_retried() {
    let s3 = S3::from_env();
    let home = tempfile::tempdir().unwrap();
    // The first three writes are answered "503 Slow Down", as S3 does under load.
    let writes = AtomicUsize::new(0);
    let proxy = FaultyProxy::start(
        &s3.endpoint,
        Box::new(move |method, _| {
            (method == "PUT" && writes.fetch_add(1, Ordering::SeqCst) < 3).then_some(503)
        }),
    )
    .await;
    let out = s3.prefix("flaky");
    let done = run_through(&proxy, &s3, home.path(), &out);
    assert!(done.status.success(), "{}", text(&done.stderr));
    let injected = proxy.injected();
    assert_eq!(injected.len(), 3, "{injected:?}");
    // Each failed write was sent again and landed: the publication is complete.
    for (_, path, _) in &injected {
        let attempts = proxy.requests(path);
        assert!(attempts >= 2, "{path} was not retried");
    }
    let output =
        c360::output::Output::new(&out, s3.options(), c360::output::TableFormat::Parquet).unwrap();
    for file in [
        "customer_360.parquet",
        "features.json",
        c360::incremental::STATE_FILE,
    ] {
        assert!(output.exists(file).await.unwrap(), "{file} missing");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_store_errors_fail_at_once_naming_the_location() {
    let s3 = S3::from_env();
    let home = tempfile::tempdir().unwrap();
    let out = s3.prefix("denied");
    let open = FaultyProxy::start(&s3.endpoint, Box::new(|_, _| None)).await;
    let first = run_through(&open, &s3, home.path(), &out);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let output =
        c360::output::Output::new(&out, s3.options(), c360::output::TableFormat::Parquet).unwrap();
    let catalog = output.get("features.json").await.unwrap().unwrap();

    // Writes of customer_360 are refused: "403 Access Denied" is not retried.
    let denied = FaultyProxy::start(
        &s3.endpoint,
        Box::new(|method, path| {
            (method != "GET" && method != "HEAD" && path.contains("customer_360")).then_some(403)
        }),
    )
    .await;
    let failed = run_through(&denied, &s3, home.path(), &out);
    assert_fails(&failed, 6, &["customer_360", "Forbidden"]);
    assert_eq!(denied.injected().len(), 1, "{:?}", denied.injected());
    assert_eq!(output.get("features.json").await.unwrap().unwrap(), catalog);
}
