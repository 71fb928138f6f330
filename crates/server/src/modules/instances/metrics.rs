//! Resource usage of running instances: the sampler that records it, the
//! rollup that thins it out as it ages, the series customers read, and the
//! latest readings Prometheus scrapes.
//!
//! Every `metrics_interval_secs` the sampler asks each running VM for its
//! cumulative counters (one `stats()` each, a few at a time) and writes one
//! row per VM. CPU % needs two readings, so it is derived from the previous
//! reading kept in memory: a VM's first reading after this process starts
//! (or after its QEMU restarts) writes nothing.
//!
//! Rows age through three resolutions: raw samples for [`RAW_KEPT`], then
//! one row per 5 minutes until [`FIVE_MINUTE_KEPT`], then one per hour until
//! [`RETAINED`], when they are deleted. A rollup row keeps the last sample's
//! counters and time, so rates between rows stay exact at any resolution,
//! and averages CPU and memory over its bucket.
//!
//! Each process that runs a sampler samples the VMs it can reach and serves
//! its own readings on `/metrics`; the series of an instance that stopped or
//! was deleted disappears at the next pass.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt as _;
use sea_orm::{
    ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
    TransactionTrait as _,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use vmcloud_hypervisor::VmStats;

use super::Services;
use crate::db::Database;
use crate::db::entities::instance::{self, InstanceStatus};
use crate::db::entities::{instance_metric, node};
use crate::error::{Error, Result};
use crate::ids::{InstanceId, InstanceMetricId};
use crate::modules::auth::Actor;

/// Raw samples older than this are rolled into 5-minute rows.
pub const RAW_KEPT: TimeDelta = TimeDelta::hours(2);
/// 5-minute rows older than this are rolled into 1-hour rows.
pub const FIVE_MINUTE_KEPT: TimeDelta = TimeDelta::hours(48);
/// Rows older than this are deleted.
pub const RETAINED: TimeDelta = TimeDelta::days(8);
const FIVE_MINUTES: i32 = 300;
const ONE_HOUR: i32 = 3600;
/// How often the sampler rolls up and prunes.
const ROLLUP_EVERY: Duration = Duration::from_secs(300);
/// `stats()` calls in flight at once, across nodes.
const CONCURRENT_READS: usize = 16;
/// Two rows further apart than this many times the later one's resolution
/// have a gap between them (the VM was stopped): no point spans it.
const GAP_FACTOR: i64 = 3;
/// Rows deleted per statement, well under every backend's bind limit.
const DELETE_CHUNK: usize = 500;

/// The window a series covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, utoipa::ToSchema)]
pub enum MetricsRange {
    #[schema(rename = "1h")]
    LastHour,
    #[schema(rename = "24h")]
    LastDay,
    #[schema(rename = "7d")]
    LastWeek,
}

impl FromStr for MetricsRange {
    type Err = Error;

    fn from_str(range: &str) -> Result<Self> {
        match range {
            "1h" => Ok(Self::LastHour),
            "24h" => Ok(Self::LastDay),
            "7d" => Ok(Self::LastWeek),
            _ => Err(Error::invalid_field("range", "must be one of 1h, 24h, 7d")),
        }
    }
}

impl MetricsRange {
    fn span(self) -> TimeDelta {
        match self {
            Self::LastHour => TimeDelta::hours(1),
            Self::LastDay => TimeDelta::days(1),
            Self::LastWeek => TimeDelta::days(7),
        }
    }

    /// The width of a point; `None` gives one point per sample.
    fn bucket_secs(self) -> Option<i64> {
        match self {
            Self::LastHour => None,
            Self::LastDay => Some(FIVE_MINUTES.into()),
            Self::LastWeek => Some(ONE_HOUR.into()),
        }
    }
}

/// Usage over one sampling interval or one bucket: averages, and byte rates
/// derived from the counters.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MetricPoint {
    /// The sample's time, or the start of the bucket.
    pub t: DateTime<Utc>,
    /// Share of the instance's vCPUs in use, 0–100.
    pub cpu_percent: f64,
    pub memory_used_mib: f64,
    pub disk_read_bps: f64,
    pub disk_write_bps: f64,
    /// 0 where the network backend has no counters (user-mode networking).
    pub net_rx_bps: f64,
    pub net_tx_bps: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MetricSeries {
    /// The width of each point in seconds; `null` for one point per sample.
    pub bucket_secs: Option<i64>,
    /// Oldest first.
    pub points: Vec<MetricPoint>,
}

/// The series of an instance the actor may see (404 otherwise) over `range`.
pub async fn series(
    db: &Database,
    actor: &Actor,
    id: InstanceId,
    range: MetricsRange,
) -> Result<MetricSeries> {
    super::visible(db, actor, id).await?;
    let from = Utc::now() - range.span();
    // The row before the window gives its first point's rates.
    let before = instance_metric::Entity::find()
        .filter(instance_metric::Column::InstanceId.eq(id))
        .filter(instance_metric::Column::SampledAt.lt(from))
        .order_by_desc(instance_metric::Column::SampledAt)
        .limit(1)
        .one(db.reader())
        .await?;
    let within = instance_metric::Entity::find()
        .filter(instance_metric::Column::InstanceId.eq(id))
        .filter(instance_metric::Column::SampledAt.gte(from))
        .order_by_asc(instance_metric::Column::SampledAt)
        .all(db.reader())
        .await?;
    let rows: Vec<_> = before.into_iter().chain(within).collect();
    Ok(MetricSeries {
        bucket_secs: range.bucket_secs(),
        points: points(&rows, range.bucket_secs()),
    })
}

/// Sums over the intervals of one point, to average weighted by time.
#[derive(Default)]
struct Accumulator {
    secs: f64,
    cpu_secs: f64,
    memory_secs: f64,
    disk_read: f64,
    disk_write: f64,
    net_rx: f64,
    net_tx: f64,
}

impl Accumulator {
    #[allow(clippy::cast_precision_loss)]
    fn add(&mut self, previous: &instance_metric::Model, row: &instance_metric::Model, secs: f64) {
        let increase = |from: i64, to: i64| counter_increase(from, to) as f64;
        self.secs += secs;
        self.cpu_secs += row.cpu_percent * secs;
        self.memory_secs += row.memory_used_mib as f64 * secs;
        self.disk_read += increase(previous.disk_read_bytes, row.disk_read_bytes);
        self.disk_write += increase(previous.disk_write_bytes, row.disk_write_bytes);
        self.net_rx += increase(previous.net_rx_bytes, row.net_rx_bytes);
        self.net_tx += increase(previous.net_tx_bytes, row.net_tx_bytes);
    }

    fn point(&self, t: DateTime<Utc>) -> MetricPoint {
        MetricPoint {
            t,
            cpu_percent: self.cpu_secs / self.secs,
            memory_used_mib: self.memory_secs / self.secs,
            disk_read_bps: self.disk_read / self.secs,
            disk_write_bps: self.disk_write / self.secs,
            net_rx_bps: self.net_rx / self.secs,
            net_tx_bps: self.net_tx / self.secs,
        }
    }
}

/// The points of rows sorted by time: one per pair of consecutive rows (the
/// interval ending at the later one), merged per bucket when `bucket_secs`
/// is given. Pairs across a gap are left out.
fn points(rows: &[instance_metric::Model], bucket_secs: Option<i64>) -> Vec<MetricPoint> {
    let mut points = Vec::new();
    let mut open: Option<(DateTime<Utc>, Accumulator)> = None;
    for pair in rows.windows(2) {
        let (previous, row) = (&pair[0], &pair[1]);
        let elapsed = row.sampled_at - previous.sampled_at;
        let gap = TimeDelta::seconds(GAP_FACTOR * i64::from(row.resolution_secs.max(1)));
        if elapsed <= TimeDelta::zero() || elapsed > gap {
            continue;
        }
        let t = bucket_secs.map_or(row.sampled_at, |secs| bucket_start(row.sampled_at, secs));
        if let Some((open_t, sums)) = open.take_if(|(open_t, _)| *open_t != t) {
            points.push(sums.point(open_t));
        }
        #[allow(clippy::cast_precision_loss)]
        let secs = elapsed.num_milliseconds() as f64 / 1000.0;
        open.get_or_insert_with(|| (t, Accumulator::default()))
            .1
            .add(previous, row, secs);
    }
    points.extend(open.map(|(t, sums)| sums.point(t)));
    points
}

/// How much a cumulative counter grew; after a reset (the VM's process
/// restarted) it counts from zero.
fn counter_increase(from: i64, to: i64) -> i64 {
    if to >= from { to - from } else { to }
}

fn bucket_start(t: DateTime<Utc>, bucket_secs: i64) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(bucket_secs) * bucket_secs;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

/// The share of `vcpus` busy between two readings of the process's CPU
/// time, 0–100; `None` when the counter went back (the process restarted).
fn cpu_percent(previous_ns: u64, current_ns: u64, elapsed: Duration, vcpus: i32) -> Option<f64> {
    let used = current_ns.checked_sub(previous_ns)?;
    let available = elapsed.as_secs_f64() * 1e9 * f64::from(vcpus.max(1));
    #[allow(clippy::cast_precision_loss)]
    (available > 0.0).then(|| (used as f64 / available * 100.0).clamp(0.0, 100.0))
}

/// The latest reading of each instance this process samples, for CPU % and
/// for `/metrics`. Cheap to clone: a handle.
#[derive(Clone, Debug, Default)]
pub struct LatestReadings(Arc<Mutex<HashMap<InstanceId, Reading>>>);

#[derive(Clone, Copy, Debug)]
struct Reading {
    at: Instant,
    stats: VmStats,
    /// `None` until a second reading.
    cpu_percent: Option<f64>,
}

impl LatestReadings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceId, Reading>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The readings in the Prometheus text format, one series per instance.
    /// Network counters are left out where the VM has none.
    pub fn render_prometheus(&self) -> String {
        type Value = fn(&Reading) -> Option<f64>;
        #[allow(clippy::cast_precision_loss)]
        let families: [(&str, &str, &str, Value); 6] = [
            (
                "vmcloud_instance_cpu_percent",
                "gauge",
                "Share of the instance's vCPUs in use over the last sampling interval, 0-100.",
                |r| r.cpu_percent,
            ),
            (
                "vmcloud_instance_memory_used_bytes",
                "gauge",
                "Resident memory of the instance's hypervisor process.",
                |r| Some(r.stats.memory_rss_bytes as f64),
            ),
            (
                "vmcloud_instance_disk_read_bytes_total",
                "counter",
                "Bytes the instance read from its disks since its VM started.",
                |r| Some(r.stats.disk_read_bytes as f64),
            ),
            (
                "vmcloud_instance_disk_written_bytes_total",
                "counter",
                "Bytes the instance wrote to its disks since its VM started.",
                |r| Some(r.stats.disk_write_bytes as f64),
            ),
            (
                "vmcloud_instance_network_received_bytes_total",
                "counter",
                "Bytes the instance received since its VM started.",
                |r| r.stats.net_rx_bytes.map(|b| b as f64),
            ),
            (
                "vmcloud_instance_network_transmitted_bytes_total",
                "counter",
                "Bytes the instance sent since its VM started.",
                |r| r.stats.net_tx_bytes.map(|b| b as f64),
            ),
        ];
        let readings = self.lock();
        let mut ids: Vec<_> = readings.keys().collect();
        ids.sort_unstable();
        let mut out = String::new();
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for id in &ids {
                if let Some(value) = value(&readings[*id]) {
                    let _ = writeln!(out, "{name}{{instance=\"{id}\"}} {value}");
                }
            }
        }
        out
    }
}

/// Samples the running instances on a timer, and rolls up and prunes
/// their rows every [`ROLLUP_EVERY`].
#[derive(Debug)]
pub struct Sampler {
    services: Services,
    readings: LatestReadings,
    interval: Duration,
}

impl Sampler {
    pub fn new(services: Services, readings: LatestReadings, interval: Duration) -> Self {
        Self {
            services,
            readings,
            interval,
        }
    }

    /// Samples now, then every interval, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rolled_up_at: Option<Instant> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(err) = self.sample().await {
                tracing::warn!(error = format!("{err:#}"), "metrics sampling failed");
            }
            if rolled_up_at.is_none_or(|at| at.elapsed() >= ROLLUP_EVERY) {
                rolled_up_at = Some(Instant::now());
                if let Err(err) = roll_up(&self.services.db, Utc::now()).await {
                    tracing::warn!(error = format!("{err:#}"), "metrics rollup failed");
                }
            }
        }
    }

    /// Reads every running instance once and writes a row for each that
    /// has a previous reading. Unreachable nodes and failed reads are
    /// skipped: the reconciler reports them.
    pub async fn sample(&self) -> Result<()> {
        let db = &self.services.db;
        let running = instance::Entity::find()
            .filter(instance::Column::Status.eq(InstanceStatus::Running))
            .filter(instance::Column::DeletedAt.is_null())
            .filter(instance::Column::NodeId.is_not_null())
            .all(db.reader())
            .await?;
        let nodes = node::Entity::find()
            .filter(node::Column::Id.is_in(running.iter().filter_map(|row| row.node_id)))
            .all(db.reader())
            .await?;
        let mut drivers = HashMap::new();
        for node in nodes {
            match self.services.drivers.for_node(&node).await {
                Ok(driver) => {
                    drivers.insert(node.id, driver);
                }
                Err(err) => tracing::debug!(node = node.name, %err, "not sampled"),
            }
        }
        let reads = running.into_iter().filter_map(|row| {
            let driver = drivers.get(&row.node_id?)?.clone();
            Some(async move {
                let stats = driver.stats(row.id.into()).await;
                (row, Instant::now(), stats)
            })
        });
        let read: Vec<_> = futures::stream::iter(reads)
            .buffer_unordered(CONCURRENT_READS)
            .collect()
            .await;

        let rows = self.record(read);
        if !rows.is_empty() {
            instance_metric::Entity::insert_many(
                rows.iter()
                    .cloned()
                    .map(sea_orm::IntoActiveModel::into_active_model),
            )
            .exec(db.writer())
            .await?;
        }
        for row in &rows {
            super::events::sampled(&self.services, row).await;
        }
        Ok(())
    }

    /// Keeps this pass's readings (and only these) and returns the rows to
    /// write: one per instance with a previous reading.
    fn record(
        &self,
        read: Vec<(
            instance::Model,
            Instant,
            vmcloud_hypervisor::Result<VmStats>,
        )>,
    ) -> Vec<instance_metric::Model> {
        let sampled_at = crate::db::entities::now();
        let resolution_secs = i32::try_from(self.interval.as_secs()).unwrap_or(i32::MAX);
        let mut rows = Vec::new();
        let mut readings = self.readings.lock();
        let mut current = HashSet::new();
        for (row, at, stats) in read {
            let stats = match stats {
                Ok(stats) => stats,
                Err(err) => {
                    tracing::debug!(instance = %row.id, %err, "not sampled");
                    continue;
                }
            };
            current.insert(row.id);
            let cpu_percent = readings.get(&row.id).and_then(|previous| {
                cpu_percent(
                    previous.stats.cpu_time_ns,
                    stats.cpu_time_ns,
                    at - previous.at,
                    row.vcpus,
                )
            });
            readings.insert(
                row.id,
                Reading {
                    at,
                    stats,
                    cpu_percent,
                },
            );
            if let Some(cpu_percent) = cpu_percent {
                rows.push(sample_row(
                    row.id,
                    sampled_at,
                    cpu_percent,
                    &stats,
                    resolution_secs,
                ));
            }
        }
        // Stopped and deleted instances leave `/metrics`.
        readings.retain(|id, _| current.contains(id));
        rows
    }
}

fn sample_row(
    instance_id: InstanceId,
    sampled_at: DateTime<Utc>,
    cpu_percent: f64,
    stats: &VmStats,
    resolution_secs: i32,
) -> instance_metric::Model {
    let signed = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    instance_metric::Model {
        id: InstanceMetricId::new(),
        instance_id,
        sampled_at,
        cpu_percent,
        memory_used_mib: signed(stats.memory_rss_bytes / (1024 * 1024)),
        disk_read_bytes: signed(stats.disk_read_bytes),
        disk_write_bytes: signed(stats.disk_write_bytes),
        net_rx_bytes: signed(stats.net_rx_bytes.unwrap_or(0)),
        net_tx_bytes: signed(stats.net_tx_bytes.unwrap_or(0)),
        resolution_secs,
        created_at: sampled_at,
        updated_at: sampled_at,
    }
}

/// Rolls raw rows older than [`RAW_KEPT`] into 5-minute rows and rows older
/// than [`FIVE_MINUTE_KEPT`] into 1-hour rows, then deletes rows older than
/// [`RETAINED`]. Idempotent; safe to run from several processes at once
/// (a process that finds its rows already rolled by another backs off).
pub async fn roll_up(db: &Database, now: DateTime<Utc>) -> Result<()> {
    for (older_than, bucket_secs) in [(RAW_KEPT, FIVE_MINUTES), (FIVE_MINUTE_KEPT, ONE_HOUR)] {
        // Whole buckets only, so a bucket is never rolled in two parts.
        let cutoff = bucket_start(now - older_than, bucket_secs.into());
        let rows = instance_metric::Entity::find()
            .filter(instance_metric::Column::ResolutionSecs.lt(bucket_secs))
            .filter(instance_metric::Column::SampledAt.lt(cutoff))
            .order_by_asc(instance_metric::Column::InstanceId)
            .order_by_asc(instance_metric::Column::SampledAt)
            .all(db.writer())
            .await?;
        for instance_rows in rows.chunk_by(|a, b| a.instance_id == b.instance_id) {
            replace(
                db,
                instance_rows,
                &rolled_up(instance_rows, bucket_secs, now),
            )
            .await?;
        }
    }
    instance_metric::Entity::delete_many()
        .filter(instance_metric::Column::SampledAt.lt(now - RETAINED))
        .exec(db.writer())
        .await?;
    Ok(())
}

/// Deletes `old` and writes `new` in one transaction, unless another
/// process deleted some of `old` first.
async fn replace(
    db: &Database,
    old: &[instance_metric::Model],
    new: &[instance_metric::Model],
) -> Result<()> {
    let txn = db.writer().begin().await?;
    let mut deleted = 0;
    for chunk in old.chunks(DELETE_CHUNK) {
        deleted += instance_metric::Entity::delete_many()
            .filter(instance_metric::Column::Id.is_in(chunk.iter().map(|row| row.id)))
            .exec(&txn)
            .await?
            .rows_affected;
    }
    if usize::try_from(deleted).ok() != Some(old.len()) {
        return Ok(txn.rollback().await?);
    }
    instance_metric::Entity::insert_many(
        new.iter()
            .cloned()
            .map(sea_orm::IntoActiveModel::into_active_model),
    )
    .exec(&txn)
    .await?;
    Ok(txn.commit().await?)
}

/// One row per bucket of `rows` (one instance's, sorted by time): the last
/// row's time and counters, CPU and memory averaged weighted by resolution.
fn rolled_up(
    rows: &[instance_metric::Model],
    bucket_secs: i32,
    now: DateTime<Utc>,
) -> Vec<instance_metric::Model> {
    let bucket = |row: &instance_metric::Model| bucket_start(row.sampled_at, bucket_secs.into());
    rows.chunk_by(|a, b| bucket(a) == bucket(b))
        .map(|group| {
            let last = group.last().expect("chunks are not empty");
            let weight = |row: &instance_metric::Model| f64::from(row.resolution_secs.max(1));
            let total: f64 = group.iter().map(weight).sum();
            let average = |value: fn(&instance_metric::Model) -> f64| {
                group
                    .iter()
                    .map(|row| value(row) * weight(row))
                    .sum::<f64>()
                    / total
            };
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let memory_used_mib = average(|row| row.memory_used_mib as f64).round() as i64;
            instance_metric::Model {
                id: InstanceMetricId::new(),
                cpu_percent: average(|row| row.cpu_percent),
                memory_used_mib,
                resolution_secs: bucket_secs,
                created_at: now,
                updated_at: now,
                ..last.clone()
            }
        })
        .collect()
}

#[cfg(test)]
// The expected values are whole numbers, computed exactly in floating point.
#[allow(clippy::float_cmp)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .expect("time")
    }

    /// A row whose counters all grew by `per_sec` bytes a second since 0.
    fn row(
        secs: i64,
        cpu_percent: f64,
        per_sec: i64,
        resolution_secs: i32,
    ) -> instance_metric::Model {
        instance_metric::Model {
            id: InstanceMetricId::new(),
            instance_id: InstanceId(uuid::Uuid::nil()),
            sampled_at: at(secs),
            cpu_percent,
            memory_used_mib: 100,
            disk_read_bytes: per_sec * secs,
            disk_write_bytes: 2 * per_sec * secs,
            net_rx_bytes: 0,
            net_tx_bytes: 3 * per_sec * secs,
            resolution_secs,
            created_at: at(secs),
            updated_at: at(secs),
        }
    }

    #[test]
    fn cpu_percent_is_a_share_of_the_vcpus() {
        let second = Duration::from_secs(1);
        assert_eq!(cpu_percent(0, 500_000_000, second, 1), Some(50.0));
        assert_eq!(cpu_percent(0, 500_000_000, second, 2), Some(25.0));
        // Device emulation can push the process past its vCPUs.
        assert_eq!(cpu_percent(0, 3_000_000_000, second, 2), Some(100.0));
        assert_eq!(cpu_percent(10, 5, second, 1), None, "a restarted process");
        assert_eq!(cpu_percent(0, 5, Duration::ZERO, 1), None);
    }

    #[test]
    fn counters_restart_from_zero() {
        assert_eq!(counter_increase(100, 150), 50);
        assert_eq!(counter_increase(100, 30), 30);
    }

    #[test]
    fn raw_points_are_rates_between_consecutive_samples() {
        let rows = [
            row(0, 0.0, 1000, 10),
            row(10, 40.0, 1000, 10),
            row(20, 60.0, 1000, 10),
        ];
        let points = points(&rows, None);
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].t, at(10));
        assert_eq!(points[0].cpu_percent, 40.0);
        assert_eq!(points[0].memory_used_mib, 100.0);
        assert_eq!(points[0].disk_read_bps, 1000.0);
        assert_eq!(points[0].disk_write_bps, 2000.0);
        assert_eq!(points[0].net_rx_bps, 0.0);
        assert_eq!(points[0].net_tx_bps, 3000.0);
        assert_eq!(points[1].cpu_percent, 60.0);
    }

    #[test]
    fn buckets_average_over_time() {
        // 1_800_000_000 is a multiple of 300: buckets start at 0 and 300.
        let rows = [
            row(0, 0.0, 10, 10),
            row(10, 20.0, 10, 10),
            row(30, 50.0, 10, 10), // 20 s at 50 %
            row(310, 90.0, 10, 300),
        ];
        let points = points(&rows, Some(300));
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].t, at(0));
        assert_eq!(points[0].cpu_percent, 40.0, "(10·20 + 20·50) / 30");
        assert_eq!(points[0].disk_read_bps, 10.0);
        assert_eq!(points[1].t, at(300));
        assert_eq!(points[1].cpu_percent, 90.0);
        assert_eq!(points[1].disk_write_bps, 20.0);
    }

    #[test]
    fn no_point_spans_a_gap() {
        let rows = [
            row(0, 0.0, 1, 10),
            row(3600, 30.0, 1, 10),
            row(3610, 20.0, 1, 10),
        ];
        let points = points(&rows, None);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].t, at(3610));
    }

    #[test]
    fn rollups_keep_the_last_counters_and_average_the_rest() {
        let mut rows: Vec<_> = (0..60).map(|i| row(i * 10, 10.0, 100, 10)).collect();
        rows[59].cpu_percent = 70.0;
        rows[59].memory_used_mib = 160;
        let rolled = rolled_up(&rows, 300, at(9999));
        assert_eq!(rolled.len(), 2, "two 5-minute buckets");
        assert_eq!(rolled[0].sampled_at, at(290));
        assert_eq!(rolled[0].disk_read_bytes, 100 * 290);
        assert_eq!(rolled[0].cpu_percent, 10.0);
        assert_eq!(rolled[1].sampled_at, at(590));
        assert_eq!(rolled[1].cpu_percent, 12.0, "(29·10 + 70) / 30");
        assert_eq!(rolled[1].memory_used_mib, 102);
        assert!(rolled.iter().all(|r| r.resolution_secs == 300));
        // Rates read from rolled rows are the rates of the raw ones.
        let points = points(&rolled, None);
        assert_eq!(points[0].disk_read_bps, 100.0);
    }

    #[test]
    fn prometheus_series_leave_out_missing_counters() {
        let readings = LatestReadings::default();
        let id = InstanceId(uuid::Uuid::nil());
        readings.lock().insert(
            id,
            Reading {
                at: Instant::now(),
                stats: VmStats {
                    memory_rss_bytes: 2048,
                    ..VmStats::default()
                },
                cpu_percent: Some(12.5),
            },
        );
        let text = readings.render_prometheus();
        assert!(text.contains(&format!(
            "vmcloud_instance_cpu_percent{{instance=\"{id}\"}} 12.5\n"
        )));
        assert!(text.contains(&format!(
            "vmcloud_instance_memory_used_bytes{{instance=\"{id}\"}} 2048\n"
        )));
        assert!(text.contains("# TYPE vmcloud_instance_network_received_bytes_total counter"));
        assert!(!text.contains("network_received_bytes_total{"));
    }
}
