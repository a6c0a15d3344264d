//! The query language: selectors that pick series by profile type and labels.
//!
//! The read side (issue 3) builds on this: the series index of each block is matched against
//! a [`Selector`] without reading profile data.

mod selector;

pub use selector::{MatchOp, Matcher, Selector, SelectorError};
