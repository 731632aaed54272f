//! Trigger decisions: does an event with its payload start a workflow?
