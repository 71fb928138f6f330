//! Fixed-window rate limits over the cache: shared by every replica through
//! Redis when configured, in-process otherwise.

use std::time::Duration;

use crate::cache::Cache;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub name: &'static str,
    pub max: i64,
    pub window: Duration,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

pub const LOGIN_PER_IP: Limit = Limit {
    name: "login-ip",
    max: 30,
    window: MINUTE,
};
pub const LOGIN_PER_ACCOUNT: Limit = Limit {
    name: "login-account",
    max: 10,
    window: MINUTE,
};
pub const REGISTER_PER_IP: Limit = Limit {
    name: "register-ip",
    max: 10,
    window: HOUR,
};
pub const FORGOT_PER_IP: Limit = Limit {
    name: "forgot-ip",
    max: 10,
    window: HOUR,
};
pub const FORGOT_PER_ACCOUNT: Limit = Limit {
    name: "forgot-account",
    max: 3,
    window: HOUR,
};
pub const VERIFY_RESEND_PER_ACCOUNT: Limit = Limit {
    name: "verify-resend-account",
    max: 5,
    window: HOUR,
};
pub const REFRESH_PER_IP: Limit = Limit {
    name: "refresh-ip",
    max: 60,
    window: MINUTE,
};

/// Counts one request by `subject` (an IP or a normalised email) against
/// `limit`; past it, answers 429 with the time left in the window.
pub async fn hit(cache: &Cache, limit: Limit, subject: &str) -> Result<()> {
    let key = format!("ratelimit:{}:{subject}", limit.name);
    let count = cache.incr(&key, 1, limit.window).await?;
    if count <= limit.max {
        return Ok(());
    }
    let retry_after = cache.ttl(&key).await?.unwrap_or(limit.window);
    Err(Error::RateLimited {
        message: "Too many requests; try again later.".to_owned(),
        retry_after_secs: retry_after.as_secs().max(1),
    })
}
