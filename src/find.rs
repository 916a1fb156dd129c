//! find stage (in progress).
