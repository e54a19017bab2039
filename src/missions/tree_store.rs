//! The `mission_tree` projector's store: the links between missions in `mission_links`, and
//! the commands a tree needs. A child's end is reported to its parent (`ReportChildren`, one per parent and batch; the
//! last one resumes it); a cancelled mission's children are cancelled.
//!
//! A batch is committed in three steps: the links are written (idempotently), the commands
//! are issued, then the checkpoint moves (with the links written again, for a rebuild that
//! swapped the tables in between). The checkpoint is checked at the first step and again at
//! the last. A crash anywhere repeats the batch, and every command is idempotent
//! (a child the parent no longer waits for changes nothing; cancelling a finished mission is
//! refused), so a repeat changes nothing that was already done.

use std::time::Duration;

use domain::mission::{ChildOutcome, Mission, MissionCommand};
use domain::{EventMetadata, StreamId};
use projections::mission_tree::TreeChange;
use projections::{CommitError, ProjectionStore};
use sqlx::{AssertSqlSafe, PgPool};
use time::OffsetDateTime;

use crate::eventlog::command::{self, CommandError};
use crate::eventlog::projectors::{
    PgWriter, advance_checkpoint, begin_unsynced, lock_checkpoint, move_checkpoint,
};
use crate::eventlog::store::{EventStore, StoreError};

/// How long one batch's commands may take before the batch is given up and repeated.
pub const COMMANDS_TIMEOUT: Duration = Duration::from_secs(30);
/// Who the tree's commands are recorded as.
pub const ACTOR: &str = "mission_tree";

pub struct TreeStore {
    pub pool: PgPool,
    pub store: EventStore,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("mission tree database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("mission tree command: {0}")]
    Command(String),
    #[error("mission tree commands got no answer in {COMMANDS_TIMEOUT:?}")]
    Timeout,
}

impl From<StoreError> for TreeError {
    fn from(error: StoreError) -> TreeError {
        TreeError::Command(error.to_string())
    }
}

/// Runs one command of the tree; a refusal (nothing to do) is not an error.
async fn tree_command(
    store: &EventStore,
    mission_id: &str,
    command: MissionCommand,
) -> Result<(), TreeError> {
    let Ok(stream_id) = StreamId::parse(mission_id) else { return Ok(()) };
    let mut metadata = EventMetadata::new(ACTOR, OffsetDateTime::now_utc());
    metadata.command_id = Some(uuid::Uuid::now_v7());
    match command::execute::<Mission>(store, &stream_id, metadata, || command.clone()).await {
        Ok(_) | Err(CommandError::Rejected(_)) => Ok(()),
        Err(error) => Err(TreeError::Command(error.to_string())),
    }
}

impl TreeStore {
    /// Reports the batch's child ends to their parents (`links`: child, parent) and cancels
    /// the children of the cancelled missions that have some (`cancelled_parents`).
    async fn react(
        &self,
        links: Vec<(String, String)>,
        cancelled_parents: &[String],
        changes: &[TreeChange],
    ) -> Result<(), TreeError> {
        let parents: std::collections::HashMap<String, String> = links.into_iter().collect();
        let now_ms = crate::clock::now_ms();
        // One report per parent for the batch's ends (in order), which is one load and one
        // append however many of its children ended.
        let mut reports: Vec<(String, Vec<ChildOutcome>)> = Vec::new();
        for change in changes {
            if let TreeChange::Ended(outcome) = change
                && let Some(parent) = parents.get(&outcome.mission_id)
            {
                match reports.iter_mut().find(|(known, _)| known == parent) {
                    Some((_, outcomes)) => outcomes.push(outcome.clone()),
                    None => reports.push((parent.clone(), vec![outcome.clone()])),
                }
            }
        }
        for (parent, outcomes) in reports {
            let report = MissionCommand::ReportChildren { outcomes, now_ms };
            tree_command(&self.store, &parent, report).await?;
        }
        for mission_id in cancelled_parents {
            let children: Vec<String> = sqlx::query_scalar(
                "SELECT child_id FROM mission_links WHERE parent_id = $1 ORDER BY position",
            )
            .bind(mission_id)
            .fetch_all(&self.pool)
            .await?;
            for child in children {
                let cancel = MissionCommand::Cancel {
                    reason: format!("its parent {mission_id} was cancelled"),
                    by: ACTOR.to_owned(),
                    now_ms,
                };
                tree_command(&self.store, &child, cancel).await?;
            }
        }
        Ok(())
    }

    /// A transaction holding the checkpoint's lock, if the checkpoint is still at `after`.
    async fn begin_at(
        &self,
        after: u64,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, CommitError<TreeError>> {
        let mut tx = begin_unsynced(&self.pool).await.map_err(store_error)?;
        let name = projections::mission_tree::NAME;
        let moved = advance_checkpoint(&mut tx, name, after, after).await.map_err(store_error)?;
        if let Some(actual) = moved {
            return Err(CommitError::Moved { actual });
        }
        Ok(tx)
    }
}

fn store_error(error: sqlx::Error) -> CommitError<TreeError> {
    CommitError::Store(TreeError::Database(error))
}

/// Records the batch's new links in `mission_links<suffix>` (a link already there stays as it
/// was).
async fn write_links(
    tx: &mut sqlx::PgConnection,
    suffix: &str,
    changes: &[TreeChange],
) -> Result<(), sqlx::Error> {
    let (mut children, mut parents, mut positions) = (Vec::new(), Vec::new(), Vec::new());
    for change in changes {
        if let TreeChange::Link { child, parent, position } = change {
            children.push(child.clone());
            parents.push(parent.clone());
            positions.push(*position as i64);
        }
    }
    if children.is_empty() {
        return Ok(());
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO mission_links{suffix} (child_id, parent_id, position)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
         ON CONFLICT (child_id) DO NOTHING"
    )))
    .bind(&children)
    .bind(&parents)
    .bind(&positions)
    .execute(tx)
    .await?;
    Ok(())
}

/// The links (child, parent) of the batch's missions that ended and have a parent.
async fn links_of_ended(
    tx: &mut sqlx::PgConnection,
    changes: &[TreeChange],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let ended: Vec<String> = changes
        .iter()
        .filter_map(|change| match change {
            TreeChange::Ended(outcome) => Some(outcome.mission_id.clone()),
            _ => None,
        })
        .collect();
    if ended.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as("SELECT child_id, parent_id FROM mission_links WHERE child_id = ANY($1)")
        .bind(&ended)
        .fetch_all(tx)
        .await
}

/// The batch's cancelled missions that have children.
async fn parents_among_cancelled(
    tx: &mut sqlx::PgConnection,
    changes: &[TreeChange],
) -> Result<Vec<String>, sqlx::Error> {
    let cancelled: Vec<String> = changes
        .iter()
        .filter_map(|change| match change {
            TreeChange::Cancelled { mission_id } => Some(mission_id.clone()),
            _ => None,
        })
        .collect();
    if cancelled.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT DISTINCT parent_id FROM mission_links WHERE parent_id = ANY($1)")
        .bind(&cancelled)
        .fetch_all(tx)
        .await
}

/// The tree's links alone, as a [`PgWriter`]: what `brain events verify` builds from the log
/// to compare with the live links, and what a rebuild builds beside them. It issues no
/// command (a build from the log must not report or cancel again), so a rebuild swaps it in
/// at the live position, never past it ([`crate::eventlog::projectors::rebuild_at_live`]):
/// the live store then acts on every event after it, as before.
#[derive(Debug, Clone, Copy)]
pub struct TreeLinksWriter;

impl PgWriter<TreeChange> for TreeLinksWriter {
    fn tables(&self) -> &'static [&'static str] {
        &["mission_links"]
    }

    async fn write(
        &self,
        connection: &mut sqlx::PgConnection,
        suffix: &str,
        changes: Vec<TreeChange>,
    ) -> Result<(), sqlx::Error> {
        write_links(connection, suffix, &changes).await
    }
}

impl ProjectionStore<TreeChange> for TreeStore {
    type Error = TreeError;

    async fn checkpoint(&mut self) -> Result<u64, TreeError> {
        Ok(crate::eventlog::projectors::checkpoint(&self.pool, projections::mission_tree::NAME)
            .await?)
    }

    async fn commit(
        &mut self,
        after: u64,
        up_to: u64,
        changes: Vec<TreeChange>,
    ) -> Result<(), CommitError<TreeError>> {
        let name = projections::mission_tree::NAME;
        // 1. The links, the parents of the missions that ended, and the cancelled missions
        // that have children.
        let mut tx = self.begin_at(after).await?;
        write_links(&mut tx, "", &changes).await.map_err(store_error)?;
        let links = links_of_ended(&mut tx, &changes).await.map_err(store_error)?;
        let cancelled_parents =
            parents_among_cancelled(&mut tx, &changes).await.map_err(store_error)?;
        // Most batches need no command (missions without a parent or children): the links
        // and the checkpoint then go in together.
        if links.is_empty() && cancelled_parents.is_empty() {
            move_checkpoint(&mut tx, name, up_to).await.map_err(store_error)?;
            return tx.commit().await.map_err(store_error);
        }
        tx.commit().await.map_err(store_error)?;
        // 2. The commands.
        let react = self.react(links, &cancelled_parents, &changes);
        match tokio::time::timeout(COMMANDS_TIMEOUT, react).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(CommitError::Store(error)),
            Err(_) => return Err(CommitError::Store(TreeError::Timeout)),
        }
        // 3. The checkpoint, with the links again: a rebuild may have swapped the tables in
        // since the first step (at this batch's `after`, which it may not pass), and the
        // links must be in the tables that go on.
        let mut tx = self.begin_at(after).await?;
        write_links(&mut tx, "", &changes).await.map_err(store_error)?;
        move_checkpoint(&mut tx, name, up_to).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    async fn reset(&mut self) -> Result<(), TreeError> {
        let mut tx = self.pool.begin().await?;
        lock_checkpoint(&mut tx, projections::mission_tree::NAME).await?;
        sqlx::query("TRUNCATE mission_links").execute(&mut *tx).await?;
        move_checkpoint(&mut tx, projections::mission_tree::NAME, 0).await?;
        Ok(tx.commit().await?)
    }
}
