//! The embedded index: Qdrant's engine in this process (`qdrant-edge`), in a directory of its
//! own per namespace. Vectors of one size share a shard (`d<size>/`), created when the first
//! memory of that size arrives: a change of embedding model to one of another size needs no
//! migration, and searches only ever compare vectors of the model they were made with.
//!
//! The engine keeps a write-ahead log of its own (it cannot be switched off in this version),
//! kept small ([`WAL_SEGMENT_BYTES`]): the event log is what the index is rebuilt from, and the
//! follower flushes the shards before it records how far it has read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use qdrant_edge::{
    Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder, Filter, NamedQuery, PointId,
    PointOperations, PointStruct, QueryEnum, QueryRequest, ScoringQuery, ScrollRequest,
    UpdateOperation, VectorInternal, WalOptions, WithPayloadInterface, WithVector,
};
use serde_json::Value;
use uuid::Uuid;

use super::index::{
    Hit, IndexError, MemoryIndex, Payload, Point, Query, expired_json, filter_json,
};

/// Bytes of one segment of a shard's own write-ahead log (the engine's default is 32 MiB,
/// made ahead of time): the event log stands behind the index, so a small one does.
pub const WAL_SEGMENT_BYTES: usize = 1024 * 1024;
/// Points read per page when listing ids.
const SCROLL_PAGE: usize = 1_000;

fn engine(error: impl std::fmt::Display) -> IndexError {
    IndexError::Engine(error.to_string())
}

/// The index of one namespace, in `dir`.
pub struct EdgeIndex {
    dir: PathBuf,
    shards: Mutex<HashMap<usize, Arc<EdgeShard>>>,
}

fn shard_dims(path: &Path) -> Option<usize> {
    path.file_name()?.to_str()?.strip_prefix('d')?.parse().ok()
}

impl EdgeIndex {
    /// Opens the shards `dir` holds (creating `dir` if it is missing).
    pub fn open(dir: &Path) -> Result<EdgeIndex, IndexError> {
        std::fs::create_dir_all(dir)?;
        let mut shards = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if let Some(dims) = shard_dims(&path).filter(|_| path.is_dir()) {
                let shard = EdgeShard::load(&path, None).map_err(engine)?;
                shards.insert(dims, Arc::new(shard));
            }
        }
        Ok(EdgeIndex { dir: dir.to_owned(), shards: Mutex::new(shards) })
    }

    fn existing(&self, dims: usize) -> Option<Arc<EdgeShard>> {
        self.shards.lock().unwrap_or_else(|e| e.into_inner()).get(&dims).cloned()
    }

    fn all(&self) -> Vec<Arc<EdgeShard>> {
        self.shards.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    fn shard(&self, dims: usize) -> Result<Arc<EdgeShard>, IndexError> {
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shard) = shards.get(&dims) {
            return Ok(shard.clone());
        }
        let config = EdgeConfigBuilder::new()
            .vector("", EdgeVectorParamsBuilder::new(dims, Distance::Cosine).build())
            .wal_options(WalOptions {
                segment_capacity: WAL_SEGMENT_BYTES,
                segment_queue_len: 0,
                ..WalOptions::default()
            })
            .build();
        // The engine makes its own folders in the shard's, not the shard's itself.
        let path = self.dir.join(format!("d{dims}"));
        std::fs::create_dir_all(&path)?;
        let shard = Arc::new(EdgeShard::new(&path, config).map_err(engine)?);
        shards.insert(dims, shard.clone());
        Ok(shard)
    }
}

fn point_id(id: Uuid) -> PointId {
    PointId::Uuid(id)
}

fn filter(json: Value) -> Result<Filter, IndexError> {
    serde_json::from_value(json).map_err(engine)
}

fn uuid_of(id: &PointId) -> Option<Uuid> {
    match id {
        PointId::Uuid(id) => Some(*id),
        PointId::NumId(_) => None,
    }
}

impl MemoryIndex for EdgeIndex {
    fn upsert(&self, points: Vec<Point>) -> Result<(), IndexError> {
        let mut by_dims: HashMap<usize, Vec<PointStruct>> = HashMap::new();
        for point in points {
            let payload = serde_json::to_value(&point.payload).map_err(engine)?;
            let dims = point.vector.len();
            by_dims.entry(dims).or_default().push(PointStruct::new(
                point_id(point.id),
                point.vector,
                payload,
            ));
        }
        for (dims, points) in by_dims {
            let points = points.into_iter().map(Into::into).collect();
            let operation = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                qdrant_edge::PointInsertOperations::PointsList(points),
            ));
            self.shard(dims)?.update(operation).map_err(engine)?;
        }
        Ok(())
    }

    fn delete(&self, ids: &[Uuid]) -> Result<(), IndexError> {
        let ids: Vec<PointId> = ids.iter().copied().map(point_id).collect();
        for shard in self.all() {
            let operation =
                UpdateOperation::PointOperation(PointOperations::DeletePoints { ids: ids.clone() });
            shard.update(operation).map_err(engine)?;
        }
        Ok(())
    }

    fn sweep_expired(&self, now_ms: i64) -> Result<(), IndexError> {
        for shard in self.all() {
            let operation = UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(
                filter(expired_json(now_ms))?,
            ));
            shard.update(operation).map_err(engine)?;
        }
        Ok(())
    }

    fn search(&self, query: &Query) -> Result<Vec<Hit>, IndexError> {
        let Some(shard) = self.existing(query.vector.len()) else { return Ok(vec![]) };
        let request = QueryRequest {
            prefetches: vec![],
            query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                query: VectorInternal::Dense(query.vector.clone()),
                using: None,
            }))),
            filter: Some(filter(filter_json(query))?),
            score_threshold: None,
            limit: query.k,
            offset: 0,
            params: None,
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(true),
        };
        let found = shard.query(request).map_err(engine)?;
        found
            .into_iter()
            .filter_map(|scored| {
                let id = uuid_of(&scored.id)?;
                let payload = Value::Object(scored.payload?.0.into_iter().collect());
                Some(
                    serde_json::from_value::<Payload>(payload)
                        .map(|payload| Hit { id, score: scored.score, payload })
                        .map_err(engine),
                )
            })
            .collect()
    }

    fn ids(&self) -> Result<Vec<Uuid>, IndexError> {
        let mut ids = Vec::new();
        for shard in self.all() {
            let mut offset = None;
            loop {
                let request = ScrollRequest {
                    offset,
                    limit: Some(SCROLL_PAGE),
                    filter: None,
                    with_payload: Some(WithPayloadInterface::Bool(false)),
                    with_vector: WithVector::Bool(false),
                    order_by: None,
                };
                let (page, next) = shard.scroll(request).map_err(engine)?;
                ids.extend(page.iter().filter_map(|record| uuid_of(&record.id)));
                match next {
                    Some(next) => offset = Some(next),
                    None => break,
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn flush(&self) -> Result<(), IndexError> {
        for shard in self.all() {
            shard.flush();
        }
        Ok(())
    }
}
