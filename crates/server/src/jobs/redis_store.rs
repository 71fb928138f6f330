//! The queue in Redis. Keys, all under the configured prefix:
//! - `ready`: sorted set of queued job ids, scored by `run_at` (ms);
//! - `running`: sorted set of claimed job ids, scored by lease expiry (ms);
//! - `dead`: sorted set of dead job ids, scored by time of death (ms);
//! - `job:<id>`: hash with the job's fields;
//! - `unique:<key>`: the id of the pending job holding a unique key.
//!
//! Every state change is one Lua script, so it is atomic however many workers
//! compete. Times come from the caller's clock, as with the database store.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Script, ScriptInvocation};
use secrecy::{ExposeSecret as _, SecretString};

use super::{
    Claimed, ClaimedJob, EnqueueOutcome, FailOutcome, Intervention, JobFilter, JobRecord, JobState,
    JobStatus, Lease, NewJob, QueueStats,
};
use crate::ids::JobId;
use crate::pagination::{Page, PageRequest, encode_cursor};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Expired leases handled per claim; more wait for the next claim.
const EXPIRED_PER_CLAIM: u32 = 100;
/// Jobs read per round trip while listing.
const LIST_BATCH: usize = 200;

/// Shared by every script. ARGV[1] is always the key prefix.
const PRELUDE: &str = r"
local p = ARGV[1]
local function job_key(id) return p .. 'job:' .. id end
-- Is the job still running under this lease?
local function holds(id, worker, attempt)
  local f = redis.call('HMGET', job_key(id), 'status', 'locked_by', 'attempts')
  return f[1] == 'running' and f[2] == worker and f[3] == attempt
end
-- A finished or dead job gives its unique key back.
local function free_unique(id)
  local ukey = redis.call('HGET', job_key(id), 'unique_key')
  if ukey and ukey ~= '' and redis.call('GET', p .. 'unique:' .. ukey) == id then
    redis.call('DEL', p .. 'unique:' .. ukey)
  end
end
local function bury(id, err, now)
  redis.call('HSET', job_key(id), 'status', 'dead', 'locked_until', '', 'locked_by', '',
    'last_error', err, 'updated_at', now)
  redis.call('ZADD', p .. 'dead', now, id)
  free_unique(id)
end
";

/// ARGV: prefix, id, kind, payload, max_attempts, run_at, now, unique key
/// (empty for none). Returns {1, id} when added, {0, holder id} when a pending
/// job holds the key.
const ENQUEUE: &str = r"
local id, ukey = ARGV[2], ARGV[8]
if ukey ~= '' then
  local holder = redis.call('GET', p .. 'unique:' .. ukey)
  if holder then
    local status = redis.call('HGET', job_key(holder), 'status')
    if status == 'queued' or status == 'running' then return {0, holder} end
  end
  redis.call('SET', p .. 'unique:' .. ukey, id)
end
redis.call('HSET', job_key(id), 'kind', ARGV[3], 'payload', ARGV[4], 'status', 'queued',
  'unique_key', ukey, 'attempts', 0, 'max_attempts', ARGV[5], 'run_at', ARGV[6],
  'locked_until', '', 'locked_by', '', 'last_error', '', 'created_at', ARGV[7], 'updated_at', ARGV[7])
redis.call('ZADD', p .. 'ready', ARGV[6], id)
return {1, id}
";

/// ARGV: prefix, now, lease expiry, limit, worker, expired per call, error for
/// a job lost on its last attempt. Returns {{id, kind, payload, attempt,
/// max_attempts}...}, {kinds of jobs dead-lettered...}}.
const CLAIM: &str = r"
local now, locked_until, worker = ARGV[2], ARGV[3], ARGV[5]
local dead = {}
local expired = redis.call('ZRANGEBYSCORE', p .. 'running', '-inf', '(' .. now, 'LIMIT', 0, ARGV[6])
for _, id in ipairs(expired) do
  redis.call('ZREM', p .. 'running', id)
  local f = redis.call('HMGET', job_key(id), 'attempts', 'max_attempts', 'kind')
  if f[1] then
    if tonumber(f[1]) >= tonumber(f[2]) then
      bury(id, ARGV[7], now)
      table.insert(dead, f[3])
    else
      redis.call('HSET', job_key(id), 'status', 'queued', 'run_at', now, 'locked_until', '',
        'locked_by', '', 'updated_at', now)
      redis.call('ZADD', p .. 'ready', now, id)
    end
  end
end
local jobs = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'ready', '-inf', now, 'LIMIT', 0, ARGV[4])) do
  redis.call('ZREM', p .. 'ready', id)
  if redis.call('EXISTS', job_key(id)) == 1 then
    local attempt = redis.call('HINCRBY', job_key(id), 'attempts', 1)
    redis.call('HSET', job_key(id), 'status', 'running', 'locked_until', locked_until,
      'locked_by', worker, 'updated_at', now)
    redis.call('ZADD', p .. 'running', locked_until, id)
    local f = redis.call('HMGET', job_key(id), 'kind', 'payload', 'max_attempts')
    table.insert(jobs, {id, f[1], f[2], attempt, tonumber(f[3])})
  end
end
return {jobs, dead}
";

/// ARGV: prefix, id, worker, attempt, lease expiry, now. Returns 1 or 0.
const HEARTBEAT: &str = r"
local id = ARGV[2]
if not holds(id, ARGV[3], ARGV[4]) then return 0 end
redis.call('HSET', job_key(id), 'locked_until', ARGV[5], 'updated_at', ARGV[6])
redis.call('ZADD', p .. 'running', ARGV[5], id)
return 1
";

/// ARGV: prefix, id, worker, attempt. Returns 1 or 0.
const COMPLETE: &str = r"
local id = ARGV[2]
if not holds(id, ARGV[3], ARGV[4]) then return 0 end
redis.call('ZREM', p .. 'running', id)
free_unique(id)
redis.call('DEL', job_key(id))
return 1
";

/// ARGV: prefix, id, worker, attempt, error, retry at, now. Returns `retry`,
/// `dead` or `lost`.
const FAIL: &str = r"
local id = ARGV[2]
if not holds(id, ARGV[3], ARGV[4]) then return 'lost' end
redis.call('ZREM', p .. 'running', id)
if tonumber(ARGV[4]) >= tonumber(redis.call('HGET', job_key(id), 'max_attempts')) then
  bury(id, ARGV[5], ARGV[7])
  return 'dead'
end
redis.call('HSET', job_key(id), 'status', 'queued', 'run_at', ARGV[6], 'locked_until', '',
  'locked_by', '', 'last_error', ARGV[5], 'updated_at', ARGV[7])
redis.call('ZADD', p .. 'ready', ARGV[6], id)
return 'retry'
";

/// ARGV: prefix, id, worker, attempt, now. Returns 1 or 0.
const RELEASE: &str = r"
local id = ARGV[2]
if not holds(id, ARGV[3], ARGV[4]) then return 0 end
redis.call('ZREM', p .. 'running', id)
redis.call('HSET', job_key(id), 'status', 'queued', 'attempts', tonumber(ARGV[4]) - 1,
  'run_at', ARGV[5], 'locked_until', '', 'locked_by', '', 'updated_at', ARGV[5])
redis.call('ZADD', p .. 'ready', ARGV[5], id)
return 1
";

/// ARGV: prefix, id, now. Queues a dead job again with a fresh set of
/// attempts (its unique key taken back unless another pending job holds it),
/// or makes a failed one due now. Returns `ok`, `missing`, `taken` or the
/// status that refuses it.
const RETRY: &str = r"
local id, now = ARGV[2], ARGV[3]
local f = redis.call('HMGET', job_key(id), 'status', 'last_error', 'unique_key')
if not f[1] then return 'missing' end
if f[1] == 'dead' then
  local ukey = f[3]
  if ukey and ukey ~= '' then
    local holder = redis.call('GET', p .. 'unique:' .. ukey)
    if holder and holder ~= id then
      local status = redis.call('HGET', job_key(holder), 'status')
      if status == 'queued' or status == 'running' then return 'taken' end
    end
    redis.call('SET', p .. 'unique:' .. ukey, id)
  end
  redis.call('ZREM', p .. 'dead', id)
  redis.call('HSET', job_key(id), 'status', 'queued', 'attempts', 0, 'run_at', now, 'updated_at', now)
  redis.call('ZADD', p .. 'ready', now, id)
  return 'ok'
end
if f[1] == 'queued' and f[2] ~= '' then
  redis.call('HSET', job_key(id), 'run_at', now, 'updated_at', now)
  redis.call('ZADD', p .. 'ready', now, id)
  return 'ok'
end
return f[1]
";

/// ARGV: prefix, id. Deletes a job that is not running. Returns `ok`,
/// `missing` or `running`.
const DISCARD: &str = r"
local id = ARGV[2]
local status = redis.call('HGET', job_key(id), 'status')
if not status then return 'missing' end
if status == 'running' then return 'running' end
redis.call('ZREM', p .. 'ready', id)
redis.call('ZREM', p .. 'dead', id)
free_unique(id)
redis.call('DEL', job_key(id))
return 'ok'
";

/// ARGV: prefix, now. Returns {queued, scheduled, running, dead}.
const STATS: &str = r"
return {
  redis.call('ZCOUNT', p .. 'ready', '-inf', ARGV[2]),
  redis.call('ZCOUNT', p .. 'ready', '(' .. ARGV[2], '+inf'),
  redis.call('ZCARD', p .. 'running'),
  redis.call('ZCARD', p .. 'dead'),
}
";

struct Scripts {
    enqueue: Script,
    claim: Script,
    heartbeat: Script,
    complete: Script,
    fail: Script,
    release: Script,
    stats: Script,
    retry: Script,
    discard: Script,
}

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            enqueue: script(ENQUEUE),
            claim: script(CLAIM),
            heartbeat: script(HEARTBEAT),
            complete: script(COMPLETE),
            fail: script(FAIL),
            release: script(RELEASE),
            stats: script(STATS),
            retry: script(RETRY),
            discard: script(DISCARD),
        }
    }
}

/// A claimed job as the claim script returns it.
type ClaimRow = (String, String, String, u32, u32);

pub(super) struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: Scripts,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    pub(super) async fn connect(url: &SecretString, prefix: &str) -> anyhow::Result<Self> {
        let raw = url.expose_secret();
        let client = redis::Client::open(raw).map_err(|err| {
            anyhow::anyhow!("invalid Redis URL: {}", redact(&err.to_string(), raw, None))
        })?;
        let password = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_owned);
        let hide = |err: &redis::RedisError| redact(&err.to_string(), raw, password.as_deref());
        // A one-off connection first: the manager retries a failed connect
        // with backoff for seconds, which is right later but only delays a
        // startup error.
        let mut probe = client
            .get_multiplexed_async_connection_with_config(
                &AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT)),
            )
            .await
            .map_err(|err| anyhow::anyhow!("cannot connect to Redis: {}", hide(&err)))?;
        redis::cmd("PING")
            .query_async::<String>(&mut probe)
            .await
            .map_err(|err| anyhow::anyhow!("Redis does not answer PING: {}", hide(&err)))?;
        drop(probe);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|err| anyhow::anyhow!("cannot connect to Redis: {}", hide(&err)))?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            scripts: Scripts::new(),
        })
    }

    /// An invocation of `script` with the prefix as its first argument.
    fn call<'a>(&'a self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.prefix);
        invocation
    }

    pub(super) async fn enqueue(
        &self,
        job: &NewJob,
        run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<EnqueueOutcome> {
        let id = JobId::new();
        let mut invocation = self.call(&self.scripts.enqueue);
        invocation
            .arg(id.to_string())
            .arg(&job.kind)
            .arg(serde_json::to_string(&job.payload)?)
            .arg(job.max_attempts)
            .arg(due_millis(run_at, now))
            .arg(now.timestamp_millis())
            .arg(job.unique_key.as_deref().unwrap_or(""));
        let (added, holder): (u8, String) = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .context("cannot enqueue the job in Redis")?;
        let holder: JobId = holder.parse()?;
        Ok(if added == 1 {
            EnqueueOutcome::Enqueued(holder)
        } else {
            EnqueueOutcome::Deduplicated(holder)
        })
    }

    pub(super) async fn claim(
        &self,
        worker: &str,
        limit: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Claimed> {
        let locked_until = now + TimeDelta::from_std(lease)?;
        let mut invocation = self.call(&self.scripts.claim);
        invocation
            .arg(now.timestamp_millis())
            .arg(locked_until.timestamp_millis())
            .arg(limit)
            .arg(worker)
            .arg(EXPIRED_PER_CLAIM)
            .arg(super::LOST_ON_LAST_ATTEMPT);
        let (rows, dead_kinds): (Vec<ClaimRow>, Vec<String>) = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .context("cannot claim jobs in Redis")?;
        let jobs = rows
            .into_iter()
            .map(|(id, kind, payload, attempt, max_attempts)| {
                Ok(ClaimedJob {
                    lease: Lease {
                        id: id.parse()?,
                        worker: worker.to_owned(),
                        attempt,
                    },
                    kind,
                    payload: serde_json::from_str(&payload)?,
                    max_attempts,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Claimed { jobs, dead_kinds })
    }

    /// An invocation naming the job and the lease it is held under.
    fn call_held<'a>(&'a self, script: &'a Script, held: &Lease) -> ScriptInvocation<'a> {
        let mut invocation = self.call(script);
        invocation
            .arg(held.id.to_string())
            .arg(&held.worker)
            .arg(held.attempt);
        invocation
    }

    pub(super) async fn heartbeat(
        &self,
        held: &Lease,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let locked_until = now + TimeDelta::from_std(lease)?;
        let mut invocation = self.call_held(&self.scripts.heartbeat, held);
        invocation
            .arg(locked_until.timestamp_millis())
            .arg(now.timestamp_millis());
        let extended: u8 = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .context("cannot extend a job lease in Redis")?;
        Ok(extended == 1)
    }

    pub(super) async fn complete(&self, held: &Lease) -> anyhow::Result<bool> {
        let completed: u8 = self
            .call_held(&self.scripts.complete, held)
            .invoke_async(&mut self.conn.clone())
            .await
            .context("cannot complete a job in Redis")?;
        Ok(completed == 1)
    }

    pub(super) async fn fail(
        &self,
        held: &Lease,
        error: &str,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<FailOutcome> {
        let retry_at = due_millis(retry_at, now);
        let mut invocation = self.call_held(&self.scripts.fail, held);
        invocation
            .arg(error)
            .arg(retry_at)
            .arg(now.timestamp_millis());
        let outcome: String = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .context("cannot record a job failure in Redis")?;
        match outcome.as_str() {
            "retry" => Ok(FailOutcome::Retrying {
                run_at: from_millis(retry_at)?,
            }),
            "dead" => Ok(FailOutcome::Dead),
            "lost" => Ok(FailOutcome::LeaseLost),
            other => anyhow::bail!("unexpected answer {other:?} from the fail script"),
        }
    }

    pub(super) async fn release(&self, held: &Lease, now: DateTime<Utc>) -> anyhow::Result<bool> {
        let mut invocation = self.call_held(&self.scripts.release, held);
        invocation.arg(now.timestamp_millis());
        let released: u8 = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .context("cannot release a job in Redis")?;
        Ok(released == 1)
    }

    pub(super) async fn job(&self, id: JobId) -> anyhow::Result<Option<JobRecord>> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.job_key(id))
            .query_async(&mut self.conn.clone())
            .await
            .context("cannot read a job from Redis")?;
        record(id, &fields)
    }

    fn job_key(&self, id: JobId) -> String {
        format!("{}job:{id}", self.prefix)
    }

    /// Reads the ids of the sets the filter can match, newest first, then
    /// the jobs themselves in batches until the page is full. Ids are UUID
    /// v7 strings, so their order is their creation order.
    pub(super) async fn list(
        &self,
        filter: &JobFilter,
        page: PageRequest,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Page<JobRecord>> {
        let sets: &[&str] = match filter.state {
            None => &["ready", "running", "dead"],
            Some(JobState::Queued | JobState::Scheduled | JobState::Failed) => &["ready"],
            Some(JobState::Running) => &["running"],
            Some(JobState::Dead) => &["dead"],
        };
        let mut pipe = redis::pipe();
        for set in sets {
            pipe.cmd("ZRANGE")
                .arg(format!("{}{set}", self.prefix))
                .arg(0)
                .arg(-1);
        }
        let found: Vec<Vec<String>> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .context("cannot list jobs in Redis")?;
        let after = page.after.map(|id| id.to_string());
        let mut ids: Vec<String> = found
            .into_iter()
            .flatten()
            .filter(|id| after.as_ref().is_none_or(|after| id < after))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        let wanted = usize::try_from(page.limit)?.saturating_add(1);
        let mut items = Vec::new();
        for batch in ids.chunks(LIST_BATCH) {
            let batch: Vec<JobId> = batch
                .iter()
                .map(|id| id.parse())
                .collect::<Result<_, _>>()?;
            let mut pipe = redis::pipe();
            for id in &batch {
                pipe.cmd("HGETALL").arg(self.job_key(*id));
            }
            let rows: Vec<HashMap<String, String>> = pipe
                .query_async(&mut self.conn.clone())
                .await
                .context("cannot read jobs from Redis")?;
            for (id, fields) in batch.into_iter().zip(rows) {
                // Gone since the ids were read (completed or discarded).
                if let Some(job) = record(id, &fields)?
                    && filter.matches(&job, now)
                {
                    items.push(job);
                }
            }
            if items.len() >= wanted {
                break;
            }
        }
        let next_cursor = if items.len() >= wanted {
            items.truncate(wanted - 1);
            items.last().map(|job| encode_cursor(job.id.into()))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    pub(super) async fn retry(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Intervention> {
        let mut invocation = self.call(&self.scripts.retry);
        invocation.arg(id.to_string()).arg(now.timestamp_millis());
        let outcome: String = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .context("cannot queue a job again in Redis")?;
        Ok(match outcome.as_str() {
            "ok" => Intervention::Done,
            "missing" => Intervention::Missing,
            "taken" => Intervention::KeyTaken,
            _ => Intervention::Refused(
                self.job(id)
                    .await?
                    .map_or(JobState::Queued, |job| job.state(now)),
            ),
        })
    }

    pub(super) async fn discard(&self, id: JobId) -> anyhow::Result<Intervention> {
        let mut invocation = self.call(&self.scripts.discard);
        invocation.arg(id.to_string());
        let outcome: String = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .context("cannot discard a job in Redis")?;
        match outcome.as_str() {
            "ok" => Ok(Intervention::Done),
            "missing" => Ok(Intervention::Missing),
            "running" => Ok(Intervention::Refused(JobState::Running)),
            other => anyhow::bail!("unexpected answer {other:?} from the discard script"),
        }
    }

    pub(super) async fn stats(&self, now: DateTime<Utc>) -> anyhow::Result<QueueStats> {
        let mut invocation = self.call(&self.scripts.stats);
        invocation.arg(now.timestamp_millis());
        let (queued, scheduled, running, dead): (u64, u64, u64, u64) = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .context("cannot count jobs in Redis")?;
        Ok(QueueStats {
            queued,
            scheduled,
            running,
            dead,
        })
    }
}

/// A job from its hash; `None` when the hash is gone.
fn record(id: JobId, fields: &HashMap<String, String>) -> anyhow::Result<Option<JobRecord>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let text = |name: &str| -> anyhow::Result<&str> {
        fields
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("job {id} has no {name} field"))
    };
    let optional = |name: &str| -> anyhow::Result<Option<&str>> {
        text(name).map(|value| Some(value).filter(|v| !v.is_empty()))
    };
    let time = |name: &str| -> anyhow::Result<DateTime<Utc>> { from_millis(text(name)?.parse()?) };
    Ok(Some(JobRecord {
        id,
        kind: text("kind")?.to_owned(),
        payload: serde_json::from_str(text("payload")?)?,
        status: JobStatus::parse(text("status")?)?,
        unique_key: optional("unique_key")?.map(str::to_owned),
        attempts: text("attempts")?.parse()?,
        max_attempts: text("max_attempts")?.parse()?,
        run_at: time("run_at")?,
        locked_until: optional("locked_until")?
            .map(|ms| from_millis(ms.parse()?))
            .transpose()?,
        locked_by: optional("locked_by")?.map(str::to_owned),
        last_error: optional("last_error")?.map(str::to_owned),
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
    }))
}

/// When a job is due, in milliseconds since the epoch. A future time is
/// rounded up, so the job never starts before it; a time already past is
/// rounded down, so the job is due at once (claims compare with the current
/// millisecond, rounded down).
fn due_millis(at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let ms = at.timestamp_millis();
    if at <= now || at.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        ms
    } else {
        ms + 1
    }
}

fn from_millis(ms: i64) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).context("job time out of range")
}

/// `text` with the URL, its password as written and its password decoded all
/// masked: driver errors must never carry credentials into logs.
fn redact(text: &str, url: &str, password: Option<&str>) -> String {
    let written = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password);
    let mut out = text.to_owned();
    for secret in [Some(url), written, password].into_iter().flatten() {
        if !secret.is_empty() {
            out = out.replace(secret, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_masks_the_url_and_both_spellings_of_the_password() {
        let url = "redis://user:p%40ss@host:6379/0";
        let text = format!("failed for {url}: user p%40ss, p@ss, host");
        let clean = redact(&text, url, Some("p@ss"));
        assert!(!clean.contains("p%40ss"), "{clean}");
        assert!(!clean.contains("p@ss"), "{clean}");
        assert!(clean.contains("host"), "{clean}");
        assert_eq!(redact("no secrets", "redis://host", None), "no secrets");
    }

    #[test]
    fn future_times_round_up_and_past_times_down() {
        let now = DateTime::from_timestamp_millis(1_700_000_000_000).expect("valid")
            + TimeDelta::microseconds(500);
        assert_eq!(due_millis(now, now), 1_700_000_000_000);
        let exact = DateTime::from_timestamp_millis(1_700_000_000_123).expect("valid");
        assert_eq!(due_millis(exact, now), 1_700_000_000_123);
        let later = exact + TimeDelta::microseconds(1);
        assert_eq!(due_millis(later, now), 1_700_000_000_124);
    }
}
