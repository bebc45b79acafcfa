//! The one integration-test binary (one link step on 2 cores).

mod attrition;
mod backtest;
mod cards;
mod cli;
mod closed_loop;
mod export;
mod fuzz;
mod history;
mod hostile;
mod hyperswitch;
mod offpolicy;
mod page;
mod postgres;
mod s3;
mod serve;
mod sim;
mod support;
mod tidy;
mod train;
mod zoo;
