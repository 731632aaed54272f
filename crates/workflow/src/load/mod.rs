//! Loading a workflow file: YAML with positions, then the typed model and its validation.
