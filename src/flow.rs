//! flow stage (in progress).
