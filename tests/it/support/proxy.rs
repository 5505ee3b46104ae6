//! A loopback TCP proxy that can be cut and restored: an AWS endpoint that goes away and
//! comes back with its state.
//!
//! Restarting moto itself would not model an AWS outage: moto keeps everything in memory,
//! so a restarted moto has no queues, messages or table, which AWS never does (SQS and
//! DynamoDB are durable). What a worker sees when the service restarts or drops off the
//! network is this: connections in flight are closed mid-request, new ones fail, and later
//! the service answers again with its data intact. Cutting the proxy does exactly that to
//! every SDK call routed through it, while moto keeps its state behind it.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct CutProxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl CutProxy {
    /// Forward `127.0.0.1:<free port>` to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (up, watching) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*watching.borrow() {
                    // Cut: closed at once, like a port nobody serves.
                    drop(client);
                    continue;
                }
                let mut cut = watching.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        // Dropping both ends closes the connection mid-request or mid-answer.
                        _ = cut.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Close every open connection and every new one until `restore`.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}
