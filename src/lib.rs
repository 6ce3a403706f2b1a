//! monoship library.
