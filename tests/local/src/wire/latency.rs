//! A relay in front of a MySQL or MariaDB server that makes the network slow as a cloud's is:
//! every chunk of bytes, in each direction, reaches the other side half a round trip after it
//! arrived, so a round trip through it costs at least `round_trip`. Bytes are forwarded unchanged
//! and in order; nothing is parsed.
//!
//! ```text
//! LatencyRelay::in_front_of(database_url: &str, round_trip: Duration) -> io::Result<LatencyRelay>
//! LatencyRelay::start(upstream: SocketAddr, round_trip: Duration) -> io::Result<LatencyRelay>
//! LatencyRelay::url(&self, database_url: &str) -> String   the same URL, through the relay, TLS off
//! LatencyRelay::addr(&self) -> SocketAddr
//! ```
//!
//! Each direction of each connection is a queue of `(deliver_at, bytes)`: a reader stamps every
//! chunk with its arrival time plus the delay and queues it at once, a writer sleeps until the
//! oldest chunk is due and sends it. So a chunk waits the delay and no longer, however many follow
//! it (the link's throughput is not one chunk per delay), and connections never wait on each other.
//! The reader and the writer are OS threads, four per connection: tokio's timer has a granularity
//! of a millisecond, which would turn a half-millisecond delay into up to one and a half, where
//! a thread's `sleep` wakes within tens of microseconds of its deadline.

use crate::wire::upstream_of;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const BUFFER: usize = 64 * 1024;
/// Chunks queued in one direction before its reader stops reading (back-pressure on the sender).
const QUEUED_CHUNKS: usize = 1024;
/// The relay's threads only copy bytes.
const STACK: usize = 128 * 1024;

/// The relay; dropping it closes the listener and every connection through it.
pub struct LatencyRelay {
    addr: SocketAddr,
    open: Arc<Open>,
    accepting: JoinHandle<()>,
}

impl LatencyRelay {
    /// Listens on 127.0.0.1 (a port of its own) and forwards every connection to `upstream`,
    /// each direction delayed by half of `round_trip`.
    pub async fn start(upstream: SocketAddr, round_trip: Duration) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = Arc::new(Open::default());
        let accepting = tokio::spawn(accept(listener, upstream, round_trip / 2, open.clone()));
        Ok(Self {
            addr,
            open,
            accepting,
        })
    }

    /// [`LatencyRelay::start`] in front of the server a `mysql://` URL names (its host's first
    /// address).
    pub async fn in_front_of(database_url: &str, round_trip: Duration) -> io::Result<Self> {
        let upstream = upstream_of(database_url).await?;
        Self::start(upstream, round_trip).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `database_url` (same user, password, database and options) pointed at this relay, with
    /// TLS off, as the other relays of this module do (a bench on loopback has no use for it).
    pub fn url(&self, database_url: &str) -> String {
        super::through(database_url, self.addr)
    }
}

impl Drop for LatencyRelay {
    fn drop(&mut self) {
        self.accepting.abort();
        self.open.close_all();
    }
}

/// The sockets of the connections still open, so that dropping the relay can close them (their
/// threads block in `read`, which only a shutdown of the socket ends).
#[derive(Default)]
struct Open {
    state: Mutex<OpenState>,
}

#[derive(Default)]
struct OpenState {
    next: u64,
    sockets: HashMap<u64, [TcpStream; 2]>,
    closed: bool,
}

impl Open {
    fn lock(&self) -> MutexGuard<'_, OpenState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a handle on both sockets of a connection until the returned guard drops; `None` if
    /// the relay is closing.
    fn register(self: &Arc<Self>, sockets: [TcpStream; 2]) -> Option<Registered> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        let id = state.next;
        state.next += 1;
        state.sockets.insert(id, sockets);
        Some(Registered {
            id,
            open: self.clone(),
        })
    }

    fn close_all(&self) {
        let mut state = self.lock();
        state.closed = true;
        for sockets in state.sockets.values() {
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }
}

/// A connection's place in [`Open`], given up when its last thread ends.
struct Registered {
    id: u64,
    open: Arc<Open>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.lock().sockets.remove(&self.id);
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, one_way: Duration, open: Arc<Open>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let Ok(client) = client.into_std() else {
            continue;
        };
        let open = open.clone();
        let spawned = thread::Builder::new()
            .name("db-latency".into())
            .stack_size(STACK)
            .spawn(move || relay(client, upstream, one_way, &open));
        // Without a thread the client's connection is dropped: what a client of an unreachable
        // server sees.
        drop(spawned);
    }
}

/// One connection: this thread reads the client, three more read the server and write each side.
fn relay(client: TcpStream, upstream: SocketAddr, one_way: Duration, open: &Arc<Open>) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let setup = || -> io::Result<_> {
        // tokio's socket was non-blocking; these threads block.
        client.set_nonblocking(false)?;
        // Every packet is a round trip someone waits on: never hold one back to fill a segment.
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        Ok([client.try_clone()?, server.try_clone()?])
    };
    let Ok(handles) = setup() else { return };
    let Some(registered) = open.register(handles) else {
        return;
    };
    let registered = Arc::new(registered);
    let (Ok(client_out), Ok(server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let to_client = {
        let registered = registered.clone();
        thread::Builder::new()
            .name("db-latency".into())
            .stack_size(STACK)
            .spawn(move || {
                direction(server, client_out, one_way);
                drop(registered);
            })
    };
    if to_client.is_ok() {
        direction(client, server_out, one_way);
    }
}

/// Copies `from` to `to`, each chunk `one_way` after it was read, until `from` closes (then `to`
/// is shut for writing once the chunks before are delivered) or `to` fails.
fn direction(mut from: TcpStream, to: TcpStream, one_way: Duration) {
    let (queue, due) = sync_channel::<(Instant, Vec<u8>)>(QUEUED_CHUNKS);
    let writer = thread::Builder::new()
        .name("db-latency".into())
        .stack_size(STACK)
        .spawn(move || deliver(&due, to));
    if writer.is_err() {
        return;
    }
    let mut buffer = vec![0; BUFFER];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let chunk = (Instant::now() + one_way, buffer[..read].to_vec());
        if queue.send(chunk).is_err() {
            // The writer stopped: the other side is gone, so is this connection.
            let _ = from.shutdown(Shutdown::Both);
            break;
        }
    }
    drop(queue);
    if let Ok(writer) = writer {
        let _ = writer.join();
    }
}

fn deliver(due: &Receiver<(Instant, Vec<u8>)>, mut to: TcpStream) {
    for (at, bytes) in due {
        let wait = at.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            thread::sleep(wait);
        }
        if to.write_all(&bytes).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    use sqlx::mysql::MySqlConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    /// An echo server on 127.0.0.1: every byte it reads it writes back at once.
    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("its address");
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_nodelay(true);
                thread::spawn(move || {
                    let mut buffer = [0; 4096];
                    while let Ok(read @ 1..) = stream.read(&mut buffer) {
                        if stream.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(relay: &LatencyRelay) -> TcpStream {
        let stream = TcpStream::connect(relay.addr()).expect("connect to the relay");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    #[tokio::test]
    async fn a_round_trip_through_the_relay_costs_the_round_trip_and_not_much_more() {
        let round_trip = Duration::from_millis(5);
        let relay = LatencyRelay::start(echo_server(), round_trip)
            .await
            .expect("relay");
        let times = tokio::task::spawn_blocking(move || {
            let mut stream = connect(&relay);
            (0..10)
                .map(|n| {
                    let started = Instant::now();
                    stream.write_all(&[n]).expect("write");
                    let mut echoed = [0];
                    stream.read_exact(&mut echoed).expect("read");
                    assert_eq!(echoed, [n]);
                    started.elapsed()
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("the client");
        assert!(times.iter().all(|t| *t >= round_trip), "{times:?}");
        // The fastest of ten: a busy machine can delay some, not every one.
        let fastest = times.iter().min().expect("ten");
        assert!(*fastest < round_trip * 2, "{times:?}");
    }

    /// A chunk waits the delay and no longer: many sent in a row arrive a delay after the first,
    /// in order, not one delay after another.
    #[tokio::test]
    async fn chunks_in_flight_together_each_wait_one_delay_and_keep_their_order() {
        let round_trip = Duration::from_millis(20);
        let relay = LatencyRelay::start(echo_server(), round_trip)
            .await
            .expect("relay");
        let (elapsed, echoed, sent) = tokio::task::spawn_blocking(move || {
            let mut stream = connect(&relay);
            let mut reader = stream.try_clone().expect("clone");
            let sent: Vec<u8> = (0..200_000u32).map(|n| (n % 251) as u8).collect();
            let expected = sent.len();
            let reading = thread::spawn(move || {
                let mut echoed = vec![0; expected];
                reader.read_exact(&mut echoed).expect("read the echo");
                echoed
            });
            let started = Instant::now();
            // 50 writes, a millisecond apart: 50 chunks in flight at once each way.
            for part in sent.chunks(sent.len() / 50) {
                stream.write_all(part).expect("write");
                thread::sleep(Duration::from_millis(1));
            }
            let echoed = reading.join().expect("the reader");
            (started.elapsed(), echoed, sent)
        })
        .await
        .expect("the client");
        assert!(echoed == sent, "the bytes came back changed or reordered");
        assert!(elapsed >= round_trip, "{elapsed:?}");
        // One delay after another would be 50 round trips, a second.
        assert!(elapsed < round_trip * 10, "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_select_through_the_relay_costs_at_least_its_round_trip() {
        let round_trip = Duration::from_millis(5);
        let database_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| shared::config::DEFAULT_DATABASE_URL.to_owned());
        let relay = LatencyRelay::in_front_of(&database_url, round_trip)
            .await
            .expect("relay");
        let mut conn = MySqlConnectOptions::from_str(&relay.url(&database_url))
            .expect("the URL through the relay")
            .database("information_schema")
            .connect()
            .await
            .expect("connect through the relay");
        let mut times = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut conn)
                .await
                .expect("SELECT 1");
            times.push(started.elapsed());
            assert_eq!(one, 1);
        }
        conn.close().await.expect("close");
        assert!(times.iter().all(|t| *t >= round_trip), "{times:?}");
        let fastest = times.iter().min().expect("ten");
        assert!(*fastest < round_trip * 2, "{times:?}");
    }

    #[tokio::test]
    async fn dropping_the_relay_closes_its_connections() {
        let relay = LatencyRelay::start(echo_server(), Duration::from_millis(1))
            .await
            .expect("relay");
        let after_the_drop = tokio::task::spawn_blocking(move || {
            let mut stream = connect(&relay);
            stream.write_all(b"x").expect("write");
            let mut echoed = [0];
            stream.read_exact(&mut echoed).expect("read");
            drop(relay);
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            stream.read(&mut [0; 1])
        })
        .await
        .expect("the client");
        match after_the_drop {
            Ok(read) => assert_eq!(read, 0, "the connection is closed"),
            Err(err) => assert!(
                !matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "still open 5 s after the drop: {err}"
            ),
        }
    }
}
