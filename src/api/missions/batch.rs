//! `POST /api/missions/enqueue/batch`: many missions in one request and one transaction.
//!
//! Every item is checked first, by the same rules and with the same defaults as a single
//! enqueue (they share [`super::plan_enqueue`] and the aggregate's decision). One refused
//! item refuses the batch: the answer lists a reason for each refused item and nothing is
//! appended. Otherwise all missions' events go into the store as one atomic group
//! ([`crate::eventlog::command::create_all`]), without loading anything: a new mission's stream is
//! expected at version 0.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use domain::EventMetadata;
use domain::mission::{Mission, MissionCommand, MissionStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{EnqueueRequest, PlannedEnqueue, now_ms, plan_enqueue, refusal};
use crate::api::error::{ErrorCode, ItemRefusal, errors, refused};
use crate::api::extract::Metadata;
use crate::api::{ApiError, ApiJson, AppState};
use crate::eventlog::command::{self, Create, Decided};

/// Most missions one batch may carry.
pub const BATCH_MISSIONS_MAX: usize = 1_000;
/// Largest batch request body. The store refuses a group above 16 MiB of event payload, and
/// a body of this size stays near that.
pub const BATCH_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchEnqueueRequest {
    /// 1 to 1,000 missions, each as the body of `POST /api/missions/enqueue`.
    // Kept as JSON until each is read on its own, so a malformed item is named by its index.
    #[schema(value_type = Vec<EnqueueRequest>, min_items = 1, max_items = 1000)]
    pub missions: Vec<serde_json::Value>,
}

/// One mission of a batch's answer, in the order of the request.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueuedMission {
    pub mission_id: String,
    pub status: MissionStatus,
    /// `false` when the item's `idempotency_key` was used before: the mission shown is the
    /// first one, and nothing was appended for it.
    pub created: bool,
    /// Global position of the mission's `MissionEnqueued` event.
    pub position: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchEnqueued {
    pub missions: Vec<EnqueuedMission>,
}

errors! {
    BatchErrors = COMMAND + JSON_BODY + CALLER + [
        InvalidField, BatchRefused, DuplicateIdempotencyKey, BatchTooLarge, MissionContended
    ]
}

/// 201 when at least one mission is new, 200 when every item repeated an idempotency key
/// used before; 422 `batch_refused` listing every refused item, and nothing appended.
#[utoipa::path(post, path = "/api/missions/enqueue/batch", tag = "missions",
    params(Metadata),
    request_body = BatchEnqueueRequest,
    responses(
        (status = 201, description = "Enqueued, all in one transaction", body = BatchEnqueued),
        (status = 200, description = "Every item's `idempotency_key` was used before: the first missions, nothing enqueued", body = BatchEnqueued),
        BatchErrors,
    ))]
pub(super) async fn enqueue_batch(
    State(app): State<AppState>,
    // One request, one correlation id; each mission gets its own command id.
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<BatchEnqueueRequest>,
) -> Result<(StatusCode, ApiJson<BatchEnqueued>), ApiError> {
    let count = request.missions.len();
    if count == 0 || count > BATCH_MISSIONS_MAX {
        let message = format!("must hold 1 to {BATCH_MISSIONS_MAX} missions, got {count}");
        return Err(refused(ErrorCode::InvalidField, Some("missions"), message));
    }
    let mut batch = Batch::new(metadata, count);
    for (index, item) in request.missions.into_iter().enumerate() {
        batch.add(index, item, &app)?;
    }
    let decided = batch.decide()?;
    let created = command::create_all::<Mission>(&app.store, decided).await.map_err(refusal)?;
    let any_new = created.iter().any(|created| !created.appended.duplicate);
    let missions = created
        .into_iter()
        .map(|created| EnqueuedMission {
            mission_id: created.appended.stream_id.to_string(),
            status: created.state.status,
            created: !created.appended.duplicate,
            position: created.appended.first_position,
        })
        .collect();
    let status = if any_new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, ApiJson(BatchEnqueued { missions })))
}

/// A batch as its items are read: the creations of those that pass, and a refusal for each
/// of the others.
struct Batch {
    metadata: EventMetadata,
    now_ms: i64,
    count: usize,
    creates: Vec<Create<MissionCommand>>,
    /// The request index of each entry of `creates`.
    indices: Vec<usize>,
    refusals: Vec<ItemRefusal>,
    /// The index of the first item with each idempotency key.
    keys: HashMap<String, usize>,
}

impl Batch {
    fn new(metadata: EventMetadata, count: usize) -> Batch {
        Batch {
            metadata,
            now_ms: now_ms(),
            count,
            creates: Vec::with_capacity(count),
            indices: Vec::with_capacity(count),
            refusals: Vec::new(),
            keys: HashMap::new(),
        }
    }

    /// Reads item `index` as a single enqueue would, and keeps its creation or its refusal;
    /// fails only for what is not the item's fault (a store failure).
    fn add(
        &mut self,
        index: usize,
        item: serde_json::Value,
        app: &AppState,
    ) -> Result<(), ApiError> {
        let request: EnqueueRequest = match serde_json::from_value(item) {
            Ok(request) => request,
            Err(error) => {
                let message = format!("mission is not valid: {error}");
                let code = ErrorCode::InvalidBody;
                self.refusals.push(ItemRefusal { index, code, field: None, message });
                return Ok(());
            }
        };
        let key = request.idempotency_key.clone();
        let PlannedEnqueue { mission_id, command_id, spec, .. } = match plan_enqueue(request, app) {
            Ok(planned) => planned,
            Err(error) => {
                self.refusals.push(ItemRefusal::from_api(index, error)?);
                return Ok(());
            }
        };
        if let Some(key) = key
            && let Some(first) = self.keys.insert(key, index)
        {
            self.refusals.push(ItemRefusal {
                index,
                code: ErrorCode::DuplicateIdempotencyKey,
                field: Some("idempotency_key".into()),
                message: format!("item {first} of this batch has the same idempotency_key"),
            });
            return Ok(());
        }
        let mut metadata = self.metadata.clone();
        metadata.command_id = Some(command_id);
        let command = MissionCommand::Enqueue { spec, now_ms: self.now_ms };
        self.creates.push(Create { stream_id: mission_id, metadata, command });
        self.indices.push(index);
        Ok(())
    }

    /// Every creation decided by the aggregate, or, if any item was refused (when read or
    /// when decided), `batch_refused` listing them all in request order.
    fn decide(mut self) -> Result<Decided<Mission>, ApiError> {
        let decided = match command::decide_creations::<Mission>(self.creates) {
            Ok(decided) => Some(decided),
            Err(refused) => {
                for (at, error) in refused {
                    self.refusals.push(ItemRefusal::from_api(self.indices[at], refusal(error))?);
                }
                None
            }
        };
        match decided {
            Some(decided) if self.refusals.is_empty() => Ok(decided),
            _ => {
                self.refusals.sort_by_key(|item| item.index);
                Err(ApiError::BatchRefused { items: self.refusals, of: self.count })
            }
        }
    }
}

impl ItemRefusal {
    /// A single enqueue's refusal, as one item's; anything that is not a refusal (a store
    /// failure) stays an error of the whole request.
    fn from_api(index: usize, error: ApiError) -> Result<ItemRefusal, ApiError> {
        match error {
            ApiError::Refused(refusal) => Ok(ItemRefusal {
                index,
                code: refusal.code,
                field: refusal.field,
                message: refusal.message,
            }),
            other => Err(other),
        }
    }
}
