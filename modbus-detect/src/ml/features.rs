//! What the models see: the features of one window of a master-slave
//! pair's traffic, in vector order. How a window's traffic becomes these
//! numbers is the detector's business (`detect::ml::window`); the models
//! only know that there are [`DIMS`] of them and what they are called.

/// Number of features.
pub const DIMS: usize = 10;

/// Feature names, in vector order (the report and the baseline file use them).
pub const FEATURE_NAMES: [&str; DIMS] = [
    "log_requests",
    "log_mean_interval_ms",
    "interval_cv",
    "write_fraction",
    "exception_fraction",
    "distinct_function_codes",
    "log_distinct_addresses",
    "diagnostic_fraction",
    "log_mean_quantity",
    "log_distinct_units",
];

/// One window's feature vector.
pub type Features = [f64; DIMS];
