//! Free loopback ports for the processes tests and benches start.

use std::net::TcpListener;

/// A port free right now on loopback, and never handed out before in this test run: the
/// kernel may offer a port again as soon as its probe socket closes, and tests start their
/// processes concurrently (two listeners of one Vigil once got the same port).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}
