//! Job planning: matrix expansion and the `needs` graph.
