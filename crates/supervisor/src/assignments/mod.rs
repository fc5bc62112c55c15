//! The node's side of placement: the coordinator assigns apps to nodes, and each node follows
//! its own assignments and makes them true here. [`artifact`] gets an assigned app's artifact
//! from the appsrv into the node's cache, verified; [`reconcile`] decides what to start and stop;
//! [`follow`] is the loop that watches the coordinator and carries the decisions out.

pub mod artifact;
pub mod follow;
pub mod reconcile;

pub use artifact::ArtifactCache;
pub use follow::Follower;
