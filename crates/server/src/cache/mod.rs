//! Cache and pub/sub: Redis when configured, in-process otherwise.
