//! Act: the side effects of a reconcile, one small module each. Every step reads first and
//! writes only what is not already so, and returns a typed outcome; none of them changes status.

pub mod build;
pub mod registry;
pub mod targets;
