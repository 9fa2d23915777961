//! The TCP connections between the processes of a cluster.
//!
//! Timely's own set-up (`timely_communication::networking::create_sockets`)
//! polls its listener, and retries a refused connection, once a second, so
//! a cluster whose processes start together took one to two seconds to
//! connect. This does the same handshake, which timely's network threads
//! then take over: each process listens on its own address, connects to
//! every process before it in the host list and sends its index (a
//! big-endian `u64`), and accepts the processes after it. It polls every
//! millisecond, and retries a refused connection after 1 ms, doubling up to
//! 100 ms, so processes started together connect in milliseconds; a peer
//! that has not come is waited for, as timely does, with a line in the log
//! every ten seconds.

use std::io::{self, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How often a peer still missing is logged.
const REPORT: Duration = Duration::from_secs(10);

/// A connection to every other process, by index (`None` at `process`).
pub(crate) fn connect(hosts: &[String], process: usize) -> io::Result<Vec<Option<TcpStream>>> {
    let listener = TcpListener::bind(&hosts[process]).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {} (process {process}): {e}",
                hosts[process]
            ),
        )
    })?;
    listener.set_nonblocking(true)?;
    let count = hosts.len();
    let accepting = std::thread::Builder::new()
        .name("tidemark:accept".into())
        .spawn(move || accept(&listener, process, count))?;
    let mut sockets = Vec::with_capacity(count);
    for (index, address) in hosts.iter().enumerate().take(process) {
        sockets.push(Some(dial(address, index, process)?));
    }
    sockets.push(None);
    let later = accepting
        .join()
        .map_err(|_| io::Error::other("the thread accepting connections panicked"))??;
    sockets.extend(later);
    Ok(sockets)
}

/// Connects to process `index` at `address` and says who this is.
fn dial(address: &str, index: usize, process: usize) -> io::Result<TcpStream> {
    let (mut wait, mut reported) = (Duration::from_millis(1), Instant::now());
    loop {
        match TcpStream::connect(address) {
            Ok(mut stream) => {
                stream.set_nodelay(true)?;
                stream.write_all(&(process as u64).to_be_bytes())?;
                return Ok(stream);
            }
            Err(e) => {
                if reported.elapsed() >= REPORT {
                    tracing::info!(
                        process = index,
                        %address,
                        error = %e,
                        "Waiting for a process of the cluster."
                    );
                    reported = Instant::now();
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// Accepts the processes after `process`, each of which says who it is.
fn accept(
    listener: &TcpListener,
    process: usize,
    count: usize,
) -> io::Result<Vec<Option<TcpStream>>> {
    let mut later: Vec<Option<TcpStream>> = (process + 1..count).map(|_| None).collect();
    let mut reported = Instant::now();
    while later.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((mut stream, from)) => {
                stream.set_nonblocking(false)?;
                stream.set_nodelay(true)?;
                let mut index = [0u8; 8];
                stream.read_exact(&mut index)?;
                let index = u64::from_be_bytes(index);
                let slot = usize::try_from(index)
                    .ok()
                    .and_then(|i| i.checked_sub(process + 1))
                    .and_then(|i| later.get_mut(i));
                match slot {
                    Some(slot @ None) => *slot = Some(stream),
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "{from} connected as process {index}, which is not one this process ({process} of {count}) waits for"
                            ),
                        ));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if reported.elapsed() >= REPORT {
                    let missing: Vec<usize> = later
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.is_none())
                        .map(|(i, _)| process + 1 + i)
                        .collect();
                    tracing::info!(?missing, "Waiting for processes of the cluster to connect.");
                    reported = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(later)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    #[test]
    fn three_processes_connect_each_to_each() {
        let hosts: Vec<String> = (0..3).map(|_| free()).collect();
        let handles: Vec<_> = (0..3)
            .rev()
            .map(|p| {
                let hosts = hosts.clone();
                std::thread::spawn(move || connect(&hosts, p).unwrap())
            })
            .collect();
        let mut all: Vec<Vec<Option<TcpStream>>> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        all.reverse();
        for (p, sockets) in all.iter_mut().enumerate() {
            assert_eq!(sockets.len(), 3);
            assert!(sockets[p].is_none());
            // Each pair is one connection: what one end writes, the other
            // reads.
            for (q, s) in sockets.iter_mut().enumerate() {
                if let Some(s) = s {
                    s.write_all(&[p as u8, q as u8]).unwrap();
                }
            }
        }
        for (p, sockets) in all.iter_mut().enumerate() {
            for (q, s) in sockets.iter_mut().enumerate() {
                if let Some(s) = s {
                    let mut got = [0u8; 2];
                    s.read_exact(&mut got).unwrap();
                    assert_eq!(got, [q as u8, p as u8]);
                }
            }
        }
    }

    #[test]
    fn a_stranger_is_refused_with_a_clear_error() {
        let hosts: Vec<String> = (0..2).map(|_| free()).collect();
        let listener = hosts[0].clone();
        let waiting = std::thread::spawn({
            let hosts = hosts.clone();
            move || connect(&hosts, 0)
        });
        let mut stream = loop {
            if let Ok(s) = TcpStream::connect(&listener) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        stream.write_all(&7u64.to_be_bytes()).unwrap();
        let error = waiting.join().unwrap().unwrap_err();
        assert!(error.to_string().contains("as process 7"), "{error}");
    }
}
