//! The controllers over a mocked apiserver.

use std::time::Duration;

use super::backoff;

#[test]
fn backoff_doubles_up_to_a_minute() {
    assert_eq!(backoff(0), Duration::from_millis(250));
    assert_eq!(backoff(1), Duration::from_millis(500));
    assert_eq!(backoff(4), Duration::from_secs(4));
    assert_eq!(backoff(8), Duration::from_secs(60));
    assert_eq!(backoff(100), Duration::from_secs(60));
}
