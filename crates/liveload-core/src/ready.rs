//! Waiting for an agent's port: the one loop every backend whose agents listen on the network
//! uses between "the machine is running" and "the agent accepts connections".
//!
//! A machine reports itself started when its main process started; the agent listens a moment
//! later (it measures the node first). Dialling every 50 ms, each attempt cut at one second,
//! finds the port within a few tens of milliseconds of it opening without flooding a machine
//! that is still booting.

use std::time::Duration;

use tokio::time::Instant;

use crate::{BackendError, BackendErrorKind, Error};

/// Wait until something accepts TCP connections at `address` (`host:port`), or `deadline`.
///
/// At the deadline the error is a [`BackendErrorKind::NotReady`] of `backend` naming the
/// address and the last failure, which core reports inside its creation timeout.
pub async fn wait_for_port(
    backend: &'static str,
    address: &str,
    deadline: Instant,
) -> Result<(), Error> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(
            left.min(Duration::from_secs(1)),
            tokio::net::TcpStream::connect(address),
        )
        .await;
        let last = match attempt {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 1 s".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(BackendError::new(
                backend,
                BackendErrorKind::NotReady,
                format!("nothing listens at {address} yet ({last})"),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_a_port_that_opens_late_and_gives_up_at_the_deadline() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        let opener = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tokio::net::TcpListener::bind(address).await.unwrap()
        });
        wait_for_port(
            "test",
            &address.to_string(),
            Instant::now() + Duration::from_secs(10),
        )
        .await
        .unwrap();
        let listener = opener.await.unwrap();
        drop(listener);
        let err = wait_for_port(
            "test",
            &address.to_string(),
            Instant::now() + Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        let backend = err.as_backend().unwrap();
        assert_eq!(backend.kind, BackendErrorKind::NotReady);
        assert!(
            backend.message.contains(&address.to_string()),
            "{}",
            backend.message
        );
    }
}
