//! The inputs of a build: git trees read by the controller ([`git`]), the input key computed
//! from them ([`key`]), and the background fetches that feed every ServiceBuild of a commit
//! from one fetch ([`fetcher`]).

pub mod fetcher;
pub mod git;
pub mod key;
