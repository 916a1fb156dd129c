#![allow(dead_code)]
pub mod flows;
pub mod rabbit;
pub mod run;
pub mod tls;
