//! The echo server, with its metrics (`atoll::metrics`, feature `metrics`)
//! served in Prometheus text on a side port by the Prometheus exporter's
//! recorder.
//!
//! ```text
//! cargo run --example metrics --features metrics -- --port 4000 --metrics-port 9100
//! curl http://127.0.0.1:9100/metrics
//! ```
//!
//! The exporter renders; the side port is a small atoll HTTP server, so it
//! listens where the example's flags say (port 0 picks a free one and is
//! printed) with no async runtime.

mod common;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use atoll::metrics::{Metrics, Publisher};
use atoll::{Flow, Handler, Server, Socket};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

struct Echo;

impl Handler for Echo {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

/// Upper bounds of the histograms' buckets, in seconds: from 10 µs (a
/// dispatch on an idle server) to 10 minutes (a long connection).
const BUCKETS: [f64; 15] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
    600.0,
];

/// Answers `GET /metrics` with the exporter's rendering, anything else
/// with 404; one request per connection.
struct Scrape {
    exporter: PrometheusHandle,
    publisher: Arc<Publisher>,
    request: Vec<u8>,
}

impl Handler for Scrape {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        self.request.extend_from_slice(data);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        let (status, body) = match request.parse(&self.request) {
            Ok(httparse::Status::Partial) if self.request.len() <= 8192 => {
                return Flow::Continue; // the head is not complete yet
            }
            Ok(httparse::Status::Complete(_))
                if request.method == Some("GET") && request.path == Some("/metrics") =>
            {
                // The counters and gauges as of now, not of the last tick.
                self.publisher.update();
                ("200 OK", self.exporter.render())
            }
            Ok(httparse::Status::Complete(_)) => ("404 Not Found", String::new()),
            _ => ("400 Bad Request", String::new()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        match socket.send_vectored(&mut [
            std::io::IoSlice::new(head.as_bytes()),
            std::io::IoSlice::new(body.as_bytes()),
        ]) {
            Ok(()) => Flow::Close,
            Err(e) => Flow::error(e),
        }
    }
}

const HELP: &str = "\
metrics: an atoll echo server with Prometheus metrics on a side port

Options:
  --ip ADDR           echo address [127.0.0.1]
  --port N            echo port, 0 for a free one [4000]
  --workers N         base worker count
  --max-workers N     worker limit
  --acceptors N       acceptor threads
  --metrics-port N    port of GET /metrics on 127.0.0.1, 0 for a free one [9100]";

fn main() -> ExitCode {
    common::run_main("metrics", run)
}

fn run() -> common::Result {
    let mut metrics_port = 9100u16;
    let mut echo = Server::builder().ip([127, 0, 0, 1].into()).port(4000);
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--metrics-port" => metrics_port = args.parse()?,
            other => {
                if !args.server_flag(other, &mut echo)? {
                    return Err(args.unknown());
                }
            }
        }
    }
    // The recorder first: handles taken before it would record nothing.
    let exporter = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)?
        .install_recorder()?;
    let echo = echo.start(|_| Ok(Echo))?;
    let publisher = Arc::new(Metrics::new().label("server", "echo").publish(&echo)?);

    // Histograms keep their samples until upkeep drains them into the
    // buckets; scrapes do it too, but not every deployment scrapes.
    let upkeep = exporter.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(5));
        upkeep.run_upkeep();
    });

    let metrics = Server::builder()
        .ip([127, 0, 0, 1].into())
        .port(metrics_port)
        .num_workers(1)
        .num_acceptors(1)
        .read_timeout(Some(Duration::from_secs(5)))
        .start(move |_| {
            Ok(Scrape {
                exporter: exporter.clone(),
                publisher: publisher.clone(),
                request: Vec::new(),
            })
        })?;
    println!("listening on {}", echo.local_addr()?);
    println!("metrics on http://{}/metrics", metrics.local_addr()?);
    common::wait_for_signal()?;
    metrics.stop(Duration::from_secs(1));
    echo.stop(Duration::from_secs(15));
    Ok(())
}
