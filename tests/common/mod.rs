#![allow(dead_code)]
pub mod rabbit;
pub mod tls;
