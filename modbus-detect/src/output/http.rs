//! A small HTTP server on a thread of its own (metrics, dashboard): the
//! packet path never waits on a client. Bound before the thread starts, so
//! that a busy or forbidden address is an error at once, naming it.

use std::net::SocketAddr;

/// Bind `addr` (port 0 picks one); the listener and the address bound.
pub fn bind(addr: SocketAddr) -> std::io::Result<(std::net::TcpListener, SocketAddr)> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Serve `app` on `listener` from a thread named `name` with a runtime of
/// its own; a failure later is a warning naming the server.
pub fn spawn(
    name: &'static str,
    listener: std::net::TcpListener,
    app: axum::Router,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("modbus-detect: warning: {name} server: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("modbus-detect: warning: {name} server: {e}");
                        return;
                    }
                };
                if let Err(e) = axum::serve(listener, app).await {
                    eprintln!("modbus-detect: warning: {name} server: {e}");
                }
            });
        })
        .map(drop)
}
