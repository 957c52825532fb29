//! A TCP proxy in front of a server that the test can hold: while held, nothing it
//! carries moves in either direction (as a node cut off from Redis by the network),
//! and the connections stay open; released, what waited goes on.

#![allow(dead_code)]

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Held {
    pub addr: SocketAddr,
    hold: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut hold: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Held: nothing is read (what comes waits in the kernel's buffers).
        if hold.wait_for(|h| !*h).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Held while waiting for bytes: stop reading at once.
            _ = hold.wait_for(|h| *h) => continue,
        };
        if hold.wait_for(|h| !*h).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Held {
    /// A proxy on a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Held {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (hold, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, rx.clone()));
                tokio::spawn(pump(sr, cw, rx.clone()));
            }
        });
        Held { addr, hold, task }
    }

    /// Nothing moves from now on.
    pub fn hold(&self) {
        let _ = self.hold.send(true);
    }

    /// Everything moves again.
    pub fn release(&self) {
        let _ = self.hold.send(false);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.task.abort();
    }
}
