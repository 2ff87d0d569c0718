//! A loopback TCP forwarder on a port of its own in front of a server: what a port
//! mapping (a container's published port, `ssh -L`, a NAT) looks like to ccrelay.
//! Clients dial the forwarder's address, so the origin they bind (docs/protocol.md,
//! "Origin binding") names the forwarder's port, which is one of the server's names
//! only when given with `--server-name`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards every connection accepted on `addr` to the current target, byte for
/// byte in both directions, until dropped.
pub struct Forwarder {
    /// Where clients connect.
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// A forwarder on a free loopback port (known before any server starts, so a
    /// server can be told `--server-name 127.0.0.1:<port>`), forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("forwarder binds");
        let addr = listener.local_addr().expect("forwarder address");
        let target = Arc::new(Mutex::new(target));
        let to = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let dest = *to.lock().expect("target");
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(dest).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { addr, target, task }
    }

    /// Forward new connections to `target` from now on (a restarted server).
    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().expect("target") = target;
    }

    /// `ws://<forwarder>/v1/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
