//! Feeding a reflected watch to a `kube_runtime::Controller`.
//!
//! The Controller holds its input until the store it reads is ready, and a
//! reflector's store is made ready by polling that very input: with the
//! reflector as the Controller's input, a replica could wait forever for
//! its caches. So the watch is driven by a future of its own, and the
//! objects it applies are handed to the Controller over a channel.

use futures::{Future, Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::mpsc;

/// The future that drives `events` (and so the store it fills), calling
/// `also` for every event, and the stream of the objects it applies.
pub fn applied<K: Send + 'static>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    mut also: impl FnMut(&watcher::Event<K>) + Send,
    what: &'static str,
) -> (
    impl Future<Output = ()> + Send,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let drive = events.for_each(move |event| {
        match event {
            Ok(event) => {
                match &event {
                    watcher::Event::Init => tracing::debug!(watch = what, "listing"),
                    watcher::Event::InitDone => tracing::debug!(watch = what, "listed"),
                    _ => {}
                }
                also(&event);
                if let watcher::Event::Apply(object) | watcher::Event::InitApply(object) = event {
                    let _ = tx.send(Ok(object));
                }
            }
            Err(e) => tracing::warn!(error = %e, watch = what, "watch error; retrying"),
        }
        std::future::ready(())
    });
    (drive, receiver_stream(rx))
}

/// The messages of `rx` as a stream.
pub fn receiver_stream<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Runs a Controller's output to its end, logging what did not reconcile
/// (the error policy has already scheduled the retry).
pub async fn drain<T, E: std::fmt::Display>(
    results: impl Stream<Item = Result<T, E>>,
    reconciler: &'static str,
) {
    results
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, reconciler, "not reconciled");
            }
            std::future::ready(())
        })
        .await;
}
