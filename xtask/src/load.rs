//! `cargo xtask load`: a bounded HTTP/1.1 load generator for the serving benchmarks.
//! `concurrency` connections (kept alive), each sending its share of `requests` POSTs of
//! one body back to back; prints requests/s, latency percentiles and the statuses seen.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

struct Options {
    addr: String,
    path: String,
    body: Vec<u8>,
    content_type: String,
    concurrency: usize,
    requests: usize,
    warmup: usize,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            addr: String::new(),
            path: "/v1/predict".into(),
            body: Vec::new(),
            content_type: "application/json".into(),
            concurrency: 1,
            requests: 200,
            warmup: 10,
        };
        let mut body = None;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--addr" => options.addr = value()?.clone(),
                "--path" => options.path = value()?.clone(),
                "--body" => body = Some(value()?.clone()),
                "--content-type" => options.content_type = value()?.clone(),
                "--concurrency" => options.concurrency = value()?.parse().context("--concurrency")?,
                "--requests" => options.requests = value()?.parse().context("--requests")?,
                "--warmup" => options.warmup = value()?.parse().context("--warmup")?,
                other => bail!("unknown option {other}"),
            }
        }
        if options.addr.is_empty() || options.concurrency == 0 || options.requests == 0 {
            bail!(
                "usage: cargo xtask load --addr HOST:PORT --body FILE [--path P] [--concurrency C] [--requests N] [--warmup W]"
            );
        }
        let body = body.context("--body FILE is needed")?;
        options.body = std::fs::read(&body).with_context(|| format!("cannot read {body}"))?;
        Ok(options)
    }
}

/// One keep-alive connection.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn open(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one request and reads its answer; returns the status.
    fn send(&mut self, head: &[u8], body: &[u8]) -> Result<u16> {
        self.writer.write_all(head)?;
        self.writer.write_all(body)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP answer: {line:?}"))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(n) = header.strip_prefix("content-length:") {
                length = n.trim().parse()?;
            }
            close |= header == "connection: close";
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        if close {
            bail!("the server closed the connection");
        }
        Ok(status)
    }
}

/// One connection's latencies (ms), the statuses it saw, and when its measured requests
/// began and ended.
type Measured = (Vec<f64>, BTreeMap<u16, usize>, Instant, Instant);

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        options.path,
        options.addr,
        options.content_type,
        options.body.len()
    );
    let share = options.requests.div_ceil(options.concurrency);
    // Every connection warms up, then all start measuring together.
    let ready = std::sync::Barrier::new(options.concurrency);
    let results: Vec<Result<Measured>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.concurrency)
            .map(|_| {
                scope.spawn(|| -> Result<Measured> {
                    let warmed = Connection::open(&options.addr).and_then(|mut connection| {
                        for _ in 0..options.warmup.div_ceil(options.concurrency) {
                            connection.send(head.as_bytes(), &options.body)?;
                        }
                        Ok(connection)
                    });
                    // Wait for the others even after a failure, or they would wait forever.
                    ready.wait();
                    let mut connection = warmed?;
                    let begun = Instant::now();
                    let (mut latencies, mut statuses) = (Vec::with_capacity(share), BTreeMap::new());
                    for _ in 0..share {
                        let sent = Instant::now();
                        let status = connection.send(head.as_bytes(), &options.body)?;
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        *statuses.entry(status).or_insert(0) += 1;
                    }
                    Ok((latencies, statuses, begun, Instant::now()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a load thread panicked"))
            .collect()
    });
    let (mut latencies, mut statuses) = (Vec::new(), BTreeMap::new());
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    for result in results {
        let (l, s, begun, ended) = result?;
        first = Some(first.map_or(begun, |f| f.min(begun)));
        last = Some(last.map_or(ended, |l| l.max(ended)));
        latencies.extend(l);
        for (status, count) in s {
            *statuses.entry(status).or_insert(0) += count;
        }
    }
    latencies.sort_by(f64::total_cmp);
    // From the first measured request to the last answer: warm-ups are outside.
    let seconds = match (first, last) {
        (Some(first), Some(last)) => (last - first).as_secs_f64(),
        _ => 0.0,
    };
    let report = serde_json::json!({
        "concurrency": options.concurrency,
        "requests": latencies.len(),
        "seconds": seconds,
        "requests_per_second": latencies.len() as f64 / seconds,
        "p50_ms": percentile(&latencies, 0.50),
        "p95_ms": percentile(&latencies, 0.95),
        "p99_ms": percentile(&latencies, 0.99),
        "statuses": statuses,
    });
    println!("{report}");
    Ok(())
}
