//! Feature `tracing`: the listener, acceptor and connection spans and
//! atoll's own structured events, captured by a real `tracing` subscriber
//! (the registry with a layer of this test's own) while real clients
//! connect.
#![cfg(feature = "tracing")]

mod util;

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use atoll::proxy::ProxyProtocol;
use atoll::{Flow, Handler, Socket};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use util::{builder, connect, read_n, round_trip, tcp_addr, wait_until, PATIENCE};

/// Fields by name, their values as `Display` or `Debug` printed them.
type Fields = HashMap<String, String>;

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

/// A span as an event saw it.
#[derive(Clone, Debug)]
struct SeenSpan {
    name: String,
    fields: Fields,
}

/// An event with its level, target, fields and its spans, innermost first.
#[derive(Clone, Debug)]
struct Seen {
    level: tracing::Level,
    target: String,
    fields: Fields,
    spans: Vec<SeenSpan>,
}

impl Seen {
    fn span(&self, name: &str) -> &SeenSpan {
        self.spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span around {self:?}"))
    }
}

fn seen() -> &'static Mutex<Vec<Seen>> {
    static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
    &SEEN
}

/// Keeps every span's fields (updated by `record`) and every event with
/// its scope.
struct Capture;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Collect(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(&mut Collect(fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|span| SeenSpan {
                        name: span.name().to_string(),
                        fields: span
                            .extensions()
                            .get::<Fields>()
                            .cloned()
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        seen().lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            fields,
            spans,
        });
    }
}

/// Installs the capturing subscriber for the whole process (the workers
/// are other threads), once.
fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).expect("no subscriber before");
    });
}

/// Waits for an event whose field `key` is `value`.
fn event_with(key: &str, value: &str) -> Seen {
    let mut found = None;
    wait_until(&format!("an event with {key}={value}"), || {
        found = seen()
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.fields.get(key).map(String::as_str) == Some(value))
            .cloned();
        found.is_some()
    });
    found.unwrap()
}

/// Echoes, and says so in an event of its own with the socket's id.
struct Chatty(&'static str);

impl Handler for Chatty {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        tracing::info!(marker = self.0, socket = socket.id(), "echoing");
        if data == b"fail" {
            return Flow::error("the handler gave up");
        }
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

#[test]
fn a_handlers_events_carry_the_connection_acceptor_and_listener_spans() {
    capture();
    let server = builder().start(|_| Ok(Chatty("plain"))).unwrap();
    let addr = tcp_addr(&server);
    let mut client = connect(addr);
    round_trip(&mut client, b"hello");

    let event = event_with("marker", "plain");
    assert_eq!(event.level, tracing::Level::INFO);
    let conn = event.span("connection");
    assert_eq!(conn.fields["id"], event.fields["socket"]);
    assert_eq!(
        conn.fields["peer"],
        client.local_addr().unwrap().to_string()
    );
    assert_eq!(conn.fields["local"], addr.to_string());
    assert_eq!(conn.fields["transport"], "tcp");
    assert!(!conn.fields.contains_key("proxy"), "{conn:?}");
    let acceptor = event.span("acceptor");
    assert!(
        acceptor.fields["thread"].starts_with("atoll-"),
        "{acceptor:?}"
    );
    let listener = event.span("listener");
    assert_eq!(listener.fields["local"], addr.to_string());
    assert_eq!(listener.fields["transport"], "tcp");
    // Innermost first: the connection under its acceptor under its listener.
    let names: Vec<&str> = event.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["connection", "acceptor", "listener"]);
    server.stop(PATIENCE);
}

#[test]
fn behind_a_proxy_the_span_names_the_proxy_and_the_original_client() {
    capture();
    let server = builder()
        .proxy_protocol(ProxyProtocol::new())
        .start(|_| Ok(Chatty("proxied")))
        .unwrap();
    let mut proxy = connect(tcp_addr(&server));
    proxy
        .write_all(b"PROXY TCP4 192.0.2.7 192.0.2.8 40000 443\r\nhi")
        .unwrap();
    assert_eq!(read_n(&mut proxy, 2), b"hi");

    let event = event_with("marker", "proxied");
    let conn = event.span("connection");
    assert_eq!(conn.fields["peer"], "192.0.2.7:40000");
    assert_eq!(
        conn.fields["proxy"],
        proxy.local_addr().unwrap().to_string()
    );
    server.stop(PATIENCE);
}

#[test]
fn atolls_own_lines_are_events_with_fields_in_the_connection_span() {
    capture();
    let server = builder().start(|_| Ok(Chatty("failing"))).unwrap();
    let mut client = connect(tcp_addr(&server));
    client.write_all(b"fail").unwrap();
    let id = event_with("marker", "failing").fields["socket"].clone();

    // The end of a connection whose handler returned an error.
    let mut ended = None;
    wait_until("the connection's end to be reported", || {
        ended = seen()
            .lock()
            .unwrap()
            .iter()
            .find(|e| {
                e.fields.get("message").map(String::as_str) == Some("connection ended")
                    && e.fields.get("connection") == Some(&id)
            })
            .cloned();
        ended.is_some()
    });
    let ended = ended.unwrap();
    assert_eq!(ended.level, tracing::Level::ERROR);
    assert_eq!(ended.target, "atoll");
    assert_eq!(
        ended.fields["peer"],
        client.local_addr().unwrap().to_string()
    );
    assert!(
        ended.fields["error"].contains("the handler gave up"),
        "{ended:?}"
    );
    assert_eq!(ended.span("connection").fields["id"], id);
    server.stop(PATIENCE);
}
