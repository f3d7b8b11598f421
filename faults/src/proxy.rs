//! A loopback TCP proxy that a test puts between one client and its server, to cut or
//! stall that client's links while every other client keeps its own.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use valkeyrie_faults::Proxy;
//!
//! let proxy = Proxy::start("127.0.0.1:12379").await?;
//! // Open the store under test on `proxy.address()` instead of the server's address.
//! proxy.cut(); // every open link drops, new ones are refused
//! proxy.restore(); // links are accepted and forwarded again
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards bytes both ways.
    Forward,
    /// Keeps links open but forwards nothing, like a network that black-holes packets.
    Stall,
    /// Drops every link and closes new ones at once, like a peer that resets them.
    Cut,
}

/// A TCP proxy on `127.0.0.1` (an ephemeral port) to one upstream address; it stops when
/// dropped.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    mode: watch::Sender<Mode>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each accepted connection to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: &str) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (mode, modes) = watch::channel(Mode::Forward);
        let upstream = upstream.to_owned();
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *modes.borrow() == Mode::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(link(client, upstream.clone(), modes.clone()));
            }
        });
        Ok(Proxy {
            address,
            mode,
            acceptor,
        })
    }

    /// The proxy's `host:port`, for the client under test.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Drops every open link and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Stops forwarding on every link (they stay open) until [`Proxy::restore`] or
    /// [`Proxy::cut`].
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Forwards again: new links are accepted; stalled links resume.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        // Ends every link.
        self.mode.send_replace(Mode::Cut);
    }
}

/// Forwards one client connection until either side closes or the proxy cuts it.
async fn link(client: TcpStream, upstream: String, modes: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, modes.clone()) => {}
        () = pump(server_read, client_write, modes) => {}
    }
}

/// Copies `from` to `to` while the mode allows it; returns when the link should close.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut modes: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        if !forwarding(&mut modes).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            changed = modes.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read before a stall are held until it ends, as a black-holed network would.
        if !forwarding(&mut modes).await || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits out a stall: `true` once forwarding, `false` if the link is to close.
async fn forwarding(modes: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let mode = *modes.borrow_and_update();
        match mode {
            Mode::Forward => return true,
            Mode::Cut => return false,
            Mode::Stall => {
                if modes.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::Proxy;

    /// An echo server on a free loopback port.
    async fn echo() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0_u8; 64];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    async fn round_trip(socket: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
        socket.write_all(b"ping").await.ok()?;
        let mut answer = [0_u8; 4];
        match tokio::time::timeout(wait, socket.read_exact(&mut answer)).await {
            Ok(Ok(_)) => Some(answer.to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn forwards_stalls_cuts_and_restores() {
        let proxy = Proxy::start(&echo().await).await.expect("a proxy");
        let mut link = TcpStream::connect(proxy.address()).await.expect("connect");
        let second = Duration::from_secs(1);
        assert_eq!(round_trip(&mut link, second).await.as_deref(), Some(&b"ping"[..]));

        proxy.stall();
        assert_eq!(
            round_trip(&mut link, Duration::from_millis(200)).await,
            None,
            "a stall forwards nothing"
        );
        proxy.restore();
        let mut held = [0_u8; 4];
        tokio::time::timeout(second, link.read_exact(&mut held))
            .await
            .expect("the held bytes arrive once the stall ends")
            .expect("read");
        assert_eq!(&held, b"ping");

        proxy.cut();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(second, link.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a cut closes open links");
        let mut refused = TcpStream::connect(proxy.address()).await.expect("the listener accepts");
        assert_eq!(
            round_trip(&mut refused, Duration::from_millis(200)).await,
            None,
            "and new ones"
        );

        proxy.restore();
        let mut again = TcpStream::connect(proxy.address()).await.expect("connect");
        assert_eq!(round_trip(&mut again, second).await.as_deref(), Some(&b"ping"[..]));
    }
}
