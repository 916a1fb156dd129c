//! publish stage (in progress).
