//! parse stage (in progress).
