//! Durable background jobs: queue, workers, retries.
