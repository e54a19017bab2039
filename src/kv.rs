//! Helpers for the read models kept in Redis (the mission queue, the agent view): listing the
//! keys under a prefix, snapshotting them for comparing a rebuild with the live model, and
//! deleting them in bounded chunks.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

/// Keys one `SCAN` step asks for, and keys one `UNLINK` takes: bounds on a single command's
/// work, so a large model never blocks Redis for long.
const SCAN_COUNT: usize = 1_000;
const UNLINK_CHUNK: usize = 500;

/// Every key matching `pattern`, by incremental `SCAN`.
pub async fn scan(
    connection: &mut ConnectionManager,
    pattern: &str,
) -> Result<Vec<String>, redis::RedisError> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(connection)
            .await?;
        keys.extend(page);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// Deletes every key under `prefix`.
pub async fn drop_prefix(
    connection: &mut ConnectionManager,
    prefix: &str,
) -> Result<(), redis::RedisError> {
    let keys = scan(connection, &format!("{prefix}*")).await?;
    for chunk in keys.chunks(UNLINK_CHUNK) {
        let _: u64 = connection.unlink(chunk).await?;
    }
    Ok(())
}

/// Every key under `prefix` (named without it) with its contents in a comparable text form,
/// `skip` left out: what a rebuilt model is compared on.
pub async fn snapshot(
    connection: &mut ConnectionManager,
    prefix: &str,
    skip: &[&str],
) -> Result<BTreeMap<String, String>, redis::RedisError> {
    let keys = scan(connection, &format!("{prefix}*")).await?;
    let mut snapshot = BTreeMap::new();
    for key in keys {
        let name = key[prefix.len()..].to_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(connection).await?;
        let value = match kind.as_str() {
            "string" => connection.get::<_, String>(&key).await?,
            "zset" => {
                let members: Vec<(String, f64)> = connection.zrange_withscores(&key, 0, -1).await?;
                format!("{members:?}")
            }
            "hash" => {
                let fields: BTreeMap<String, String> = connection.hgetall(&key).await?;
                format!("{fields:?}")
            }
            "set" => {
                let mut members: Vec<String> = connection.smembers(&key).await?;
                members.sort();
                format!("{members:?}")
            }
            other => format!("<{other}>"),
        };
        snapshot.insert(name, value);
    }
    Ok(snapshot)
}
