//! cull stage (in progress).
