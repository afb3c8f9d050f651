//! Listeners and the one accept loop: a [`Service`] is a set of listeners (config key,
//! address, implicit TLS or not, the [`Protocol`] that serves them) sharing one
//! [`Admission`] gate and one TLS configuration. It binds them on their configured addresses
//! ([`Service::start`]) and on a resource group's floating address while this node holds it
//! ([`Service::bind_on`]); each binding is a [`ListenerSet`] that stops on its own.
//!
//! Every accepted connection runs in its own task: admission (refused connections get the
//! protocol's refusal in plain text and are closed, before any TLS work), the TLS handshake
//! on implicit-TLS listeners (bounded by the service's handshake timeout), then
//! [`Protocol::serve`]. The admission guard is held until `serve` returns.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use crate::admission::{Admission, Refused};
use crate::stream::Stream;
use crate::tls::Tls;

/// What a protocol's `serve` returns.
pub type ServeFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// An admitted connection, handed to its protocol.
pub struct Accepted {
    /// TLS already negotiated on an implicit-TLS listener; plain otherwise.
    pub stream: Stream,
    pub peer: SocketAddr,
    /// Set when the listener stops (node shutdown, floating address given up); sessions
    /// that can end politely (SMTP's 421 between commands) watch it, the others are ended
    /// after the drain time.
    pub stop: watch::Receiver<bool>,
}

/// The one trait a protocol implements to be served by the network layer.
pub trait Protocol: Send + Sync + 'static {
    /// Short name for logs (`smtp`, `imap`, `pop3`).
    fn name(&self) -> &'static str;
    /// The bytes written to a connection from `peer` that admission refused, before it is
    /// closed.
    fn refusal(&self, why: Refused, peer: SocketAddr) -> Vec<u8>;
    /// Serves one admitted connection until it ends.
    fn serve(&self, conn: Accepted) -> ServeFuture;
}

/// One configured listener.
#[derive(Clone)]
pub struct Listener {
    /// The configuration key, for errors (`mta.smtp_listen`).
    pub key: &'static str,
    /// `IP:port`; `None`: not configured, not started.
    pub addr: Option<String>,
    /// TLS from the first byte (ports 465, 993, 995).
    pub implicit_tls: bool,
    pub protocol: Arc<dyn Protocol>,
    /// This listener's own allow/deny rules (its protocol's `*_client_access`), checked
    /// before the service's: first match decides, no match passes on to the service's rules.
    pub rules: Arc<Vec<crate::admission::AccessRule>>,
}

/// Listeners sharing one admission gate and one TLS configuration.
#[derive(Clone)]
pub struct Service {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    name: &'static str,
    listeners: Vec<Listener>,
    admission: Admission,
    tls: Option<Tls>,
    handshake_timeout: Duration,
}

impl Service {
    /// `name` is for logs (`mta`, `access`); `handshake_timeout` bounds the TLS handshake of
    /// implicit-TLS listeners (a client that never finishes it is dropped).
    pub fn new(
        name: &'static str,
        listeners: Vec<Listener>,
        admission: Admission,
        tls: Option<Tls>,
        handshake_timeout: Duration,
    ) -> Service {
        Service {
            inner: Arc::new(ServiceInner {
                name,
                listeners,
                admission,
                tls,
                handshake_timeout,
            }),
        }
    }

    pub fn admission(&self) -> &Admission {
        &self.inner.admission
    }

    /// Binds every configured listener at its configured address (a port in use is the
    /// error, naming the key; what was bound is closed again) and starts accepting.
    pub async fn start(&self) -> Result<ListenerSet, String> {
        let mut set = ListenerSet::new();
        for l in &self.inner.listeners {
            let Some(addr) = &l.addr else { continue };
            match TcpListener::bind(addr).await {
                Ok(tcp) => {
                    let at = tcp.local_addr().map_err(|e| format!("{}: {e}", l.key))?;
                    set.add(self, l, tcp, at, false);
                }
                Err(e) => {
                    set.stop(Duration::ZERO).await;
                    return Err(format!("{} {addr}: cannot bind: {e}", l.key));
                }
            }
        }
        tracing::info!(service = self.inner.name, listeners = ?set.bound, "listening");
        Ok(set)
    }

    /// Binds the port of each configured listener on `ip` (a floating address). A port that
    /// cannot be bound closes what was opened and is the error.
    pub async fn bind_on(&self, ip: IpAddr) -> Result<ListenerSet, String> {
        let mut set = ListenerSet::new();
        for l in &self.inner.listeners {
            let Some(addr) = &l.addr else { continue };
            let at = match addr.parse::<SocketAddr>() {
                Ok(a) => SocketAddr::new(ip, a.port()),
                Err(_) => {
                    set.stop(Duration::ZERO).await;
                    return Err(format!("{} {addr}: not IP:port", l.key));
                }
            };
            match TcpListener::bind(at).await {
                Ok(tcp) => {
                    let at = tcp.local_addr().unwrap_or(at);
                    set.add(self, l, tcp, at, true)
                }
                Err(e) => {
                    set.stop(Duration::ZERO).await;
                    return Err(format!("{} on {at}: cannot bind: {e}", l.key));
                }
            }
        }
        Ok(set)
    }

    /// The listener's own rules, admission, implicit TLS, then the protocol: the life of
    /// one connection.
    async fn connection(
        self,
        mut tcp: TcpStream,
        peer: SocketAddr,
        l: Listener,
        stop: watch::Receiver<bool>,
    ) {
        let Listener {
            implicit_tls,
            protocol,
            rules,
            key,
            ..
        } = l;
        if !crate::admission::rules_admit(&rules, peer.ip()) {
            tracing::info!(service = self.inner.name, listener = key, %peer, "connection refused by the listener's client_access rules");
            let _ = tcp
                .write_all(&protocol.refusal(Refused::Denied, peer))
                .await;
            return;
        }
        let guard = match self.inner.admission.admit(peer.ip()) {
            Ok(g) => g,
            Err(why) => {
                tracing::debug!(service = self.inner.name, %peer, ?why, "connection refused");
                let _ = tcp.write_all(&protocol.refusal(why, peer)).await;
                return;
            }
        };
        let mut stream = Stream::Plain(tcp);
        if implicit_tls {
            let Some(tls) = &self.inner.tls else { return };
            let hs = stream.start_tls(tls.acceptor());
            match tokio::time::timeout(self.inner.handshake_timeout, hs).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        protocol.serve(Accepted { stream, peer, stop }).await;
        drop(guard);
    }
}

/// The next connection from `listener`, or `None` once `stop` is set. Accept errors
/// (EMFILE and friends) are logged and retried after a pause instead of spinning.
pub async fn next_connection(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return None,
        }
    }
}

/// Accepts on one listener until `stop`; each connection in its own task, registered in
/// `sessions` when the set ends its sessions itself (floating addresses).
async fn accept_loop(
    service: Service,
    listener: TcpListener,
    l: Listener,
    mut stop: watch::Receiver<bool>,
    sessions: Option<Arc<Sessions>>,
) {
    let what = l.protocol.name();
    while let Some((tcp, peer)) = next_connection(&listener, &mut stop, what).await {
        let task = tokio::spawn(
            service
                .clone()
                .connection(tcp, peer, l.clone(), stop.clone()),
        );
        if let Some(s) = &sessions {
            s.add(task.abort_handle());
        }
    }
}

/// The sessions accepted on one set of listeners, so that the set can be stopped on its own
/// (a group's floating address given up) without touching other sessions: wait for them to
/// finish up to a deadline, then end the rest.
#[derive(Default)]
pub struct Sessions {
    tasks: std::sync::Mutex<Vec<AbortHandle>>,
}

impl Sessions {
    pub fn add(&self, h: AbortHandle) {
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() >= 256 {
            t.retain(|h| !h.is_finished());
        }
        t.push(h);
    }

    pub fn live(&self) -> usize {
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|h| !h.is_finished());
        t.len()
    }

    /// Waits until every session finished or `deadline`, then aborts those left; returns
    /// how many had to be aborted.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> usize {
        while self.live() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let t = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut n = 0;
        for h in t {
            if !h.is_finished() {
                h.abort();
                n += 1;
            }
        }
        n
    }
}

/// Listeners bound by one [`Service::start`] or [`Service::bind_on`], stopped together.
/// Sessions accepted on a floating address are tracked and ended after the drain time when
/// the set stops; sessions on the node's own addresses are left to the service's owner
/// (they end with the node).
pub struct ListenerSet {
    stop: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    sessions: Arc<Sessions>,
    /// Bound addresses, in configuration order.
    pub bound: Vec<SocketAddr>,
    /// Bound address per configuration key (useful when a port 0 was configured).
    pub by_key: Vec<(&'static str, SocketAddr)>,
}

impl ListenerSet {
    fn new() -> ListenerSet {
        let (stop, stop_rx) = watch::channel(false);
        ListenerSet {
            stop,
            stop_rx,
            tasks: Vec::new(),
            sessions: Arc::new(Sessions::default()),
            bound: Vec::new(),
            by_key: Vec::new(),
        }
    }

    fn add(
        &mut self,
        service: &Service,
        l: &Listener,
        tcp: TcpListener,
        at: SocketAddr,
        track: bool,
    ) {
        let sessions = track.then(|| self.sessions.clone());
        self.tasks.push(tokio::spawn(accept_loop(
            service.clone(),
            tcp,
            l.clone(),
            self.stop_rx.clone(),
            sessions,
        )));
        self.bound.push(at);
        self.by_key.push((l.key, at));
    }

    /// The address bound for configuration key `key`.
    pub fn addr(&self, key: &str) -> Option<SocketAddr> {
        self.by_key.iter().find(|(k, _)| *k == key).map(|(_, a)| *a)
    }

    /// Stops accepting at once; the sessions (told through the stop signal: SMTP answers 421
    /// between commands, a transaction in progress may finish) get until `drain`, then what
    /// is left of the tracked ones is ended. Returns how many sessions had to be ended.
    pub async fn stop(self, drain: Duration) -> usize {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.sessions
            .drain(tokio::time::Instant::now() + drain)
            .await
    }

    /// Tracked sessions still open.
    pub fn live(&self) -> usize {
        self.sessions.live()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Limits;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Greets, then echoes one line.
    struct Echo;

    impl Protocol for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn refusal(&self, why: Refused, _peer: SocketAddr) -> Vec<u8> {
            format!("NO {}\r\n", why.reason()).into_bytes()
        }
        fn serve(&self, mut conn: Accepted) -> ServeFuture {
            Box::pin(async move {
                let _ = conn.stream.write_all(b"HELLO\r\n").await;
                let mut buf = [0u8; 64];
                if let Ok(n) = conn.stream.read(&mut buf).await {
                    let _ = conn.stream.write_all(&buf[..n]).await;
                }
            })
        }
    }

    fn service(limits: Limits) -> Service {
        Service::new(
            "test",
            vec![Listener {
                key: "test.listen",
                addr: Some("127.0.0.1:0".into()),
                implicit_tls: false,
                protocol: Arc::new(Echo),
                rules: Arc::new(Vec::new()),
            }],
            Admission::new(limits),
            None,
            Duration::from_secs(5),
        )
    }

    async fn read_some(c: &mut TcpStream) -> String {
        let mut buf = [0u8; 128];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn admitted_connections_are_served_and_refused_ones_get_the_protocols_words() {
        let svc = service(Limits {
            max_connections: 10,
            max_connections_per_ip: 1,
            ..Limits::default()
        });
        let set = svc.start().await.expect("binds");
        let at = set.addr("test.listen").expect("bound");
        let mut first = TcpStream::connect(at).await.unwrap();
        assert_eq!(read_some(&mut first).await, "HELLO\r\n");
        let mut second = TcpStream::connect(at).await.unwrap();
        assert_eq!(
            read_some(&mut second).await,
            "NO too many connections from your address\r\n"
        );
        first.write_all(b"ping\r\n").await.unwrap();
        assert_eq!(read_some(&mut first).await, "ping\r\n");
        drop(first);
        // The place is given back when the session ends.
        let t = tokio::time::Instant::now();
        while svc.admission().connections() > 0 && t.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut third = TcpStream::connect(at).await.unwrap();
        assert_eq!(read_some(&mut third).await, "HELLO\r\n");
        set.stop(Duration::ZERO).await;
    }

    #[tokio::test]
    async fn a_set_on_another_address_stops_and_ends_its_sessions() {
        let svc = service(Limits {
            max_connections: 10,
            max_connections_per_ip: 10,
            ..Limits::default()
        });
        let set = svc
            .bind_on("127.0.0.1".parse().unwrap())
            .await
            .expect("binds");
        let at = set.bound[0];
        let mut c = TcpStream::connect(at).await.unwrap();
        assert_eq!(read_some(&mut c).await, "HELLO\r\n");
        let t = tokio::time::Instant::now();
        while set.live() == 0 && t.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(set.live(), 1);
        // The echo session waits for a line that never comes: it is ended after the drain.
        assert_eq!(set.stop(Duration::from_millis(50)).await, 1);
        assert!(
            TcpStream::connect(at).await.is_err(),
            "the listener is closed"
        );
    }

    #[tokio::test]
    async fn a_port_in_use_is_an_error_naming_the_key() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let svc = Service::new(
            "test",
            vec![Listener {
                key: "test.listen",
                addr: Some(format!("127.0.0.1:{port}")),
                implicit_tls: false,
                protocol: Arc::new(Echo),
                rules: Arc::new(Vec::new()),
            }],
            Admission::new(Limits::default()),
            None,
            Duration::from_secs(5),
        );
        let e = svc.start().await.err().expect("refused");
        assert!(
            e.starts_with(&format!("test.listen 127.0.0.1:{port}: cannot bind")),
            "{e}"
        );
    }
}
