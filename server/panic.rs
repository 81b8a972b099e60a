//! Keeps a panic in a handler from reaching the client as a dropped connection: the future is
//! polled inside `std::panic::catch_unwind`, and a panic turns into `None` (the caller answers
//! 500, or an in-stream error event).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::task::Poll;

use crate::device::panic::panic_message;

/// Runs `fut`; `None` if it panicked.
pub async fn catch_unwind<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    std::future::poll_fn(move |cx| {
        // Unwind safety: after a panic the future is never polled again, only dropped.
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Some(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => {
                tracing::error!("a request handler panicked: {}", panic_message(&*p));
                Poll::Ready(None)
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_none() {
        assert_eq!(catch_unwind(async { 3 }).await, Some(3));
        let r = catch_unwind(async {
            tokio::task::yield_now().await;
            panic!("boom")
        })
        .await;
        assert_eq!(r, None::<()>);
    }
}
