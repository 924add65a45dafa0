//! What every browser scenario stands on: [`harness`] (server, chromedriver,
//! session, artifacts) and [`webdriver`] (the WebDriver client).

pub(crate) mod harness;
pub(crate) mod webdriver;

pub(crate) use harness::*;
pub(crate) use webdriver::*;
