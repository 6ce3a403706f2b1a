//! Nomad targets: pin a task's image with check-and-set.
