//! chunk stage (in progress).
