//! The Redis broker, with receipts: a list of waiting ids plus a sorted set of
//! deliveries in flight, moved by Lua scripts so each step is atomic.
//!
//! Why not streams with a consumer group: a stream's pending entries are
//! claimed back by idle time, one threshold per claim call, while a q8s
//! receipt has a deadline of its own, `max(retry, task timeout + margin)`,
//! that the cluster extends while the task runs. A sorted set scored by
//! deadline says exactly that, and the same scripts serve every consumer.
//!
//! Keys, for queue `q` (the cluster name), share the hash tag `{q}`, so a
//! Redis Cluster keeps them on one node:
//!
//! ```text
//! q8s:{q}:seq         counter for package ids
//! q8s:{q}:waiting     list of ids waiting (pushed left, popped right)
//! q8s:{q}:packages    hash id -> package bytes
//! q8s:{q}:timeouts    hash id -> the task's timeout in seconds, if it has one
//! q8s:{q}:deliveries  hash id -> deliveries so far
//! q8s:{q}:inflight    sorted set id -> receipt deadline (ms since the epoch)
//! q8s:{q}:wake        a token list an idle cluster blocks on
//! q8s:{q}:stat:HOST/PID  each cluster's Stat, expiring
//! q8s:{q}:stats       set of the Stat keys of the queue's clusters (an index, so a
//!                     reader never scans the keyspace)
//! q8s:result:ID       a cached result (`cached`), expiring as asked
//! q8s:group:GROUP     ids of a group's cached results
//! ```

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::sync::{Mutex, OnceCell};

use super::{Broker, BrokerError, BrokerInfo, Delivery, Leases, Oldest, Receipt, ResultCache};
use crate::clock::Clock;
use crate::package::Package;
use crate::stat::{StatBoard, StatError};

/// Moves expired deliveries back to the waiting list, then takes up to ARGV[4]
/// ids: counts the delivery and sets its deadline. Ids whose package is gone
/// (acknowledged while they waited again) are dropped. Every step moves an id
/// between the waiting list and the in-flight set in one script, so an id is
/// never in both, and a popped id needs no in-flight check.
const DEQUEUE: &str = r"
local waiting, packages, timeouts, deliveries, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, retry, margin, bulk = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', inflight, id)
  redis.call('RPUSH', waiting, id)
end
local out = {}
local any_timeouts = redis.call('EXISTS', timeouts) == 1
while #out < bulk * 3 do
  local id = redis.call('RPOP', waiting)
  if not id then break end
  local package = redis.call('HGET', packages, id)
  if package then
    local count = redis.call('HINCRBY', deliveries, id, 1)
    local lease = retry
    local timeout = any_timeouts and redis.call('HGET', timeouts, id)
    if timeout then lease = math.max(retry, tonumber(timeout) * 1000 + margin) end
    redis.call('ZADD', inflight, now + lease, id)
    table.insert(out, id)
    table.insert(out, count)
    table.insert(out, package)
  end
end
return out
";

/// Stores packages and queues their ids in one step; ARGV holds (package, timeout or "") pairs.
/// Returns the first id; the others follow it.
/// Puts a Stat (KEYS[1], ARGV[1]) with its expiry in ms (ARGV[2]) and indexes
/// it in the queue's set (KEYS[2]), which lives as long as its longest-lived Stat.
const PUT_STAT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 0
";

const ENQUEUE: &str = r"
local seq, packages, timeouts, waiting, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local count = #ARGV / 2
local last = redis.call('INCRBY', seq, count)
local first = last - count + 1
for i = 0, count - 1 do
  local id = tostring(first + i)
  redis.call('HSET', packages, id, ARGV[2 * i + 1])
  local timeout = ARGV[2 * i + 2]
  if timeout ~= '' then redis.call('HSET', timeouts, id, timeout) end
  redis.call('LPUSH', waiting, id)
end
redis.call('LPUSH', wake, 1)
redis.call('LTRIM', wake, 0, 0)
return first
";

/// ENQUEUE for one package, unless its marker key (KEYS[6]) is set: the
/// marker and the package go in together, or neither. Returns the package's
/// id, or 0 when refused.
const ENQUEUE_ONCE: &str = r"
local seq, packages, timeouts, waiting, wake, marker = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if not redis.call('SET', marker, '1', 'NX', 'PX', ARGV[3]) then return 0 end
local id = redis.call('INCR', seq)
redis.call('HSET', packages, id, ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', timeouts, id, ARGV[2]) end
redis.call('LPUSH', waiting, id)
redis.call('LPUSH', wake, 1)
redis.call('LTRIM', wake, 0, 0)
return id
";

/// Removes a package everywhere but the waiting list (a stale id there is dropped when popped).
const REMOVE: &str = r"
local any_timeouts = redis.call('EXISTS', KEYS[3]) == 1
for i = 1, #ARGV do
  local id = ARGV[i]
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  if any_timeouts then redis.call('HDEL', KEYS[3], id) end
  redis.call('HDEL', KEYS[4], id)
end
return #ARGV
";

/// Hands a delivery back at once if it still holds the package; uncounted when ARGV[3] is 1.
const RELEASE: &str = r"
local inflight, deliveries, waiting = KEYS[1], KEYS[2], KEYS[3]
local id, delivery, uncount = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', deliveries, id) == delivery and redis.call('ZSCORE', inflight, id) then
  redis.call('ZREM', inflight, id)
  if uncount == '1' then redis.call('HINCRBY', deliveries, id, -1) end
  redis.call('RPUSH', waiting, id)
  return 1
end
return 0
";

/// Pushes deadlines of deliveries that still hold their packages to ARGV[1] (pairs of id, delivery follow).
const EXTEND: &str = r"
local inflight, deliveries = KEYS[1], KEYS[2]
local deadline = ARGV[1]
local extended = 0
for i = 2, #ARGV, 2 do
  local id, delivery = ARGV[i], ARGV[i + 1]
  local current = redis.call('ZSCORE', inflight, id)
  if current and redis.call('HGET', deliveries, id) == delivery and tonumber(current) < tonumber(deadline) then
    redis.call('ZADD', inflight, deadline, id)
    extended = extended + 1
  end
end
return extended
";

/// The oldest waiting package: the first id from the right (popping) end of
/// the waiting list whose package is still there, looking at up to 100 ids.
/// Returns the package, 0 when nothing waits (every id seen was stale, and
/// none is beyond them), or 1 when 100 stale ids hid the rest.
const OLDEST: &str = r"
local ids = redis.call('LRANGE', KEYS[1], -100, -1)
for i = #ids, 1, -1 do
  local package = redis.call('HGET', KEYS[2], ids[i])
  if package then return package end
end
if #ids < 100 then return 0 end
return 1
";

/// Prefix of cached results, by task id.
const RESULT_PREFIX: &str = "q8s:result:";
/// Prefix of the lists of cached task ids, by group.
const GROUP_PREFIX: &str = "q8s:group:";

/// Prefix of the keys clusters publish their Stat under (every cluster name).
/// Packages enqueued or acknowledged per script call.
const ACK_CHUNK: usize = 500;

/// The Redis broker for one queue.
pub struct RedisBroker {
    connection: ConnectionManager,
    /// A second connection for blocking waits, which would hold up the first;
    /// opened by the first wait, so a producer or an observer holds one.
    waiter: OnceCell<Mutex<ConnectionManager>>,
    client: redis::Client,
    keys: Keys,
    leases: Leases,
    clock: Clock,
    location: String,
    enqueue: Script,
    enqueue_once: Script,
    put_stat: Script,
    dequeue: Script,
    remove: Script,
    release: Script,
    extend: Script,
    oldest: Script,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("location", &self.location)
            .finish()
    }
}

struct Keys {
    seq: String,
    waiting: String,
    packages: String,
    timeouts: String,
    deliveries: String,
    inflight: String,
    wake: String,
    stat_prefix: String,
    stats: String,
    once_prefix: String,
}

impl Keys {
    fn new(queue: &str) -> Keys {
        let key = |name: &str| format!("q8s:{{{queue}}}:{name}");
        Keys {
            seq: key("seq"),
            waiting: key("waiting"),
            packages: key("packages"),
            timeouts: key("timeouts"),
            deliveries: key("deliveries"),
            inflight: key("inflight"),
            wake: key("wake"),
            stat_prefix: key("stat:"),
            stats: key("stats"),
            once_prefix: key("once:"),
        }
    }

    fn all(&self) -> [&str; 7] {
        [
            &self.seq,
            &self.waiting,
            &self.packages,
            &self.timeouts,
            &self.deliveries,
            &self.inflight,
            &self.wake,
        ]
    }
}

fn redis_error(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Redis(error.to_string())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl RedisBroker {
    /// Connects to `url` (`redis://`, `rediss://`, `redis+unix://`) for queue `queue`.
    pub async fn connect(
        url: &str,
        queue: &str,
        leases: Leases,
        clock: Clock,
    ) -> Result<RedisBroker, BrokerError> {
        let shown = crate::config::redact(url);
        let client = redis::Client::open(url).map_err(|e| {
            BrokerError::Unsupported(format!(
                "{shown} is not a Redis URL ({e}); use redis://[:PASSWORD@]HOST:PORT/DB or redis+unix:///path/to.sock"
            ))
        })?;
        let unreachable = |e: redis::RedisError| {
            BrokerError::Redis(format!(
                "cannot connect to {shown}: {e}; check that redis-server runs and the URL is right"
            ))
        };
        let connection = ConnectionManager::new(client.clone())
            .await
            .map_err(unreachable)?;
        Ok(RedisBroker {
            connection,
            waiter: OnceCell::new(),
            client,
            keys: Keys::new(queue),
            leases,
            clock,
            location: crate::config::redact(url),
            enqueue: Script::new(ENQUEUE),
            enqueue_once: Script::new(ENQUEUE_ONCE),
            put_stat: Script::new(PUT_STAT),
            dequeue: Script::new(DEQUEUE),
            remove: Script::new(REMOVE),
            release: Script::new(RELEASE),
            extend: Script::new(EXTEND),
            oldest: Script::new(OLDEST),
        })
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_micros() / 1000
    }

    async fn remove_ids(&self, ids: &[i64]) -> Result<(), BrokerError> {
        let mut connection = self.connection.clone();
        for chunk in ids.chunks(ACK_CHUNK) {
            let mut invocation = self.remove.prepare_invoke();
            invocation
                .key(&self.keys.inflight)
                .key(&self.keys.packages)
                .key(&self.keys.timeouts)
                .key(&self.keys.deliveries);
            for id in chunk {
                invocation.arg(id);
            }
            let _: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(redis_error)?;
        }
        Ok(())
    }

    /// Puts a delivery's package back on the waiting list; `uncount` takes the delivery back too.
    async fn hand_back(&self, receipt: &Receipt, uncount: bool) -> Result<(), BrokerError> {
        let (id, delivery) = receipt.parts()?;
        let mut connection = self.connection.clone();
        let _: i64 = self
            .release
            .key(&self.keys.inflight)
            .key(&self.keys.deliveries)
            .key(&self.keys.waiting)
            .arg(id)
            .arg(delivery)
            .arg(if uncount { "1" } else { "0" })
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn push(&self, packages: &[(Package, Option<u64>)]) -> Result<Vec<String>, BrokerError> {
        let mut connection = self.connection.clone();
        let mut ids = Vec::with_capacity(packages.len());
        for chunk in packages.chunks(ACK_CHUNK) {
            let mut invocation = self.enqueue.prepare_invoke();
            invocation
                .key(&self.keys.seq)
                .key(&self.keys.packages)
                .key(&self.keys.timeouts)
                .key(&self.keys.waiting)
                .key(&self.keys.wake);
            for (package, timeout) in chunk {
                invocation
                    .arg(package.as_bytes())
                    .arg(timeout.map_or(String::new(), |t| t.to_string()));
            }
            let first: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(redis_error)?;
            ids.extend((0..chunk.len() as i64).map(|offset| (first + offset).to_string()));
        }
        Ok(ids)
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(
        &self,
        package: &Package,
        timeout: Option<u64>,
    ) -> Result<String, BrokerError> {
        let ids = self.push(&[(package.clone(), timeout)]).await?;
        Ok(ids.into_iter().next().unwrap_or_default())
    }

    async fn enqueue_all(&self, packages: &[(Package, Option<u64>)]) -> Result<(), BrokerError> {
        self.push(packages).await.map(|_| ())
    }

    async fn enqueue_once(
        &self,
        package: &Package,
        timeout: Option<u64>,
        key: &str,
        window: Duration,
    ) -> Result<bool, BrokerError> {
        let mut connection = self.connection.clone();
        let id: i64 = self
            .enqueue_once
            .key(&self.keys.seq)
            .key(&self.keys.packages)
            .key(&self.keys.timeouts)
            .key(&self.keys.waiting)
            .key(&self.keys.wake)
            .key(format!("{}{key}", self.keys.once_prefix))
            .arg(package.as_bytes())
            .arg(timeout.map_or(String::new(), |t| t.to_string()))
            .arg(millis(window).max(1))
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(id != 0)
    }

    async fn dequeue(&self, bulk: usize) -> Result<Vec<Delivery>, BrokerError> {
        let mut connection = self.connection.clone();
        let flat: Vec<redis::Value> = self
            .dequeue
            .key(&self.keys.waiting)
            .key(&self.keys.packages)
            .key(&self.keys.timeouts)
            .key(&self.keys.deliveries)
            .key(&self.keys.inflight)
            .arg(self.now_ms())
            .arg(millis(self.leases.retry))
            .arg(millis(self.leases.margin))
            .arg(bulk.max(1))
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)?;
        let mut deliveries = Vec::with_capacity(flat.len() / 3);
        let mut values = flat.into_iter();
        while let (Some(id), Some(count), Some(bytes)) =
            (values.next(), values.next(), values.next())
        {
            let id: i64 = redis::from_redis_value(id).map_err(redis_error)?;
            let count: i64 = redis::from_redis_value(count).map_err(redis_error)?;
            let bytes: Vec<u8> = redis::from_redis_value(bytes).map_err(redis_error)?;
            deliveries.push(Delivery {
                receipt: Receipt::new(id, count),
                package: Package::from_bytes(bytes),
                attempt: u32::try_from(count).unwrap_or(u32::MAX),
            });
        }
        Ok(deliveries)
    }

    async fn acknowledge(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        self.acknowledge_all(std::slice::from_ref(receipt)).await
    }

    async fn acknowledge_all(&self, receipts: &[Receipt]) -> Result<(), BrokerError> {
        let ids = receipts
            .iter()
            .map(|receipt| receipt.parts().map(|(id, _)| id))
            .collect::<Result<Vec<i64>, BrokerError>>()?;
        self.remove_ids(&ids).await
    }

    async fn wait_for_work(&self, poll: Duration) {
        let opened = self
            .waiter
            .get_or_try_init(|| async {
                ConnectionManager::new(self.client.clone())
                    .await
                    .map(Mutex::new)
            })
            .await;
        let woken: redis::RedisResult<Option<(String, i64)>> = match opened {
            Ok(waiter) => {
                let seconds = poll.as_secs_f64().max(0.01);
                waiter.lock().await.blpop(&self.keys.wake, seconds).await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = woken {
            tracing::warn!("redis: waiting for new tasks failed: {error}");
            tokio::time::sleep(poll).await;
        }
    }

    async fn fail(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        self.acknowledge(receipt).await
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        self.acknowledge(receipt).await
    }

    async fn release(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        self.hand_back(receipt, true).await
    }

    async fn requeue(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        self.hand_back(receipt, false).await
    }

    async fn extend(&self, receipts: &[Receipt], lease: Duration) -> Result<(), BrokerError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        let mut invocation = self.extend.prepare_invoke();
        invocation
            .key(&self.keys.inflight)
            .key(&self.keys.deliveries)
            .arg(self.now_ms().saturating_add(millis(lease)));
        for receipt in receipts {
            let (id, delivery) = receipt.parts()?;
            invocation.arg(id).arg(delivery);
        }
        let _: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn purge_queue(&self) -> Result<u64, BrokerError> {
        let mut connection = self.connection.clone();
        let count: u64 = connection
            .hlen(&self.keys.packages)
            .await
            .map_err(redis_error)?;
        let keys: Vec<&str> = self
            .keys
            .all()
            .into_iter()
            .filter(|key| *key != self.keys.seq)
            .collect();
        let () = connection.del(keys).await.map_err(redis_error)?;
        Ok(count)
    }

    async fn delete_queue(&self) -> Result<(), BrokerError> {
        let mut connection = self.connection.clone();
        let () = connection
            .del(self.keys.all().to_vec())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn queue_size(&self) -> Result<u64, BrokerError> {
        // Packages not in flight: every package, less the live deliveries.
        let mut connection = self.connection.clone();
        let (total, in_flight): (u64, u64) = redis::pipe()
            .hlen(&self.keys.packages)
            .zcount(&self.keys.inflight, self.now_ms() + 1, "+inf")
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(total.saturating_sub(in_flight))
    }

    async fn oldest_waiting(&self) -> Result<Oldest, BrokerError> {
        let mut connection = self.connection.clone();
        let oldest: redis::Value = self
            .oldest
            .key(&self.keys.waiting)
            .key(&self.keys.packages)
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(match oldest {
            redis::Value::BulkString(bytes) => Oldest::Package(Package::from_bytes(bytes)),
            redis::Value::Int(0) => Oldest::Age(Duration::ZERO),
            _ => Oldest::Unknown,
        })
    }

    async fn lock_size(&self) -> Result<u64, BrokerError> {
        let mut connection = self.connection.clone();
        connection
            .zcount(&self.keys.inflight, self.now_ms() + 1, "+inf")
            .await
            .map_err(redis_error)
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    fn info(&self) -> BrokerInfo {
        BrokerInfo {
            name: "redis".into(),
            location: self.location.clone(),
        }
    }
}

/// Stats live in Redis under their key with an expiry, as the seed's Redis broker kept them.
#[async_trait]
impl StatBoard for RedisBroker {
    async fn put(&self, key: &str, stat: &str, ttl: Duration) -> Result<(), StatError> {
        let mut connection = self.connection.clone();
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1000);
        let stat_key = format!("{}{key}", self.keys.stat_prefix);
        let _: i64 = self
            .put_stat
            .key(&stat_key)
            .key(&self.keys.stats)
            .arg(stat)
            .arg(millis)
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn live(&self) -> Result<Vec<String>, StatError> {
        let mut connection = self.connection.clone();
        let mut keys: Vec<String> = connection
            .smembers(&self.keys.stats)
            .await
            .map_err(redis_error)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        keys.sort();
        let values: Vec<Option<String>> = connection.mget(&keys).await.map_err(redis_error)?;
        let expired: Vec<&String> = keys
            .iter()
            .zip(&values)
            .filter_map(|(key, value)| value.is_none().then_some(key))
            .collect();
        if !expired.is_empty() {
            let () = connection
                .srem(&self.keys.stats, expired)
                .await
                .map_err(redis_error)?;
        }
        Ok(values.into_iter().flatten().collect())
    }
}

/// Cached results live in Redis with their expiry; a group is a list of ids.
#[async_trait]
impl ResultCache for RedisBroker {
    async fn cache_results(
        &self,
        records: &[(String, Option<String>, String)],
        ttl: Option<Duration>,
    ) -> Result<(), BrokerError> {
        let mut connection = self.connection.clone();
        let mut pipe = redis::pipe();
        for (id, group, record) in records {
            let key = format!("{RESULT_PREFIX}{id}");
            match ttl {
                Some(ttl) => pipe.set_ex(&key, record, ttl.as_secs().max(1)).ignore(),
                None => pipe.set(&key, record).ignore(),
            };
            if let Some(group) = group {
                let group_key = format!("{GROUP_PREFIX}{group}");
                pipe.rpush(&group_key, id).ignore();
                if let Some(ttl) = ttl {
                    pipe.expire(
                        &group_key,
                        i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX),
                    )
                    .ignore();
                }
            }
        }
        let () = pipe
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn cached_result(&self, id: &str) -> Result<Option<String>, BrokerError> {
        let mut connection = self.connection.clone();
        connection
            .get(format!("{RESULT_PREFIX}{id}"))
            .await
            .map_err(redis_error)
    }

    async fn cached_group(&self, group: &str) -> Result<Vec<String>, BrokerError> {
        let mut connection = self.connection.clone();
        let ids: Vec<String> = connection
            .lrange(format!("{GROUP_PREFIX}{group}"), 0, -1)
            .await
            .map_err(redis_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("{RESULT_PREFIX}{id}"))
            .collect();
        let records: Vec<Option<String>> = connection.mget(keys).await.map_err(redis_error)?;
        // Results that expired before their group are gone.
        Ok(records.into_iter().flatten().collect())
    }
}
