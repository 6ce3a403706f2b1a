//! What a build reads: the commit's tree, read from the controller.

pub mod git;
