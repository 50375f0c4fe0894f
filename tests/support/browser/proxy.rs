//! A TCP relay between the browser and the server that can lose the connection on purpose:
//! `cut` drops every relayed connection (the page sees its socket die, as on a network
//! failure), a closed gate refuses new ones until it is opened again, and the server behind it
//! can be swapped for another (a restarted server on a new port).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct CuttingProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    gate_open: AtomicBool,
    relayed: AtomicUsize,
    /// Cancelled by `cut`; connections accepted afterwards get a fresh one.
    generation: Mutex<CancellationToken>,
}

impl CuttingProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            gate_open: AtomicBool::new(true),
            relayed: AtomicUsize::new(0),
            generation: Mutex::new(CancellationToken::new()),
        });
        let accept_task = tokio::spawn(accept(listener, shared.clone()));
        Self { addr, shared, accept_task }
    }

    /// Drops every connection relayed so far.
    pub fn cut(&self) {
        let mut generation = self.shared.generation.lock().expect("lock");
        generation.cancel();
        *generation = CancellationToken::new();
    }

    /// While closed, new connections are accepted and dropped at once, as by a dead network.
    pub fn set_gate(&self, open: bool) {
        self.shared.gate_open.store(open, Ordering::SeqCst);
    }

    /// New connections go to `upstream` from now on.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().expect("lock") = upstream;
    }

    /// Connections relayed to the server so far.
    pub fn relayed(&self) -> usize {
        self.shared.relayed.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((mut client, _)) = listener.accept().await {
        if !shared.gate_open.load(Ordering::SeqCst) {
            continue;
        }
        let upstream = *shared.upstream.lock().expect("lock");
        let Ok(mut server) = TcpStream::connect(upstream).await else { continue };
        shared.relayed.fetch_add(1, Ordering::SeqCst);
        let cut = shared.generation.lock().expect("lock").clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.cancelled() => {}
            }
        });
    }
}
