#![allow(dead_code)]
pub mod cluster;
pub mod docs;
pub mod flows;
pub mod rabbit;
pub mod run;
pub mod streams;
pub mod tls;
pub mod trees;
