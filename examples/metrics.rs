//! The echo server, plus a side port serving its counters as Prometheus
//! text, so an operator can scrape it.
//!
//! ```text
//! cargo run --example metrics -- --port 4000 --metrics-port 9100
//! curl http://127.0.0.1:9100/metrics
//! ```

mod common;

use std::sync::Arc;
use std::time::Duration;

use atoll::{Flow, Handler, Server, Socket};

struct Echo;

impl Handler for Echo {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

/// Answers any HTTP request with the echo server's counters.
struct Metrics {
    echo: Arc<Server>,
    request: Vec<u8>,
}

impl Handler for Metrics {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        self.request.extend_from_slice(data);
        if self.request.len() > 8192 {
            return Flow::Close; // not a scrape
        }
        if !self.request.windows(4).any(|w| w == b"\r\n\r\n") {
            return Flow::Continue; // the head is not complete yet
        }
        let s = self.echo.stats();
        let body = format!(
            "# TYPE atoll_connections gauge\natoll_connections {}\n\
             # TYPE atoll_accepted_total counter\natoll_accepted_total {}\n\
             # TYPE atoll_rejected_total counter\natoll_rejected_total {}\n\
             # TYPE atoll_accept_errors_total counter\natoll_accept_errors_total {}\n\
             # TYPE atoll_received_bytes_total counter\natoll_received_bytes_total {}\n\
             # TYPE atoll_sent_bytes_total counter\natoll_sent_bytes_total {}\n\
             # TYPE atoll_busy_workers gauge\natoll_busy_workers {}\n\
             # TYPE atoll_queued_dispatches gauge\natoll_queued_dispatches {}\n\
             # TYPE atoll_messages_refused_total counter\natoll_messages_refused_total {}\n\
             # TYPE atoll_proxy_errors_total counter\natoll_proxy_errors_total {}\n",
            s.live,
            s.accepted,
            s.rejected,
            s.accept_errors,
            s.bytes_in,
            s.bytes_out,
            s.busy_workers,
            s.queued,
            s.messages_refused,
            s.proxy_errors
        );
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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

fn main() -> common::Result {
    let (mut port, mut metrics_port) = (4000u16, 9100u16);
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--port" => port = args.parse()?,
            "--metrics-port" => metrics_port = args.parse()?,
            _ => return Err("usage: metrics [--port N] [--metrics-port N]".into()),
        }
    }
    let echo = Arc::new(
        Server::builder()
            .ip([127, 0, 0, 1].into())
            .port(port)
            .start(|_| Ok(Echo))?,
    );
    let scraped = echo.clone();
    let metrics = Server::builder()
        .ip([127, 0, 0, 1].into())
        .port(metrics_port)
        .num_workers(1)
        .num_acceptors(1)
        .read_timeout(Some(Duration::from_secs(5)))
        .start(move |_| {
            Ok(Metrics {
                echo: scraped.clone(),
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
