//! The text of a caught panic, for the error that reports it.

use std::any::Any;

/// The message `panic!` was given (a `&str` or a formatted `String`); "unknown panic" for any
/// other payload.
pub fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_payload_kinds_give_their_text() {
        let literal = std::panic::catch_unwind(|| panic!("boom")).unwrap_err();
        assert_eq!(panic_message(&*literal), "boom");
        let n = 3;
        let formatted = std::panic::catch_unwind(|| panic!("boom {n}")).unwrap_err();
        assert_eq!(panic_message(&*formatted), "boom 3");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(&*other), "unknown panic");
    }
}
