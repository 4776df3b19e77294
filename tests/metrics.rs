//! `atoll::metrics` (feature `metrics`): a server's numbers through the
//! `metrics` facade, read back as Prometheus text rendered by the
//! Prometheus exporter; and the `metrics` example scraped by curl.
#![cfg(feature = "metrics")]

mod util;

use std::net::TcpStream;
use std::time::Duration;

use atoll::metrics::Metrics;
use atoll::{Flow, Handler, Socket};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use util::examples::{external, Served};
use util::{builder, connect, echo_server, round_trip, tcp_addr, wait_until, PATIENCE};

/// The value of the sample `name{labels}` in Prometheus text (`labels` as
/// rendered, without braces; empty for none), if present.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines().find_map(|line| {
        let (k, v) = line.rsplit_once(' ')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// A recorder of this test's own (not the process's), rendering with
/// buckets for the `_seconds` histograms.
fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.001, 0.01, 0.1, 1.0, 10.0],
        )
        .unwrap()
        .build_recorder()
}

/// Sleeps `delay` before each echo.
struct SlowEcho(Duration);

impl Handler for SlowEcho {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        std::thread::sleep(self.0);
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

#[test]
fn counters_gauges_and_histograms_follow_what_clients_did() {
    let recorder = recorder();
    let handle = recorder.handle();
    let server = builder()
        .start(|_| Ok(SlowEcho(Duration::from_millis(20))))
        .unwrap();
    // The handles are taken in `publish`, from the recorder in force then.
    let publisher = metrics::with_local_recorder(&recorder, || {
        Metrics::new().label("server", "slow").publish(&server)
    })
    .unwrap();
    let addr = tcp_addr(&server);
    for _ in 0..3 {
        let mut client = connect(addr);
        round_trip(&mut client, b"twelve bytes");
    }
    util::wait_no_connections(&server);
    publisher.update();
    let text = handle.render();
    let value = |name: &str| {
        sample(&text, name, r#"server="slow""#).unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert_eq!(value("atoll_connections_accepted_total"), 3.0);
    assert_eq!(value("atoll_received_bytes_total"), 36.0);
    assert_eq!(value("atoll_sent_bytes_total"), 36.0);
    assert_eq!(value("atoll_connections"), 0.0);
    assert_eq!(value("atoll_handler_panics_total"), 0.0);
    assert!(value("atoll_workers") >= 1.0);
    assert_eq!(value("atoll_connection_duration_seconds_count"), 3.0);
    assert!(value("atoll_dispatch_wait_seconds_count") >= 3.0);
    // Each connection's round of callbacks slept 20 ms: a lower bound.
    assert!(value("atoll_callback_duration_seconds_count") >= 3.0);
    assert!(
        value("atoll_callback_duration_seconds_sum") >= 0.06,
        "{text}"
    );
    let fast = sample(
        &text,
        "atoll_callback_duration_seconds_bucket",
        r#"server="slow",le="0.01""#,
    );
    let slowest = value("atoll_callback_duration_seconds_count");
    let all = sample(
        &text,
        "atoll_callback_duration_seconds_bucket",
        r#"server="slow",le="+Inf""#,
    );
    assert_eq!(all, Some(slowest), "{text}");
    // The three rounds that slept are above 10 ms.
    assert!(fast.is_some_and(|n| n <= slowest - 3.0), "{text}");
    assert!(text.contains("# TYPE atoll_connections_accepted_total counter"));
    assert!(text.contains("# TYPE atoll_connections gauge"));
    assert!(text.contains("# TYPE atoll_dispatch_wait_seconds histogram"));
    publisher.stop();
    server.stop(PATIENCE);
}

#[test]
fn the_thread_copies_the_stats_and_a_stopped_publisher_records_nothing() {
    let recorder = recorder();
    let handle = recorder.handle();
    let server = echo_server(builder());
    let publisher = metrics::with_local_recorder(&recorder, || {
        Metrics::new()
            .label("server", "ticking")
            .interval(Duration::from_millis(5))
            .publish(&server)
    })
    .unwrap();
    let accepted = |text: &str| {
        sample(
            text,
            "atoll_connections_accepted_total",
            r#"server="ticking""#,
        )
    };
    assert_eq!(accepted(&handle.render()), Some(0.0));
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"tick");
    // No `update`: the thread copies the count.
    wait_until("the thread to publish the accept", || {
        accepted(&handle.render()) == Some(1.0)
    });
    drop(client);
    util::wait_no_connections(&server);
    let count = |text: &str| {
        sample(
            text,
            "atoll_connection_duration_seconds_count",
            r#"server="ticking""#,
        )
    };
    // No `update` either: the thread records the samples the workers took.
    wait_until("the thread to record the connection's duration", || {
        count(&handle.render()) == Some(1.0)
    });

    publisher.stop();
    let before = handle.render();
    assert_eq!(count(&before), Some(1.0));
    let mut late = connect(tcp_addr(&server));
    round_trip(&mut late, b"after");
    drop(late);
    util::wait_no_connections(&server);
    assert_eq!(server.stats().accepted, 2);
    let after = handle.render();
    assert_eq!(accepted(&after), Some(1.0), "published after stop");
    assert_eq!(count(&after), Some(1.0), "a histogram recorded after stop");
    server.stop(PATIENCE);
}

#[test]
fn a_server_has_one_publisher_at_a_time_and_its_histograms_record_each_event_once() {
    let recorder = recorder();
    let handle = recorder.handle();
    let server = echo_server(builder());
    let publish = || {
        metrics::with_local_recorder(&recorder, || {
            Metrics::new().label("server", "once").publish(&server)
        })
    };
    let first = publish().unwrap();
    // Same labels or others: the server is taken.
    let again = publish();
    assert!(
        matches!(again, Err(atoll::Error::Config(_))),
        "a second publisher while the first runs: {again:?}"
    );
    let other = metrics::with_local_recorder(&recorder, || {
        Metrics::new().label("server", "other").publish(&server)
    });
    assert!(other.is_err(), "{other:?}");
    let serve = |n: usize| {
        for _ in 0..n {
            let mut client = connect(tcp_addr(&server));
            round_trip(&mut client, b"once");
        }
        util::wait_no_connections(&server);
    };
    let connections = |text: &str| {
        sample(
            text,
            "atoll_connection_duration_seconds_count",
            r#"server="once""#,
        )
    };
    serve(2);
    first.update();
    let text = handle.render();
    assert_eq!(connections(&text), Some(2.0), "{text}");
    // As many dispatch waits as dispatches: one sink records them.
    assert_eq!(
        sample(
            &text,
            "atoll_dispatch_wait_seconds_count",
            r#"server="once""#
        ),
        sample(&text, "atoll_dispatches_total", r#"server="once""#),
        "{text}"
    );
    assert!(!text.contains(r#"server="other""#), "{text}");

    // Stopped, the server can be published again, and is recorded once.
    first.stop();
    let second = publish().unwrap();
    serve(1);
    second.update();
    let text = handle.render();
    assert_eq!(connections(&text), Some(3.0), "{text}");
    drop(second);
    server.stop(PATIENCE);
}

#[test]
fn the_samples_of_workers_that_retired_are_recorded() {
    let recorder = recorder();
    let handle = recorder.handle();
    // Callbacks that block grow the pool; the extra workers retire soon.
    let server = builder()
        .num_workers(1)
        .worker_keepalive(Duration::from_millis(100))
        .start(|_| Ok(SlowEcho(Duration::from_millis(30))))
        .unwrap();
    let publisher = metrics::with_local_recorder(&recorder, || {
        Metrics::new()
            .label("server", "retired")
            .interval(Duration::from_secs(3600))
            .publish(&server)
    })
    .unwrap();
    let addr = tcp_addr(&server);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = connect(addr);
                for _ in 0..3 {
                    round_trip(&mut client, b"block");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    util::wait_no_connections(&server);
    wait_until("the extra workers to retire", || {
        server.stats().workers == 1
    });
    publisher.update();
    let text = handle.render();
    let value = |name: &str| sample(&text, name, r#"server="retired""#);
    assert_eq!(
        value("atoll_connection_duration_seconds_count"),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        value("atoll_dispatch_wait_seconds_count"),
        value("atoll_dispatches_total"),
        "{text}"
    );
    assert!(
        value("atoll_callback_duration_seconds_count").is_some_and(|n| n >= 18.0),
        "{text}"
    );
    publisher.stop();
    server.stop(PATIENCE);
}

#[test]
fn the_metrics_example_serves_prometheus_text_to_curl() {
    let Some(mut curl) = external("curl", "curl") else {
        return;
    };
    let mut served = Served::start("metrics", &["--metrics-port", "0"]);
    let line = served
        .process
        .wait_line("`metrics on`", PATIENCE, |l| l.starts_with("metrics on "));
    let url = line.trim_start_matches("metrics on ").to_string();

    for _ in 0..4 {
        let mut client = TcpStream::connect(served.addr).unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        round_trip(&mut client, b"0123456789");
    }
    let scrape = |curl: &mut std::process::Command| {
        let out = curl
            .args(["--silent", "--show-error", "--max-time", "10"])
            .arg(&url)
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "curl: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // The echo connections are closed: wait for the server to see it.
    let mut text = String::new();
    wait_until("the live gauge to reach zero", || {
        text = scrape(&mut external("curl", "curl").unwrap());
        sample(&text, "atoll_connections", r#"server="echo""#) == Some(0.0)
    });
    let value = |name: &str| sample(&text, name, r#"server="echo""#);
    assert_eq!(
        value("atoll_connections_accepted_total"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(value("atoll_received_bytes_total"), Some(40.0), "{text}");
    assert_eq!(value("atoll_sent_bytes_total"), Some(40.0), "{text}");
    assert_eq!(
        value("atoll_connection_duration_seconds_count"),
        Some(4.0),
        "{text}"
    );
    assert!(value("atoll_dispatch_wait_seconds_count").is_some_and(|n| n >= 4.0));
    assert!(
        text.contains("# HELP atoll_connections Live connections."),
        "{text}"
    );
    assert!(
        text.contains(r#"atoll_dispatch_wait_seconds_bucket{server="echo",le="+Inf"}"#),
        "{text}"
    );
    // Another path is not the metrics.
    let out = curl
        .args([
            "--silent",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
        ])
        .arg(url.replace("/metrics", "/other"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    served.stop();
}
