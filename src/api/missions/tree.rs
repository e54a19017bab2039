//! A mission's tree in its view: its sub-missions and theirs, from the `mission_tree` and
//! `mission_list` read models.

use std::collections::HashMap;

use domain::mission::{DEPTH_MAX, MissionStatus};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

/// Most sub-missions a view lists, all levels counted.
pub const TREE_NODES_MAX: i64 = 1_000;

/// A fork, or the run a fork was made from: its first `steps` steps of `attempt` replayed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ForkView {
    pub mission_id: String,
    pub attempt: u32,
    pub steps: u32,
}

/// A sub-mission in a mission's tree.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TreeNode {
    pub mission_id: String,
    pub name: Option<String>,
    pub agent: Option<String>,
    /// `None` until the mission list has seen it.
    pub status: Option<MissionStatus>,
    #[schema(no_recursion)]
    pub children: Vec<TreeNode>,
}

/// A link with what the mission list knows of the child: child, parent, name, agent, status.
type TreeRow = (String, String, Option<String>, Option<String>, Option<String>);

/// The sub-missions of `mission_id` down to the deepest level missions may nest, at most
/// [`TREE_NODES_MAX`] of them.
pub async fn tree_of(pool: &PgPool, mission_id: &str) -> Result<Vec<TreeNode>, sqlx::Error> {
    let rows: Vec<TreeRow> = sqlx::query_as(
        "WITH RECURSIVE tree AS (
                 SELECT child_id, parent_id, position, 1 AS depth
                   FROM mission_links WHERE parent_id = $1
                 UNION ALL
                 SELECT l.child_id, l.parent_id, l.position, t.depth + 1
                   FROM mission_links l JOIN tree t ON l.parent_id = t.child_id
                  WHERE t.depth < $2
             )
             SELECT tree.child_id, tree.parent_id, m.name, m.agent, m.status
               FROM tree LEFT JOIN mission_list m ON m.mission_id = tree.child_id
              ORDER BY tree.depth, tree.position, tree.child_id
              LIMIT $3",
    )
    .bind(mission_id)
    .bind(DEPTH_MAX as i32)
    .bind(TREE_NODES_MAX)
    .fetch_all(pool)
    .await?;
    let mut by_parent: HashMap<String, Vec<TreeNode>> = HashMap::new();
    for (child, parent, name, agent, status) in rows {
        let status =
            status.and_then(|status| serde_json::from_value(serde_json::json!(status)).ok());
        by_parent.entry(parent).or_default().push(TreeNode {
            mission_id: child,
            name,
            agent,
            status,
            children: vec![],
        });
    }
    // Deepest first, each node takes its children along.
    fn attach(node: &mut TreeNode, by_parent: &mut HashMap<String, Vec<TreeNode>>) {
        if let Some(mut children) = by_parent.remove(&node.mission_id) {
            for child in &mut children {
                attach(child, by_parent);
            }
            node.children = children;
        }
    }
    let mut roots = by_parent.remove(mission_id).unwrap_or_default();
    for root in &mut roots {
        attach(root, &mut by_parent);
    }
    Ok(roots)
}
