//! conntrack (in progress)
