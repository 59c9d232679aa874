//! Topic index benchmark (being written).

fn main() {}
